package sensors

import (
	"context"
	"testing"
	"time"

	"github.com/reefer/tracker/drivers"
	"github.com/reefer/tracker/drivers/choose"
	"github.com/reefer/tracker/firmware/config"
	"github.com/reefer/tracker/firmware/sensorcheck"
)

// Probing (doctor) opens "auto" as hardware, so a missing sensor cannot
// hide behind the simulator; "simulated" stays simulated.
func TestProbeMode(t *testing.T) {
	t.Parallel()
	for m, want := range map[drivers.Mode]drivers.Mode{drivers.Auto: drivers.HardwareOnly, drivers.HardwareOnly: drivers.HardwareOnly, drivers.SimulatedOnly: drivers.SimulatedOnly} {
		if got := Mode(m, true); got != want {
			t.Errorf("Mode(%q, probe) = %q; want %q", m, got, want)
		}
		if got := Mode(m, false); got != m {
			t.Errorf("Mode(%q, no probe) = %q; want it unchanged", m, got)
		}
	}
}

func TestConfigMapping(t *testing.T) {
	t.Parallel()
	c := config.Sensors{
		Env: config.EnvSensor{Mode: drivers.Auto, Bus: "I2C1", Address: 0x77},
		GPS: config.GPSSensor{Mode: drivers.HardwareOnly, Port: "/dev/ttyUSB0", Baud: 38400},
	}
	o := Options{Seed: 7, GPSProbeTimeout: time.Second}
	env := EnvConfig(c.Env, o)
	if env.Mode != drivers.Auto || env.Bus != "I2C1" || env.Addr != 0x77 || env.Seed != 7 {
		t.Errorf("EnvConfig = %+v", env)
	}
	g := GPSConfig(c.GPS, o)
	want := choose.GPSConfig{Mode: drivers.HardwareOnly, Port: "/dev/ttyUSB0", Baud: 38400, Seed: 7, ProbeTimeout: time.Second}
	if g.Mode != want.Mode || g.Port != want.Port || g.Baud != want.Baud || g.Seed != want.Seed || g.ProbeTimeout != want.ProbeTimeout {
		t.Errorf("GPSConfig = %+v; want %+v", g, want)
	}
	if p := EnvConfig(c.Env, Options{Probe: true}); p.Mode != drivers.HardwareOnly {
		t.Errorf("probing EnvConfig mode = %q; want hardware", p.Mode)
	}
}

func TestOpenSimulated(t *testing.T) {
	t.Parallel()
	c := config.Default().Sensors
	c.Env.Mode, c.GPS.Mode = drivers.SimulatedOnly, drivers.SimulatedOnly
	set := Open(context.Background(), c, Options{Probe: true, Seed: 1}, nil)
	defer set.Close()
	if set.EnvErr != nil || set.GPSErr != nil {
		t.Fatalf("Open(simulated) errors: env %v, gps %v", set.EnvErr, set.GPSErr)
	}
	r := set.Read(context.Background(), sensorcheck.Options{FixWait: 5 * time.Second})
	if r.Env == nil || r.Env.Source != drivers.Simulated || r.GPS == nil || r.GPSSource != drivers.Simulated {
		t.Errorf("Read() = %+v; want simulated env and gps readings", r)
	}
	env, src, err := OpenEnv(context.Background(), c.Env, Options{}, nil)
	if err != nil || src != drivers.Simulated {
		t.Fatalf("OpenEnv(simulated) source %q, err %v; want simulated", src, err)
	}
	env.Close()
}
