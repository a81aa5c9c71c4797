package daemon

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/reefer/tracker/drivers"
	"github.com/reefer/tracker/firmware/config"
	"github.com/reefer/tracker/firmware/sensorcheck"
	"github.com/reefer/tracker/firmware/sensors"
	"github.com/reefer/tracker/firmware/telemetry"
)

// openedSensors are the opened sensors and how to release them.
type openedSensors struct {
	env       drivers.EnvSensor
	envSource drivers.Source
	gps       *positioner
	once      sync.Once
}

func (s *openedSensors) close() {
	s.once.Do(func() {
		s.gps.g.Close()
		s.env.Close()
	})
}

// openSensors opens both sensors as the config says (drivers/choose logs
// which and why). Simulated sensors are announced at WARN here, and every
// reading carries its source in the telemetry.
func (d *Daemon) openSensors(ctx context.Context, seed int64) (*openedSensors, error) {
	sc := d.tc.Sensors
	// KeepTrying: a missing or dead sensor must not end the tracker (and
	// with it the other sensor's readings); it is reopened with back-off
	// and every message says why it gives nothing.
	o := sensors.Options{OpenI2C: d.cfg.OpenI2C, Seed: seed, KeepTrying: true, Reopen: d.cfg.Sensors}
	env, envSource, err := sensors.OpenEnv(ctx, sc.Env, o, d.log)
	if err != nil {
		return nil, fmt.Errorf("open env sensor (sensors.env.mode %q): %w", sc.Env.Mode, err)
	}
	if envSource == drivers.Simulated {
		d.log.Warn("env sensor is SIMULATED: readings are not real and are marked source.env=simulated",
			"mode", string(sc.Env.Mode))
	}
	g, err := sensors.OpenGPS(ctx, sc.GPS, o, d.log)
	if err != nil {
		env.Close()
		return nil, fmt.Errorf("open gps (sensors.gps.mode %q): %w", sc.GPS.Mode, err)
	}
	if g.Source() == drivers.Simulated {
		d.log.Warn("gps is SIMULATED: positions follow a made-up route and are marked source.gps=simulated",
			"mode", string(sc.GPS.Mode))
	}
	return &openedSensors{env: env, envSource: envSource, gps: &positioner{g}}, nil
}

// positioner adapts the GPS receiver to agent.Positioner.
type positioner struct{ g *sensors.GPS }

func (p *positioner) Latest() (telemetry.Position, bool) {
	f, ok := p.g.Latest()
	if !ok {
		return telemetry.Position{}, false
	}
	return telemetry.Position{Latitude: f.Latitude, Longitude: f.Longitude, Quality: f.Quality,
		Satellites: f.Satellites, Source: f.Source}, true
}

func (p *positioner) Source() drivers.Source { return p.g.Source() }
func (p *positioner) Problem() string        { return p.g.Problem() }

// sensorReport is the running sensors as doctor judges them (getStatus):
// one reading of the env sensor (a missing one answers at once with why)
// and the GPS as it is now, without waiting for a fix.
func (d *Daemon) sensorReport(ctx context.Context, _ *config.Config) sensorcheck.Report {
	g := d.p.sens.gps.g
	r := sensorcheck.Read(ctx, d.p.sens.env, nil, g, nil, sensorcheck.Options{FixWait: time.Millisecond, Port: d.tc.Sensors.GPS.Port})
	if p := g.Problem(); p != "" {
		r.GPSError = p
	}
	return r
}
