package doctor

import (
	"errors"
	"fmt"

	"github.com/reefer/tracker/drivers"
	"github.com/reefer/tracker/drivers/choose"
	"github.com/reefer/tracker/firmware/config"
	"github.com/reefer/tracker/firmware/sensorcheck"
)

// missing is WARN when the config lets the tracker fall back to the
// simulator, FAIL when it insists on hardware.
func missing(m drivers.Mode) Status {
	if m == drivers.Auto {
		return Warn
	}
	return Fail
}

const fallback = "; in auto mode the tracker sends simulated readings instead"

// CheckEnv judges the environmental sensor from one reading r, taken with
// sensors.Mode(cfg.Mode, true): "auto" probed as hardware.
func CheckEnv(cfg config.EnvSensor, r sensorcheck.Report) Check {
	ck := Check{Name: "env sensor"}
	bus := cfg.Bus
	if bus == "" {
		bus = "(first)"
	}
	where := fmt.Sprintf("I2C bus %s, address 0x%02x", bus, cfg.Address)
	if cfg.Address == 0 {
		where = fmt.Sprintf("I2C bus %s, address 0x76 or 0x77", bus)
	}
	e := r.Env
	switch {
	case e == nil:
		ck.Status = missing(cfg.Mode)
		ck.Detail = fmt.Sprintf("no BME280 on %s: %s", where, r.EnvError)
		if cfg.Mode == drivers.Auto {
			ck.Detail += fallback
		}
		if errors.Is(r.EnvErr, choose.ErrNoI2CBus) {
			ck.Fix = "enable I2C (raspi-config nonint do_i2c 0, or dtparam=i2c_arm=on in /boot/firmware/config.txt) and reboot; check sensors.env.bus"
		} else {
			ck.Fix = "check the wiring (3V3, GND, SDA to GPIO2, SCL to GPIO3) and the address: i2cdetect -y 1 shows 76 or 77; set sensors.env.address to match"
		}
	case e.Source == drivers.Simulated:
		ck.Status = Warn
		ck.Detail = fmt.Sprintf("simulated (sensors.env.mode = %q): %s", cfg.Mode, envReading(e))
		ck.Fix = `readings are not from this tracker; on a tracker with a BME280 set sensors.env.mode to "hardware" (or "auto")`
	case e.HumidityRH == nil:
		ck.Status = Warn
		ck.Detail = fmt.Sprintf("%s on %s: %s; humidity is absent", e.Chip, where, envReading(e))
		ck.Fix = "this chip has no humidity sensor (a BMP280 sold as a BME280); fit a real BME280 to report humidity"
	default:
		ck.Status = OK
		ck.Detail = fmt.Sprintf("%s on %s: %s", e.Chip, where, envReading(e))
	}
	return ck
}

func envReading(e *drivers.Env) string {
	s := fmt.Sprintf("%.1f °C, %.1f hPa", e.TemperatureC, e.PressureHPa)
	if e.HumidityRH != nil {
		s += fmt.Sprintf(", %.0f %%RH", *e.HumidityRH)
	}
	return s
}

// CheckGPS judges the GPS from one reading r, taken with
// sensors.Mode(cfg.Mode, true): no NMEA at all is a FAIL in hardware mode (WARN in
// auto, which falls back to the simulator); NMEA without a fix is only a
// WARN, since a receiver needs minutes and open sky for its first fix.
func CheckGPS(cfg config.GPSSensor, r sensorcheck.Report) Check {
	ck := Check{Name: "gps"}
	where := fmt.Sprintf("%s at %d baud", cfg.Port, cfg.Baud)
	sentences := uint64(0)
	if r.GPSStats != nil {
		sentences = r.GPSStats.Sentences
	}
	switch {
	case r.GPSSource == drivers.Simulated:
		ck.Status = Warn
		ck.Detail = fmt.Sprintf("simulated route (sensors.gps.mode = %q)", cfg.Mode)
		if f := r.GPS; f != nil {
			ck.Detail += fmt.Sprintf(": %.4f, %.4f", f.Latitude, f.Longitude)
		}
		ck.Fix = `positions are not from this tracker; on a tracker with a GPS set sensors.gps.mode to "hardware" (or "auto")`
	case r.GPS != nil:
		f := r.GPS
		ck.Status = OK
		ck.Detail = fmt.Sprintf("fix on %s: %.5f, %.5f, %d satellites, HDOP %.1f", where, f.Latitude, f.Longitude, f.Satellites, f.HDOP)
	case sentences > 0:
		ck.Status = Warn
		ck.Detail = fmt.Sprintf("NMEA on %s (%d sentences) but no fix yet", where, sentences)
		ck.Fix = "give the antenna a clear view of the sky (not inside the steel container); a first fix can take several minutes"
	default:
		ck.Status = missing(cfg.Mode)
		msg := r.GPSError
		if msg == "" {
			msg = "no NMEA received"
		}
		ck.Detail = fmt.Sprintf("no NMEA on %s: %s", where, msg)
		if cfg.Mode == drivers.Auto {
			ck.Detail += fallback
		}
		ck.Fix = "check sensors.gps.port and sensors.gps.baud (most modules send 9600), enable the serial port without a login console (raspi-config nonint do_serial_hw 0; do_serial_cons 1), and the wiring (GPS TX to Pi RX, GPIO15)"
	}
	return ck
}
