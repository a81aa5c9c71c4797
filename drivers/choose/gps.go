package choose

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/reefer/tracker/drivers"
	"github.com/reefer/tracker/drivers/gps"
	"github.com/reefer/tracker/drivers/simulated"
)

// GPS defaults.
const (
	DefaultGPSPort         = "/dev/serial0"
	DefaultGPSProbeTimeout = 3 * time.Second
)

// GPSConfig says where the GPS is and how to choose between it and the
// simulator.
type GPSConfig struct {
	Mode drivers.Mode // auto (also when empty), hardware or simulated
	Port string       // serial device; DefaultGPSPort if empty
	Baud int          // gps.DefaultBaud if 0
	Seed int64        // simulator noise seed
	Now  func() time.Time
	// MaxAge is passed to gps.Options; gps.DefaultMaxAge if 0.
	MaxAge time.Duration
	// ProbeTimeout is how long the port may stay silent before it is
	// judged to have no GPS; DefaultGPSProbeTimeout if 0. A module sends
	// every second, so a few seconds is plenty.
	ProbeTimeout time.Duration
}

// GPS returns a receiver for cfg.Mode; the caller runs its Run method.
//
//   - hardware: the port must open and send NMEA within ProbeTimeout,
//     else the error says which (it wraps gps.ErrNoNMEA when the port
//     opened but stayed silent).
//   - simulated: the Rotterdam–New York route, always.
//   - auto: hardware when it passes the probe, otherwise the simulated
//     route with a WARN log giving the reason.
//
// The probed port is handed to the receiver open, so a hardware receiver
// holds the port until Run is called and ends.
func GPS(ctx context.Context, cfg GPSConfig, log *slog.Logger) (*gps.Receiver, error) {
	cfg, log = cfg.withDefaults(log)
	switch cfg.Mode {
	case drivers.SimulatedOnly:
		return simulatedGPS(cfg, log), nil
	case drivers.HardwareOnly:
		return hardwareGPS(ctx, cfg, log)
	case drivers.Auto, "":
		rx, err := hardwareGPS(ctx, cfg, log)
		if err == nil {
			return rx, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		log.Warn("gps hardware unavailable, using simulated route",
			"port", cfg.Port, "reason", err.Error())
		return simulatedGPS(cfg, log), nil
	}
	return nil, &drivers.ModeError{Value: string(cfg.Mode)}
}

// hardwareGPS opens and probes the port.
func hardwareGPS(ctx context.Context, cfg GPSConfig, log *slog.Logger) (*gps.Receiver, error) {
	rc, err := gps.OpenSerial(cfg.Port, cfg.Baud)
	if err != nil {
		return nil, fmt.Errorf("gps hardware: %w", err)
	}
	line, err := gps.Probe(ctx, rc, cfg.ProbeTimeout)
	if err != nil {
		return nil, fmt.Errorf("gps hardware on %s: %w", cfg.Port, err)
	}
	log.Info("gps hardware found", "port", cfg.Port, "baud", cfg.Baud, "first", line)
	return hardwareReceiver(cfg, rc, log), nil
}

// HardwareGPS is a receiver for the port in cfg that opens it itself and
// reopens it with back-off whenever it is missing or fails, without the
// probe: for a tracker that must start and run without its GPS, and pick
// it up when it appears (its Stats say whether the port is open and what
// went wrong).
func HardwareGPS(cfg GPSConfig, log *slog.Logger) *gps.Receiver {
	cfg, log = cfg.withDefaults(log)
	return hardwareReceiver(cfg, nil, log)
}

func (cfg GPSConfig) withDefaults(log *slog.Logger) (GPSConfig, *slog.Logger) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Port == "" {
		cfg.Port = DefaultGPSPort
	}
	if cfg.Baud <= 0 {
		cfg.Baud = gps.DefaultBaud
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = DefaultGPSProbeTimeout
	}
	return cfg, log
}

// hardwareReceiver reads the port, starting with first when it is already
// open (probed).
func hardwareReceiver(cfg GPSConfig, first io.ReadCloser, log *slog.Logger) *gps.Receiver {
	var mu sync.Mutex
	open := func(context.Context) (io.ReadCloser, error) {
		mu.Lock()
		defer mu.Unlock()
		if first != nil {
			rc := first
			first = nil
			return rc, nil
		}
		return gps.OpenSerial(cfg.Port, cfg.Baud)
	}
	return gps.New(gps.Options{
		Open:   open,
		MaxAge: cfg.MaxAge,
		Now:    cfg.Now,
		Source: drivers.Hardware,
	}, log)
}

// simulatedGPS sails from Rotterdam starting now, one burst a second.
func simulatedGPS(cfg GPSConfig, log *slog.Logger) *gps.Receiver {
	route := simulated.NewRoute(cfg.Seed, cfg.Now())
	log.Info("gps simulated", "route", "Rotterdam–New York", "seed", cfg.Seed)
	return gps.New(gps.Options{
		Open: func(ctx context.Context) (io.ReadCloser, error) {
			return route.Stream(ctx, cfg.Now, time.Second), nil
		},
		MaxAge: cfg.MaxAge,
		Now:    cfg.Now,
		Source: drivers.Simulated,
	}, log)
}
