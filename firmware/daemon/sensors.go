package daemon

import (
	"context"
	"fmt"
	"sync"

	"github.com/reefer/tracker/drivers"
	"github.com/reefer/tracker/drivers/choose"
	"github.com/reefer/tracker/drivers/gps"
	"github.com/reefer/tracker/drivers/simulated"
	"github.com/reefer/tracker/firmware/telemetry"
)

// sensors are the opened sensors and how to release them.
type sensors struct {
	env       drivers.EnvSensor
	envSource drivers.Source
	gps       *positioner
	stopGPS   func()
	once      sync.Once
}

func (s *sensors) close() {
	s.once.Do(func() {
		s.stopGPS()
		s.env.Close()
	})
}

// openSensors opens both sensors as the config says (drivers/choose logs
// which and why). Simulated sensors are announced at WARN here, and every
// reading carries its source in the telemetry.
func (d *Daemon) openSensors(ctx context.Context, seed int64) (*sensors, error) {
	sc := d.tc.Sensors
	env, err := choose.Env(ctx, choose.EnvConfig{
		Mode: drivers.Mode(sc.Env.Mode), Bus: sc.Env.Bus, Addr: uint16(sc.Env.Address),
		Open: d.cfg.OpenI2C, Seed: seed,
	}, d.log)
	if err != nil {
		return nil, fmt.Errorf("open env sensor (sensors.env.mode %q): %w", sc.Env.Mode, err)
	}
	envSource := drivers.Hardware
	if _, ok := env.(*simulated.Reefer); ok {
		envSource = drivers.Simulated
		d.log.Warn("env sensor is SIMULATED: readings are not real and are marked source.env=simulated",
			"mode", string(sc.Env.Mode))
	}
	rx, err := choose.GPS(ctx, choose.GPSConfig{
		Mode: drivers.Mode(sc.GPS.Mode), Port: sc.GPS.Port, Baud: sc.GPS.Baud, Seed: seed,
	}, d.log)
	if err != nil {
		env.Close()
		return nil, fmt.Errorf("open gps (sensors.gps.mode %q): %w", sc.GPS.Mode, err)
	}
	if rx.Source() == drivers.Simulated {
		d.log.Warn("gps is SIMULATED: positions follow a made-up route and are marked source.gps=simulated",
			"mode", string(sc.GPS.Mode))
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := rx.Run(rctx); err != nil && rctx.Err() == nil {
			d.log.Error("gps receiver stopped", "err", err)
		}
	}()
	return &sensors{
		env: env, envSource: envSource, gps: &positioner{rx},
		stopGPS: func() { cancel(); <-done },
	}, nil
}

// positioner adapts the GPS receiver to agent.Positioner.
type positioner struct{ rx *gps.Receiver }

func (p *positioner) Latest() (telemetry.Position, bool) {
	f, ok := p.rx.Latest()
	if !ok {
		return telemetry.Position{}, false
	}
	return telemetry.Position{Latitude: f.Latitude, Longitude: f.Longitude, Quality: f.Quality,
		Satellites: f.Satellites, Source: f.Source}, true
}

func (p *positioner) Source() drivers.Source { return p.rx.Source() }
