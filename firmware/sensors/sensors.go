// Package sensors opens the sensors the tracker config names. It is the one
// mapping from config.Sensors to the driver choice (drivers/choose), used
// by the daemon, `tracker sensors` and `tracker doctor`, so the three open
// the same sensors the same way.
package sensors

import (
	"context"
	"log/slog"
	"time"

	"periph.io/x/conn/v3/i2c"

	"github.com/reefer/tracker/drivers"
	"github.com/reefer/tracker/drivers/choose"
	"github.com/reefer/tracker/drivers/gps"
	"github.com/reefer/tracker/firmware/config"
	"github.com/reefer/tracker/firmware/sensorcheck"
)

// Options are what the config does not say.
type Options struct {
	// Probe opens "auto" as hardware alone, so that a check sees a missing
	// sensor instead of the simulator standing in for it (doctor).
	Probe bool
	// OpenI2C opens an I2C bus by name; nil uses periph's registry (main
	// must have run host.Init).
	OpenI2C func(name string) (i2c.BusCloser, error)
	// Seed drives the simulators.
	Seed int64
	// GPSProbeTimeout: how long "auto" and "hardware" wait for NMEA on
	// the port; 0: choose.DefaultGPSProbeTimeout.
	GPSProbeTimeout time.Duration
}

// Mode is the driver mode a sensor configured with m is opened with: m
// itself, or with probe the hardware alone unless m is "simulated".
func Mode(m drivers.Mode, probe bool) drivers.Mode {
	if probe && m != drivers.SimulatedOnly {
		return drivers.HardwareOnly
	}
	return m
}

// EnvConfig is the driver choice for the env sensor c.
func EnvConfig(c config.EnvSensor, o Options) choose.EnvConfig {
	return choose.EnvConfig{Mode: Mode(c.Mode, o.Probe), Bus: c.Bus, Addr: uint16(c.Address), Open: o.OpenI2C, Seed: o.Seed}
}

// GPSConfig is the driver choice for the GPS c.
func GPSConfig(c config.GPSSensor, o Options) choose.GPSConfig {
	return choose.GPSConfig{Mode: Mode(c.Mode, o.Probe), Port: c.Port, Baud: c.Baud, Seed: o.Seed, ProbeTimeout: o.GPSProbeTimeout}
}

// OpenEnv opens the env sensor c; the source says whether it is the
// simulator (in "auto", when the hardware did not answer).
func OpenEnv(ctx context.Context, c config.EnvSensor, o Options, log *slog.Logger) (drivers.EnvSensor, drivers.Source, error) {
	env, err := choose.Env(ctx, EnvConfig(c, o), log)
	if err != nil {
		return nil, "", err
	}
	return env, choose.EnvSource(env), nil
}

// GPS is a receiver that runs (reads its port) until Close.
type GPS struct {
	*gps.Receiver
	stop func()
}

// OpenGPS opens the GPS c and starts reading it.
func OpenGPS(ctx context.Context, c config.GPSSensor, o Options, log *slog.Logger) (*GPS, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rx, err := choose.GPS(ctx, GPSConfig(c, o), log)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := rx.Run(rctx); err != nil && rctx.Err() == nil {
			log.Error("gps receiver stopped", "err", err)
		}
	}()
	return &GPS{Receiver: rx, stop: func() { cancel(); <-done }}, nil
}

// Close stops reading the port and waits until it is closed.
func (g *GPS) Close() { g.stop() }

// Set is both sensors as a technician's check opens them: each may be
// missing, with the error that says why.
type Set struct {
	Env    drivers.EnvSensor // nil when EnvErr is set
	EnvErr error
	GPS    *GPS // nil when GPSErr is set
	GPSErr error
	port   string
}

// Open opens both sensors of c.
func Open(ctx context.Context, c config.Sensors, o Options, log *slog.Logger) *Set {
	s := &Set{port: c.GPS.Port}
	s.Env, _, s.EnvErr = OpenEnv(ctx, c.Env, o, log)
	s.GPS, s.GPSErr = OpenGPS(ctx, c.GPS, o, log)
	return s
}

// Read takes one reading of each sensor (sensorcheck.Read); o.Port
// defaults to the configured GPS port.
func (s *Set) Read(ctx context.Context, o sensorcheck.Options) sensorcheck.Report {
	if o.Port == "" {
		o.Port = s.port
	}
	var rx sensorcheck.Receiver
	if s.GPS != nil {
		rx = s.GPS
	}
	return sensorcheck.Read(ctx, s.Env, s.EnvErr, rx, s.GPSErr, o)
}

// Close closes whatever was opened.
func (s *Set) Close() {
	if s.Env != nil {
		s.Env.Close()
	}
	if s.GPS != nil {
		s.GPS.Close()
	}
}
