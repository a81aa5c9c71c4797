package doctor

import (
	"fmt"
	"testing"
	"time"

	"github.com/reefer/tracker/drivers"
	"github.com/reefer/tracker/drivers/choose"
	"github.com/reefer/tracker/drivers/gps"
	"github.com/reefer/tracker/firmware/config"
	"github.com/reefer/tracker/firmware/sensorcheck"
)

func TestCheckEnv(t *testing.T) {
	t.Parallel()
	rh := 87.0
	bme := &drivers.Env{TemperatureC: 4.21, PressureHPa: 1013.2, HumidityRH: &rh, Source: drivers.Hardware, Chip: "BME280"}
	bmp := &drivers.Env{TemperatureC: 4.21, PressureHPa: 1013.2, Source: drivers.Hardware, Chip: "BMP280"}
	sim := &drivers.Env{TemperatureC: 3.9, PressureHPa: 1012, HumidityRH: &rh, Source: drivers.Simulated, Chip: "reefer-sim"}
	cfg := func(m drivers.Mode) config.EnvSensor { return config.EnvSensor{Mode: m, Bus: "1", Address: 0x76} }
	tests := []struct {
		name        string
		cfg         config.EnvSensor
		r           sensorcheck.Report
		st          Status
		detail, fix string
	}{
		{"bme280", cfg(drivers.HardwareOnly), sensorcheck.Report{Env: bme}, OK, "BME280 on I2C bus 1, address 0x76: 4.2 °C, 1013.2 hPa, 87 %RH", ""},
		{"bmp280", cfg(drivers.Auto), sensorcheck.Report{Env: bmp}, Warn, "BMP280 on I2C bus 1, address 0x76: 4.2 °C, 1013.2 hPa; humidity is absent", "no humidity sensor"},
		{"simulated", cfg(drivers.SimulatedOnly), sensorcheck.Report{Env: sim}, Warn, `simulated (sensors.env.mode = "simulated")`, `set sensors.env.mode to "hardware"`},
		{"no bus, hardware", cfg(drivers.HardwareOnly), sensorcheck.Report{EnvError: `env sensor: no I2C bus "1": open /dev/i2c-1: no such file`,
			EnvErr: fmt.Errorf(`env sensor: %w "1": open /dev/i2c-1: no such file`, choose.ErrNoI2CBus)}, Fail, "no BME280 on I2C bus 1", "enable I2C"},
		{"no chip, auto", cfg(drivers.Auto), sensorcheck.Report{EnvError: "bme280: no device at 0x76"}, Warn, "simulated readings instead", "i2cdetect -y 1"},
		{"first bus", config.EnvSensor{Mode: drivers.HardwareOnly, Address: 0x77}, sensorcheck.Report{EnvError: "bme280: no device"}, Fail, "I2C bus (first), address 0x77", "wiring"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			wantCheck(t, CheckEnv(tt.cfg, tt.r), "env sensor", tt.st, tt.detail, tt.fix)
		})
	}
}

func TestCheckGPS(t *testing.T) {
	t.Parallel()
	fix := &gps.Fix{Latitude: 51.9, Longitude: 4.1, Satellites: 9, HDOP: 0.8, Quality: 1, Source: drivers.Hardware, Time: time.Now()}
	cfg := func(m drivers.Mode) config.GPSSensor {
		return config.GPSSensor{Mode: m, Port: "/dev/serial0", Baud: 9600}
	}
	tests := []struct {
		name        string
		cfg         config.GPSSensor
		r           sensorcheck.Report
		st          Status
		detail, fix string
	}{
		{"fix", cfg(drivers.HardwareOnly), sensorcheck.Report{GPS: fix, GPSSource: drivers.Hardware, GPSStats: &gps.Stats{Sentences: 12}}, OK, "fix on /dev/serial0 at 9600 baud: 51.90000, 4.10000, 9 satellites", ""},
		{"nmea without fix", cfg(drivers.HardwareOnly), sensorcheck.Report{GPSSource: drivers.Hardware, GPSStats: &gps.Stats{Sentences: 30}, GPSError: "NMEA but no fix"}, Warn, "(30 sentences) but no fix yet", "view of the sky"},
		{"silent port, hardware", cfg(drivers.HardwareOnly), sensorcheck.Report{GPSError: "gps hardware on /dev/serial0: no NMEA within 3s"}, Fail, "no NMEA on /dev/serial0 at 9600 baud", "sensors.gps.baud"},
		{"silent port, auto", cfg(drivers.Auto), sensorcheck.Report{GPSError: "gps hardware: open /dev/serial0: no such file"}, Warn, "simulated readings instead", "serial port"},
		{"simulated", cfg(drivers.SimulatedOnly), sensorcheck.Report{GPS: &gps.Fix{Latitude: 51.95, Longitude: 4.05, Source: drivers.Simulated}, GPSSource: drivers.Simulated}, Warn, "simulated route", `set sensors.gps.mode to "hardware"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			wantCheck(t, CheckGPS(tt.cfg, tt.r), "gps", tt.st, tt.detail, tt.fix)
		})
	}
}
