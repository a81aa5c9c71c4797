package bme280

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/bmxx80"

	"github.com/reefer/tracker/drivers"
)

// The two addresses a BME280/BMP280 can answer on, chosen by its SDO pin.
// Most breakout boards pull SDO low (0x76); Adafruit's pull it high (0x77).
const (
	AddrPrimary   uint16 = 0x76
	AddrSecondary uint16 = 0x77
)

// Chip ids read from register 0xD0 (datasheet section 5.4.1).
const (
	idBME280 = 0x60
	idBMP280 = 0x58
)

var (
	// ErrNotFound means no device answered at the address(es) tried.
	ErrNotFound = errors.New("no device answered")
	// ErrWrongChip means a device answered but its chip id is neither a
	// BME280 (0x60) nor a BMP280 (0x58). The message carries the id.
	ErrWrongChip = errors.New("wrong chip")
	// ErrImplausible means a reading fell outside what the sensor can
	// measure; it is dropped rather than published as real data.
	ErrImplausible = errors.New("implausible reading")
	// ErrClosed is returned by Sense after Close.
	ErrClosed = errors.New("closed")
)

// Bounds a real reading must lie in: the datasheet's operating range
// (-40…85 °C, 300…1100 hPa) with a margin. Values outside come from a
// corrupted transfer or calibration, not from the air in a container.
const (
	minC, maxC     = -45.0, 90.0
	minHPa, maxHPa = 250.0, 1150.0
)

// opts follows the datasheet's "weather monitoring" recommendation (section
// 3.5.1): forced mode, 1x oversampling, no IIR filter. A reefer is sampled
// every few seconds at most, so more oversampling only costs power and a
// longer blocking Sense.
var opts = bmxx80.Opts{
	Temperature: bmxx80.O1x,
	Pressure:    bmxx80.O1x,
	Humidity:    bmxx80.O1x,
}

// Dev is an opened BME280 or BMP280. It does not own the bus: Close stops
// the device, and the caller closes the bus.
type Dev struct {
	bus  i2c.Bus
	addr uint16
	chip string // "BME280" or "BMP280"
	log  *slog.Logger
	now  func() time.Time

	mu     sync.Mutex
	dev    *bmxx80.Dev
	guard  *guardBus
	closed bool
}

var _ drivers.EnvSensor = (*Dev)(nil)

// Open finds and initialises a BME280 or BMP280 on bus. addr 0 probes
// AddrPrimary then AddrSecondary; any other value must be one of them.
//
// Errors name the bus and address. errors.Is reports ErrNotFound when nothing
// answered and ErrWrongChip when something else answered (a device with a
// wrong chip id wins over silence at the other address).
func Open(bus i2c.Bus, addr uint16, log *slog.Logger) (*Dev, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	addrs := []uint16{addr}
	switch addr {
	case 0:
		addrs = []uint16{AddrPrimary, AddrSecondary}
	case AddrPrimary, AddrSecondary:
	default:
		return nil, fmt.Errorf("bme280 on %s at %#02x: address not supported (want %#02x or %#02x)",
			bus, addr, AddrPrimary, AddrSecondary)
	}

	var wrong error
	var silent []string
	for _, a := range addrs {
		id, err := readChipID(bus, a)
		if err != nil {
			// A read that fails at this stage is what an absent device looks
			// like on Linux (ENXIO/EREMOTEIO from the adapter's NACK).
			log.Debug("bme280 probe: no answer", "bus", bus.String(), "addr", hexAddr(a), "err", err)
			silent = append(silent, fmt.Sprintf("%s: %v", hexAddr(a), err))
			continue
		}
		chip, ok := chipName(id)
		if !ok {
			log.Debug("bme280 probe: wrong chip", "bus", bus.String(), "addr", hexAddr(a), "chip_id", fmt.Sprintf("%#02x", id))
			if wrong == nil {
				wrong = fmt.Errorf("bme280 on %s at %s: %w: id %#02x%s, want %#02x (BME280) or %#02x (BMP280)",
					bus, hexAddr(a), ErrWrongChip, id, knownChip(id), idBME280, idBMP280)
			}
			continue
		}
		return open(bus, a, chip, log)
	}
	if wrong != nil {
		return nil, wrong
	}
	where := hexAddr(addrs[0])
	if len(addrs) > 1 {
		where = hexAddr(addrs[0]) + " or " + hexAddr(addrs[1])
	}
	return nil, fmt.Errorf("bme280 on %s at %s: %w (%s)", bus, where, ErrNotFound, strings.Join(silent, "; "))
}

func open(bus i2c.Bus, addr uint16, chip string, log *slog.Logger) (*Dev, error) {
	o := opts
	guard := &guardBus{Bus: bus}
	dev, err := bmxx80.NewI2C(guard, addr, &o)
	if err != nil {
		return nil, fmt.Errorf("bme280 on %s at %s: init: %w", bus, hexAddr(addr), guard.cause(err))
	}
	// bmxx80 reads the chip id again and names the variant in String()
	// ("BME280{...}"). Disagreement means the bus returned different bytes
	// for the same register: do not trust it.
	if got := dev.String(); !strings.HasPrefix(got, chip+"{") {
		return nil, fmt.Errorf("bme280 on %s at %s: chip id changed between reads: %s then %s",
			bus, hexAddr(addr), chip, got)
	}
	d := &Dev{bus: bus, addr: addr, chip: chip, log: log, now: time.Now, dev: dev, guard: guard}
	log.Info("env sensor found", "bus", bus.String(), "addr", hexAddr(addr), "chip", chip)
	if chip == "BMP280" {
		log.Warn("env sensor is a BMP280, which has no humidity sensor; humidity will be reported absent",
			"bus", bus.String(), "addr", hexAddr(addr))
	}
	return d, nil
}

// Sense takes one forced-mode measurement. It blocks for the conversion
// time (about 8 ms); ctx is checked before starting and between bus
// transfers. A chip that never finishes converting yields ErrStuck.
func (d *Dev) Sense(ctx context.Context) (drivers.Env, error) {
	if err := ctx.Err(); err != nil {
		return drivers.Env{}, d.wrap(err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return drivers.Env{}, d.wrap(ErrClosed)
	}
	var pe physic.Env
	d.guard.takeErr() // a stale error must not be blamed on this Sense
	d.guard.setContext(ctx)
	err := d.dev.Sense(&pe)
	d.guard.setContext(nil)
	if err != nil {
		return drivers.Env{}, d.wrap(fmt.Errorf("sense: %w", d.guard.cause(err)))
	}
	e := drivers.Env{
		Time:         d.now(),
		TemperatureC: pe.Temperature.Celsius(),
		PressureHPa:  float64(pe.Pressure) / float64(physic.Pascal) / 100,
		Source:       drivers.Hardware,
		Chip:         d.chip,
	}
	if d.chip == "BME280" {
		h := float64(pe.Humidity) / float64(physic.PercentRH)
		e.HumidityRH = &h
	}
	if e.TemperatureC < minC || e.TemperatureC > maxC || e.PressureHPa < minHPa || e.PressureHPa > maxHPa {
		return drivers.Env{}, d.wrap(fmt.Errorf("%w: %.2f °C, %.2f hPa", ErrImplausible, e.TemperatureC, e.PressureHPa))
	}
	return e, nil
}

// Close stops the device. It does not close the bus. Closing twice is a no-op.
func (d *Dev) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	// Forced mode leaves the chip asleep after every measurement; Halt only
	// matters if continuous sensing was ever started, but is cheap.
	if err := d.dev.Halt(); err != nil {
		return d.wrap(fmt.Errorf("halt: %w", err))
	}
	return nil
}

// Chip is "BME280" or "BMP280".
func (d *Dev) Chip() string { return d.chip }

// Addr is the I²C address the device answered on.
func (d *Dev) Addr() uint16 { return d.addr }

func (d *Dev) String() string {
	return fmt.Sprintf("%s on %s at %s", d.chip, d.bus, hexAddr(d.addr))
}

func (d *Dev) wrap(err error) error {
	return fmt.Errorf("bme280 on %s at %s: %w", d.bus, hexAddr(d.addr), err)
}

// readChipID reads register 0xD0 (datasheet section 5.4.1).
func readChipID(bus i2c.Bus, addr uint16) (byte, error) {
	var id [1]byte
	if err := bus.Tx(addr, []byte{0xD0}, id[:]); err != nil {
		return 0, err
	}
	return id[0], nil
}

func chipName(id byte) (string, bool) {
	switch id {
	case idBME280:
		return "BME280", true
	case idBMP280:
		return "BMP280", true
	}
	return "", false
}

// knownChip names chips that are easily confused with a BME280, to make the
// error actionable.
func knownChip(id byte) string {
	switch id {
	case 0x55:
		return " (BMP180)"
	case 0x56, 0x57:
		return " (BMP280 engineering sample)"
	case 0x61:
		return " (BME680)"
	case 0x00, 0xFF:
		return " (bus reads all zeros or ones: wiring or pull-ups?)"
	}
	return ""
}

func hexAddr(a uint16) string { return fmt.Sprintf("%#02x", a) }
