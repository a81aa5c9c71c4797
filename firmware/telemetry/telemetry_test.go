package telemetry

import (
	"bytes"
	"encoding/json"
	"flag"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/reefer/tracker/drivers"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

func ptr(f float64) *float64 { return &f }

var sampleTime = time.Date(2026, 11, 28, 13, 45, 7, 250_000_000, time.UTC)

func TestBuildGolden(t *testing.T) {
	tests := []struct {
		name   string
		sample Sample
		alert  bool
	}{
		{
			name: "hardware_full",
			sample: Sample{Seq: 42, Time: sampleTime,
				Env:       drivers.Env{TemperatureC: 4.1234, PressureHPa: 1013.256, HumidityRH: ptr(91.04), Source: drivers.Hardware, Chip: "BME280"},
				Position:  &Position{Latitude: 51.9225, Longitude: 4.47917, Quality: 1, Satellites: 9, Source: drivers.Hardware},
				GPSSource: drivers.Hardware},
		},
		{
			// A BMP280 has no humidity sensor, and there is no GPS fix yet:
			// both must be absent from the body, never 0.
			name: "bmp280_nofix",
			sample: Sample{Seq: 7, Time: sampleTime,
				Env:       drivers.Env{TemperatureC: 31.5, PressureHPa: 1009.9, Source: drivers.Hardware, Chip: "BMP280"},
				GPSSource: drivers.Hardware},
			alert: true,
		},
		{
			name: "env_missing",
			sample: Sample{Seq: 9, Time: sampleTime,
				EnvError:  `env sensor: no I2C bus "1": /dev/i2c-1 does not exist`,
				Position:  &Position{Latitude: 51.9225, Longitude: 4.47917, Quality: 1, Satellites: 9, Source: drivers.Hardware},
				GPSSource: drivers.Hardware},
		},
		{
			name: "gps_missing",
			sample: Sample{Seq: 10, Time: sampleTime,
				Env:       drivers.Env{TemperatureC: 4.1, PressureHPa: 1013.2, HumidityRH: ptr(91), Source: drivers.Hardware, Chip: "BME280"},
				GPSSource: drivers.Hardware, GPSError: "open serial port /dev/serial0 at 9600 baud: no such file or directory"},
		},
		{
			name: "simulated",
			sample: Sample{Seq: 1, Time: sampleTime.In(time.FixedZone("CET", 3600)),
				Env:       drivers.Env{TemperatureC: 3.9, PressureHPa: 1015, HumidityRH: ptr(88), Source: drivers.Simulated, Chip: "simulated-reefer"},
				Position:  &Position{Latitude: 49.5, Longitude: -3.25, Quality: 1, Satellites: 11, Source: drivers.Simulated},
				GPSSource: drivers.Simulated},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Build("sensor-thl-001", tt.sample, 30)
			if err != nil {
				t.Fatal(err)
			}
			if m.Alert != tt.alert || m.Properties[AlertProperty] != map[bool]string{true: "true", false: "false"}[tt.alert] {
				t.Errorf("alert = %v, property %q; want %v", m.Alert, m.Properties[AlertProperty], tt.alert)
			}
			if want := "sensor-thl-001-" + itoa(tt.sample.Seq); m.ID != want {
				t.Errorf("ID = %q; want %q", m.ID, want)
			}
			golden := filepath.Join("testdata", tt.name+".json")
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, m.Body, "", "  "); err != nil {
				t.Fatal(err)
			}
			pretty.WriteByte('\n')
			if *update {
				if err := os.WriteFile(golden, pretty.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			if !bytes.Equal(pretty.Bytes(), want) {
				t.Errorf("body =\n%s\nwant\n%s", pretty.Bytes(), want)
			}
		})
	}
}

func itoa(u uint64) string { b, _ := json.Marshal(u); return string(b) }

func TestAlertThreshold(t *testing.T) {
	tests := []struct {
		temp, threshold float64
		want            bool
	}{
		{30, 30, false}, // "exceeds": equal is not an alert
		{30.01, 30, true},
		{-20, -25, true},
		{4, 30, false},
	}
	for _, tt := range tests {
		m, err := Build("d", Sample{Env: drivers.Env{TemperatureC: tt.temp}}, tt.threshold)
		if err != nil {
			t.Fatal(err)
		}
		if m.Alert != tt.want {
			t.Errorf("Build(temp %v, threshold %v).Alert = %v; want %v", tt.temp, tt.threshold, m.Alert, tt.want)
		}
	}
}

func TestBuildRejectsNaN(t *testing.T) {
	for _, v := range []float64{math.NaN(), math.Inf(1)} {
		if _, err := Build("d", Sample{Env: drivers.Env{TemperatureC: v}}, 30); err == nil {
			t.Errorf("Build(temp %v) succeeded; want error", v)
		}
	}
}

// BenchmarkBuild is the JSON encoding of one full reading (body and
// properties): its share of the CPU a reading costs (bench/README.md).
func BenchmarkBuild(b *testing.B) {
	s := Sample{Seq: 42, Time: sampleTime,
		Env:       drivers.Env{TemperatureC: 4.1234, PressureHPa: 1013.256, HumidityRH: ptr(91.04), Source: drivers.Hardware, Chip: "BME280"},
		Position:  &Position{Latitude: 51.9225, Longitude: 4.47917, Quality: 1, Satellites: 9, Source: drivers.Hardware},
		GPSSource: drivers.Hardware}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Build("sensor-thl-001", s, 30); err != nil {
			b.Fatal(err)
		}
	}
}
