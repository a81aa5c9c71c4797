package choose

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2creg"

	"github.com/reefer/tracker/drivers"
	"github.com/reefer/tracker/drivers/bme280"
	"github.com/reefer/tracker/drivers/simulated"
)

// ErrNoI2CBus means the configured I²C bus could not be opened. A bus that
// opens but has no sensor on it wraps bme280.ErrNotFound instead.
var ErrNoI2CBus = errors.New("no I2C bus")

// EnvConfig says how to open the environmental sensor.
type EnvConfig struct {
	// Mode is auto (the default when empty), hardware or simulated.
	Mode drivers.Mode
	// Bus names the I²C bus as i2creg knows it: "1", "I2C1", "/dev/i2c-1";
	// empty means the first bus.
	Bus string
	// Addr is the sensor's address; 0 probes 0x76 then 0x77.
	Addr uint16
	// Open opens a bus by name. main passes i2creg.Open after initialising periph's host drivers;
	// nil means i2creg.Open.
	Open func(name string) (i2c.BusCloser, error)
	// Seed and Now drive the simulator. Now nil means time.Now.
	Seed int64
	Now  func() time.Time
}

// Env returns the environmental sensor selected by cfg.Mode:
//
//   - hardware: a BME280/BMP280 on the bus, or an error naming what is
//     missing (ErrNoI2CBus, or bme280.ErrNotFound / bme280.ErrWrongChip);
//   - simulated: the reefer simulator, logged at INFO;
//   - auto: hardware when the bus opens and a chip answers, else the
//     simulator with a WARN log giving the reason.
//
// Closing the returned sensor also closes the bus.
func Env(ctx context.Context, cfg EnvConfig, log *slog.Logger) (drivers.EnvSensor, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("env sensor: %w", err)
	}
	mode := cfg.Mode
	if mode == "" {
		mode = drivers.Auto
	}
	if _, err := drivers.ParseMode(string(mode)); err != nil {
		return nil, fmt.Errorf("env sensor: %w", err)
	}

	if mode == drivers.SimulatedOnly {
		log.Info("env sensor simulated", "mode", string(mode), "chip", simulated.ReeferChip, "seed", cfg.Seed)
		return simulated.NewReefer(cfg.Seed, cfg.Now), nil
	}

	s, err := openHardware(cfg, log)
	if err == nil {
		return s, nil
	}
	if mode == drivers.HardwareOnly {
		return nil, fmt.Errorf("env sensor: %w", err)
	}
	log.Warn("env sensor hardware unavailable, using simulator", "mode", string(mode),
		"reason", err.Error(), "chip", simulated.ReeferChip, "seed", cfg.Seed)
	return simulated.NewReefer(cfg.Seed, cfg.Now), nil
}

func openHardware(cfg EnvConfig, log *slog.Logger) (drivers.EnvSensor, error) {
	open := cfg.Open
	if open == nil {
		open = i2creg.Open
	}
	bus, err := open(cfg.Bus)
	if err != nil {
		return nil, busError(cfg.Bus, err)
	}
	dev, err := bme280.Open(bus, cfg.Addr, log)
	if err != nil {
		if cerr := bus.Close(); cerr != nil {
			log.Warn("closing I2C bus", "bus", bus.String(), "err", cerr)
		}
		return nil, err
	}
	return &busSensor{Dev: dev, bus: bus}, nil
}

// busError says why bus name did not open. periph's registry answers "no
// bus found; did you forget to call Init()?" on a board without any I2C
// bus and "can't open unknown bus" for a bus it does not have: advice for
// its programmer, while a technician needs to hear that I2C is not enabled
// (or the bus name is wrong) and how to fix it.
func busError(name string, err error) error {
	if !strings.HasPrefix(err.Error(), "i2creg:") {
		return fmt.Errorf("%w %s: %w", ErrNoI2CBus, busLabel(name), err)
	}
	dev := "/dev/i2c-*"
	if n := strings.TrimPrefix(strings.TrimPrefix(name, "/dev/i2c-"), "I2C"); n != "" {
		dev = "/dev/i2c-" + n
	}
	return fmt.Errorf("%w %s: %s does not exist: enable I2C (raspi-config nonint do_i2c 0) and reboot, or set sensors.env.bus",
		ErrNoI2CBus, busLabel(name), dev)
}

func busLabel(name string) string {
	if name == "" {
		return "(first available)"
	}
	return strconv.Quote(name)
}

// busSensor is a hardware sensor that owns its bus.
type busSensor struct {
	*bme280.Dev
	bus i2c.BusCloser

	once     sync.Once
	closeErr error
}

// Close stops the device, then closes the bus, once.
func (s *busSensor) Close() error {
	s.once.Do(func() {
		derr := s.Dev.Close()
		if err := s.bus.Close(); err != nil {
			derr = errors.Join(derr, fmt.Errorf("close I2C bus %s: %w", s.bus, err))
		}
		s.closeErr = derr
	})
	return s.closeErr
}

// EnvSource says where the readings of a sensor Env returned come from:
// the simulator, or the hardware.
func EnvSource(s drivers.EnvSensor) drivers.Source {
	if _, ok := s.(*simulated.Reefer); ok {
		return drivers.Simulated
	}
	return drivers.Hardware
}
