package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"periph.io/x/conn/v3/driver/driverreg"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2creg"

	"github.com/reefer/tracker/drivers"
	"github.com/reefer/tracker/firmware/config"
	"github.com/reefer/tracker/firmware/sensorcheck"
	"github.com/reefer/tracker/firmware/sensors"
)

func init() {
	commands["sensors"] = command{"read each sensor once (or --watch) for a technician", runSensors}
}

// sensorFlags are `tracker sensors`' own settings: each overrides the
// config key it names, so a technician checks what the daemon would open.
type sensorFlags struct {
	envMode, gpsMode string
	bus              string
	addr             string
	port             string
	baud             int
	seed             int64
}

func (s *sensorFlags) register(fs *flag.FlagSet) {
	d := config.Default().Sensors
	fs.StringVar(&s.envMode, "env-mode", string(d.Env.Mode), "BME280 driver: auto, hardware or simulated (overrides sensors.env.mode)")
	fs.StringVar(&s.gpsMode, "gps-mode", string(d.GPS.Mode), "GPS driver: auto, hardware or simulated (overrides sensors.gps.mode)")
	fs.StringVar(&s.bus, "env-bus", d.Env.Bus, `I2C bus ("1", "I2C1" or "/dev/i2c-1"; empty: the first) (overrides sensors.env.bus)`)
	fs.StringVar(&s.addr, "env-address", "auto", "BME280 address: 0x76, 0x77 or auto (probe both) (overrides sensors.env.address)")
	fs.StringVar(&s.port, "gps-port", d.GPS.Port, "GPS serial port (overrides sensors.gps.port)")
	fs.IntVar(&s.baud, "gps-baud", d.GPS.Baud, "GPS baud rate (overrides sensors.gps.baud)")
	fs.Int64Var(&s.seed, "seed", 1, "simulator seed")
}

// settings are the sensors of the config at path (the defaults when there
// is none) with the flags that were set applied. A broken config is an
// error naming the key, as for every other command; a bad flag a usage
// error.
func (s *sensorFlags) settings(fs *flag.FlagSet, path string) (config.Sensors, error) {
	sc := config.Default().Sensors
	c, err := config.Read(path)
	switch {
	case errors.Is(err, config.ErrNoConfig):
	case err != nil:
		return sc, configError{err}
	default:
		sc = c.Sensors
	}
	var errs []error
	fs.Visit(func(f *flag.Flag) {
		var err error
		switch f.Name {
		case "env-mode":
			sc.Env.Mode, err = drivers.ParseMode(s.envMode)
		case "gps-mode":
			sc.GPS.Mode, err = drivers.ParseMode(s.gpsMode)
		case "env-bus":
			sc.Env.Bus = s.bus
		case "env-address":
			var a uint16
			a, err = parseAddr(s.addr)
			sc.Env.Address = int(a)
		case "gps-port":
			sc.GPS.Port = s.port
		case "gps-baud":
			sc.GPS.Baud = s.baud
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s: %w", f.Name, err))
		}
	})
	if err := errors.Join(errs...); err != nil {
		return sc, usageError{err.Error()}
	}
	return sc, nil
}

func parseAddr(s string) (uint16, error) {
	if s == "auto" || s == "" {
		return 0, nil
	}
	// Decimal (118) or hex (0x76), like the config's --env-address.
	v, err := strconv.ParseUint(s, 0, 16)
	if v == 0 && err == nil {
		return 0, nil
	}
	if err != nil || (v != 0x76 && v != 0x77) {
		return 0, fmt.Errorf("%q: want 0x76, 0x77 or auto", s)
	}
	return uint16(v), nil
}

// initHost initialises periph's host drivers (the I2C buses; see host.go
// for which) unless the env sensor is simulated, so a simulated run works
// on any machine; without them "auto" falls back to the simulator and says
// so.
func initHost(env drivers.Mode, log *slog.Logger) {
	if env == drivers.SimulatedOnly {
		return
	}
	if _, err := driverreg.Init(); err != nil {
		log.Warn("periph host init failed", "err", err)
	}
}

// openI2C opens a bus from periph's registry (after initHost).
func openI2C(name string) (i2c.BusCloser, error) { return i2creg.Open(name) }

func runSensors(ctx context.Context, io stdio, args []string) error {
	fs := newFlags("sensors", aboutSensors)
	var sf sensorFlags
	sf.register(fs)
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	watch := fs.Duration("watch", 0, "read again at this interval (e.g. 5s) until interrupted")
	simulated := fs.Bool("simulated", false, "use the simulators for both sensors")
	hardware := fs.Bool("hardware", false, "use real hardware only; exit non-zero naming what is missing")
	fixWait := fs.Duration("gps-wait", 5*time.Second, "how long to wait for NMEA and a GPS fix")
	logLevel := fs.String("log-level", "warn", "log level: debug, info, warn, error")
	cfgPath := fs.String("config", config.DefaultPath, "take the sensor settings from this config `file` when it exists (flags override it)")
	if err := parseFlags(fs, args, io); err != nil {
		return err
	}
	sc, err := sf.settings(fs, *cfgPath)
	if err != nil {
		return err
	}
	if *simulated && *hardware {
		return usageError{"--simulated and --hardware exclude each other"}
	}
	if *simulated {
		sc.Env.Mode, sc.GPS.Mode = drivers.SimulatedOnly, drivers.SimulatedOnly
	}
	if *hardware {
		sc.Env.Mode, sc.GPS.Mode = drivers.HardwareOnly, drivers.HardwareOnly
	}
	log, err := newLogger(io.err, *logLevel)
	if err != nil {
		return usageError{err.Error()}
	}

	initHost(sc.Env.Mode, log)
	set := sensors.Open(ctx, sc, sensors.Options{OpenI2C: openI2C, Seed: sf.seed}, log)
	defer set.Close()
	opts := sensorcheck.Options{FixWait: *fixWait}
	for {
		r := set.Read(ctx, opts)
		if *asJSON {
			b, _ := json.MarshalIndent(r, "", "  ")
			fmt.Fprintf(io.out, "%s\n", b)
		} else {
			r.WriteTable(io.out)
		}
		if *watch <= 0 {
			if p := r.Problems(); len(p) > 0 {
				return fmt.Errorf("%d sensor problem(s):\n  %s", len(p), strings.Join(p, "\n  "))
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(*watch):
		}
		if !*asJSON {
			fmt.Fprintln(io.out)
		}
	}
}

const aboutSensors = `Reads each sensor once (or every --watch interval) and prints the reading and
where it came from (hardware or simulated). The sensor settings come from the
config file when it exists; flags override them. With --hardware a missing
sensor is an error naming what is missing.`
