package sensorcheck

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reefer/tracker/drivers"
	"github.com/reefer/tracker/drivers/gps"
)

type fakeEnv struct {
	env drivers.Env
	err error
}

func (f fakeEnv) Sense(context.Context) (drivers.Env, error) { return f.env, f.err }
func (f fakeEnv) Close() error                               { return nil }

type fakeRx struct {
	fixAfter  int32 // Latest calls before a fix appears; <0 never
	calls     atomic.Int32
	sentences uint64
	src       drivers.Source
}

func (f *fakeRx) Latest() (gps.Fix, bool) {
	n := f.calls.Add(1)
	if f.fixAfter < 0 || n <= f.fixAfter {
		return gps.Fix{}, false
	}
	return gps.Fix{Latitude: 51.9, Longitude: -4.5, Quality: 1, Satellites: 8, HDOP: 0.9, SpeedMS: 9.26, Source: f.src}, true
}
func (f *fakeRx) Stats() gps.Stats       { return gps.Stats{Sentences: f.sentences} }
func (f *fakeRx) Source() drivers.Source { return f.src }

func hum(v float64) *float64 { return &v }

func TestRead(t *testing.T) {
	t.Parallel()
	good := fakeEnv{env: drivers.Env{TemperatureC: 4.2, PressureHPa: 1013.2, HumidityRH: hum(90), Source: drivers.Hardware, Chip: "BME280"}}
	tests := []struct {
		name       string
		env        drivers.EnvSensor
		envErr     error
		rx         *fakeRx
		gpsErr     error
		wantProbs  []string
		wantInText []string
	}{
		{name: "all good", env: good, rx: &fakeRx{fixAfter: 2, sentences: 10, src: drivers.Hardware},
			wantInText: []string{"BME280: 4.20 °C, 1013.20 hPa, 90.0 %RH", "51.90000 N 4.50000 W", "18.0 kn"}},
		{name: "no bus", envErr: errors.New("no I2C bus 1"), rx: &fakeRx{fixAfter: 0, src: drivers.Hardware},
			wantProbs: []string{"env: no I2C bus 1"}, wantInText: []string{"FAIL: no I2C bus 1"}},
		{name: "sense fails", env: fakeEnv{err: errors.New("bme280 on I2C1 at 0x76: i/o error")}, rx: &fakeRx{fixAfter: 0},
			wantProbs: []string{"env: bme280 on I2C1 at 0x76: i/o error"}},
		{name: "silent port", env: good, rx: &fakeRx{fixAfter: -1, src: drivers.Hardware},
			wantProbs: []string{"gps: no NMEA on /dev/serial0 within 50ms"}},
		{name: "nmea but no fix", env: good, rx: &fakeRx{fixAfter: -1, sentences: 4, src: drivers.Hardware},
			wantProbs: []string{"gps: NMEA on /dev/serial0 but no fix within 50ms (4 sentences; the antenna needs a view of the sky)"}},
		{name: "port missing", env: good, gpsErr: errors.New("open /dev/serial0: no such file"),
			wantProbs: []string{"gps: open /dev/serial0: no such file"}},
		{name: "bmp280", env: fakeEnv{env: drivers.Env{TemperatureC: 5, PressureHPa: 1000, Source: drivers.Hardware, Chip: "BMP280"}}, rx: &fakeRx{fixAfter: 0},
			wantInText: []string{"humidity absent"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var rx Receiver
			if tt.rx != nil {
				rx = tt.rx
			}
			r := Read(context.Background(), tt.env, tt.envErr, rx, tt.gpsErr, Options{FixWait: 50 * time.Millisecond, Poll: time.Millisecond, Port: "/dev/serial0"})
			if got := strings.Join(r.Problems(), "|"); got != strings.Join(tt.wantProbs, "|") {
				t.Errorf("Problems() = %q; want %q", r.Problems(), tt.wantProbs)
			}
			var buf bytes.Buffer
			if err := r.WriteTable(&buf); err != nil {
				t.Fatal(err)
			}
			for _, s := range tt.wantInText {
				if !strings.Contains(buf.String(), s) {
					t.Errorf("table missing %q:\n%s", s, buf.String())
				}
			}
		})
	}
}

func TestSimulatedIsFlagged(t *testing.T) {
	t.Parallel()
	env := fakeEnv{env: drivers.Env{TemperatureC: 4, Source: drivers.Simulated, Chip: "simulated-reefer"}}
	// A simulated receiver without a fix still marks the report simulated.
	r := Read(context.Background(), env, nil, &fakeRx{fixAfter: -1, src: drivers.Simulated}, nil, Options{FixWait: time.Millisecond, Poll: time.Millisecond})
	var buf bytes.Buffer
	r.WriteTable(&buf)
	if !r.Simulated() || !strings.Contains(buf.String(), "NOTE: simulated readings") {
		t.Errorf("simulated report not flagged: Simulated()=%v\n%s", r.Simulated(), buf.String())
	}
	r = Read(context.Background(), fakeEnv{env: drivers.Env{Source: drivers.Hardware}}, nil, &fakeRx{fixAfter: 0, src: drivers.Hardware}, nil, Options{FixWait: time.Millisecond})
	if r.Simulated() {
		t.Error("hardware report flagged as simulated")
	}
}
