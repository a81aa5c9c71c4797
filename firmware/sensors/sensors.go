// Package sensors opens the sensors the tracker config names. It is the one
// mapping from config.Sensors to the driver choice (drivers/choose), used
// by the daemon, `tracker sensors` and `tracker doctor`, so the three open
// the same sensors the same way.
package sensors

import (
	"context"
	"fmt"
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
	// must have initialised periph's host drivers).
	OpenI2C func(name string) (i2c.BusCloser, error)
	// Seed drives the simulators.
	Seed int64
	// GPSProbeTimeout: how long "auto" and "hardware" wait for NMEA on
	// the port; 0: choose.DefaultGPSProbeTimeout.
	GPSProbeTimeout time.Duration
	// KeepTrying is for the daemon, which must never stop reporting for
	// want of a sensor: in "hardware" mode a sensor missing at start is
	// not an error but a sensor that is opened again with back-off (and
	// says why it gives nothing), and a hardware sensor that stops
	// answering later is reopened the same way. Reopen shapes the retries.
	KeepTrying bool
	Reopen     ReopenOptions
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
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ec := EnvConfig(c, o)
	if !o.KeepTrying || ec.Mode == drivers.SimulatedOnly {
		env, err := choose.Env(ctx, ec, log)
		if err != nil {
			return nil, "", err
		}
		return env, choose.EnvSource(env), nil
	}
	if ec.Mode != drivers.HardwareOnly {
		// auto: the simulator stands in when there is no hardware now; a
		// chip that answers is kept, and reopened if it goes.
		env, err := choose.Env(ctx, ec, log)
		if err != nil || choose.EnvSource(env) == drivers.Simulated {
			return env, drivers.Simulated, err
		}
		env.Close()
	}
	ec.Mode = drivers.HardwareOnly // never swap a real chip for the simulator mid-run
	open := func(ctx context.Context) (drivers.EnvSensor, error) { return choose.Env(ctx, ec, log) }
	return NewReopeningEnv(ctx, open, o.Reopen, log), drivers.Hardware, nil
}

// GPS is a receiver that runs (reads its port) until Close.
type GPS struct {
	*gps.Receiver
	stop    func()
	port    string
	silence time.Duration
	now     func() time.Time
}

// Problem says why a hardware receiver gives nothing at all: its port does
// not open, or has sent no NMEA for ReopenOptions.GPSSilence; empty while
// it works (with or without a fix) and for the simulator.
func (g *GPS) Problem() string {
	if g.Source() != drivers.Hardware {
		return ""
	}
	st := g.Stats()
	if !st.Connected {
		return st.LastError // empty before the first attempt
	}
	last := st.LastSentence
	if st.OpenedAt.After(last) {
		last = st.OpenedAt
	}
	if d := g.now().Sub(last); !last.IsZero() && d > g.silence {
		return fmt.Sprintf("no NMEA on %s for %s: receiver unpowered, miswired or at another baud rate", g.port, d.Round(time.Second))
	}
	return ""
}

// OpenGPS opens the GPS c and starts reading it.
func OpenGPS(ctx context.Context, c config.GPSSensor, o Options, log *slog.Logger) (*GPS, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	gc := GPSConfig(c, o)
	rx, err := choose.GPS(ctx, gc, log)
	if err != nil && o.KeepTrying && gc.Mode == drivers.HardwareOnly && ctx.Err() == nil {
		log.Warn("gps missing: sending without a position; its port is opened again with back-off", "port", c.Port, "err", err)
		rx, err = choose.HardwareGPS(gc, log), nil
	}
	if err != nil {
		return nil, err
	}
	ro := o.Reopen.withDefaults()
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := rx.Run(rctx); err != nil && rctx.Err() == nil {
			log.Error("gps receiver stopped", "err", err)
		}
	}()
	return &GPS{Receiver: rx, stop: func() { cancel(); <-done }, port: c.Port, silence: ro.GPSSilence, now: ro.Now}, nil
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
