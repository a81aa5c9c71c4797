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

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2creg"
	"periph.io/x/host/v3"

	"github.com/reefer/tracker/drivers"
	"github.com/reefer/tracker/drivers/choose"
	"github.com/reefer/tracker/drivers/gps"
	"github.com/reefer/tracker/firmware/config"
	"github.com/reefer/tracker/firmware/sensorcheck"
)

func init() {
	commands["sensors"] = command{"read each sensor once (or --watch) for a technician", runSensors}
}

// sensorFlags are the sensor settings shared by sensors, run and doctor.
type sensorFlags struct {
	envMode, gpsMode string
	bus              string
	addr             string
	port             string
	baud             int
	seed             int64
}

func (s *sensorFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&s.envMode, "env-mode", "auto", "BME280 driver: auto, hardware or simulated")
	fs.StringVar(&s.gpsMode, "gps-mode", "auto", "GPS driver: auto, hardware or simulated")
	fs.StringVar(&s.bus, "env-bus", "1", `I2C bus ("1", "I2C1" or "/dev/i2c-1")`)
	fs.StringVar(&s.addr, "env-address", "auto", "BME280 address: 0x76, 0x77 or auto (probe both)")
	fs.StringVar(&s.port, "gps-port", choose.DefaultGPSPort, "GPS serial port")
	fs.IntVar(&s.baud, "gps-baud", gps.DefaultBaud, "GPS baud rate")
	fs.Int64Var(&s.seed, "seed", 1, "simulator seed")
}

// fromConfig fills the sensor settings the command line did not set from
// the tracker's config, so a technician checks what the daemon would open.
// A missing config is fine (the flags' defaults apply); a broken one is an
// error naming the key, as for every other command.
func (s *sensorFlags) fromConfig(fs *flag.FlagSet, path string) error {
	c, err := config.Read(path)
	if errors.Is(err, config.ErrNoConfig) {
		return nil
	}
	if err != nil {
		return configError{err}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	env, gps := c.Sensors.Env, c.Sensors.GPS
	for name, apply := range map[string]func(){
		"env-mode":    func() { s.envMode = string(env.Mode) },
		"env-bus":     func() { s.bus = env.Bus },
		"env-address": func() { s.addr = strconv.Itoa(env.Address) },
		"gps-mode":    func() { s.gpsMode = string(gps.Mode) },
		"gps-port":    func() { s.port = gps.Port },
		"gps-baud":    func() { s.baud = gps.Baud },
	} {
		if !set[name] {
			apply()
		}
	}
	return nil
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
		return 0, fmt.Errorf("--env-address %q: want 0x76, 0x77 or auto", s)
	}
	return uint16(v), nil
}

// openSensors opens both sensors by mode. Either may fail; the errors say
// what is missing. host.Init runs only when hardware may be used, so a
// simulated run works on any machine.
func (s *sensorFlags) open(ctx context.Context, log *slog.Logger) (env drivers.EnvSensor, envErr error, rx *gps.Receiver, gpsErr error, err error) {
	envMode, err := drivers.ParseMode(s.envMode)
	if err != nil {
		return nil, nil, nil, nil, usageError{"--env-mode: " + err.Error()}
	}
	gpsMode, err := drivers.ParseMode(s.gpsMode)
	if err != nil {
		return nil, nil, nil, nil, usageError{"--gps-mode: " + err.Error()}
	}
	addr, err := parseAddr(s.addr)
	if err != nil {
		return nil, nil, nil, nil, usageError{err.Error()}
	}
	if envMode != drivers.SimulatedOnly {
		if _, err := host.Init(); err != nil {
			log.Warn("periph host init failed", "err", err)
		}
	}
	env, envErr = choose.Env(ctx, choose.EnvConfig{
		Mode: envMode, Bus: s.bus, Addr: addr, Seed: s.seed,
		Open: func(name string) (i2c.BusCloser, error) { return i2creg.Open(name) },
	}, log)
	rx, gpsErr = choose.GPS(ctx, choose.GPSConfig{Mode: gpsMode, Port: s.port, Baud: s.baud, Seed: s.seed}, log)
	return env, envErr, rx, gpsErr, nil
}

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
	if err := sf.fromConfig(fs, *cfgPath); err != nil {
		return err
	}
	if *simulated && *hardware {
		return usageError{"--simulated and --hardware exclude each other"}
	}
	if *simulated {
		sf.envMode, sf.gpsMode = string(drivers.SimulatedOnly), string(drivers.SimulatedOnly)
	}
	if *hardware {
		sf.envMode, sf.gpsMode = string(drivers.HardwareOnly), string(drivers.HardwareOnly)
	}
	log, err := newLogger(io.err, *logLevel)
	if err != nil {
		return usageError{err.Error()}
	}

	env, envErr, rx, gpsErr, err := sf.open(ctx, log)
	if err != nil {
		return err
	}
	if env != nil {
		defer env.Close()
	}
	if rx != nil {
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); rx.Run(rctx) }()
		defer func() { cancel(); <-done }()
	}
	var rxi sensorcheck.Receiver
	if rx != nil {
		rxi = rx
	}
	opts := sensorcheck.Options{FixWait: *fixWait, Port: sf.port}
	for {
		r := sensorcheck.Read(ctx, env, envErr, rxi, gpsErr, opts)
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
