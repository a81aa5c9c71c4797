// Package drivers holds what every sensor driver shares: the reading types
// and where a reading came from. Real drivers live in drivers/bme280 and
// drivers/gps; drivers/simulated stands in for them when hardware is absent.
//
// Simulated data must never pass as real: every reading carries its Source.
package drivers

import (
	"context"
	"time"
)

// Source says where a reading came from.
type Source string

const (
	// Hardware readings come from a real device on a real bus or port.
	Hardware Source = "hardware"
	// Simulated readings come from a model in drivers/simulated.
	Simulated Source = "simulated"
	// Missing: the hardware the config insists on is absent or not
	// answering, so this reading has no values from it. The tracker goes on
	// with the other sensor and keeps trying to reopen the missing one.
	Missing Source = "missing"
)

// Env is one environmental reading.
type Env struct {
	Time         time.Time `json:"time"`
	TemperatureC float64   `json:"temperature"` // °C
	PressureHPa  float64   `json:"pressure"`    // hPa
	// HumidityRH is relative humidity in %. It is nil when the chip has no
	// humidity sensor (a BMP280 sold as a BME280): absent, never 0.
	HumidityRH *float64 `json:"humidity,omitempty"`
	Source     Source   `json:"source"`
	// Chip names the device: "BME280", "BMP280" or the simulator's name.
	Chip string `json:"chip"`
}

// EnvSensor reads temperature, pressure and (when present) humidity.
type EnvSensor interface {
	Sense(ctx context.Context) (Env, error)
	Close() error
}

// Mode selects how a sensor is opened.
type Mode string

const (
	// Auto uses hardware when the bus or port opens and the device answers,
	// and falls back to the simulator with a warning otherwise.
	Auto Mode = "auto"
	// HardwareOnly makes missing hardware an error.
	HardwareOnly Mode = "hardware"
	// SimulatedOnly always uses the simulator.
	SimulatedOnly Mode = "simulated"
)

// ParseMode checks a mode name from config or flags.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case Auto, HardwareOnly, SimulatedOnly:
		return m, nil
	}
	return "", &ModeError{Value: s}
}

// ModeError reports an unknown sensor mode.
type ModeError struct{ Value string }

func (e *ModeError) Error() string {
	return "unknown sensor mode " + `"` + e.Value + `"` + ` (want "auto", "hardware" or "simulated")`
}
