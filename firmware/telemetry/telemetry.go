// Package telemetry defines the message a tracker sends to IoT Hub: the JSON
// body and the properties that travel in the MQTT topic's property bag.
//
// The body follows the reference programs (docs/reference-flow.md: temperature,
// humidity, pressure, latitude, longitude) and adds what a fleet operator
// needs to trust the data: when it was sampled, a per-device sequence number
// for de-duplication, the GPS fix quality, and where each reading came from.
package telemetry

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/reefer/tracker/drivers"
)

// Property names and values set on every message. Content type and encoding
// let IoT Hub route on the body (docs/protocol.md B.3).
const (
	ContentType     = "application/json"
	ContentEncoding = "utf-8"
	// AlertProperty is the application property the reference flow routes on.
	AlertProperty = "temperatureAlert"
)

// Position is a GPS fix as it goes into a message. A sample without a valid
// fix has no Position: latitude and longitude are then omitted, never 0,0.
type Position struct {
	Latitude   float64
	Longitude  float64
	Quality    int // GGA fix quality: 1 GPS, 2 DGPS, ...
	Satellites int
	Source     drivers.Source
}

// Sample is one set of readings taken at one moment.
type Sample struct {
	Seq  uint64
	Time time.Time // when the sensors were read
	Env  drivers.Env
	// EnvError, when set, says why there is no env reading (the sensor is
	// missing or did not answer): Env is ignored, temperature, humidity and
	// pressure are omitted and source.env is "missing".
	EnvError string
	Position *Position
	// GPSSource says where the GPS data would have come from even when there
	// is no fix, so a simulated receiver never passes as a real one.
	GPSSource drivers.Source
	// GPSError, when set, says why the GPS gives nothing (port missing,
	// receiver silent): source.gps is "missing" and there is no position.
	GPSError string
}

// Body is the JSON body. Optional readings are pointers so that "absent"
// is omitted rather than sent as 0.
type Body struct {
	Temperature *float64 `json:"temperature,omitempty"`
	Humidity    *float64 `json:"humidity,omitempty"`
	Pressure    *float64 `json:"pressure,omitempty"`
	Latitude    *float64 `json:"latitude,omitempty"`
	Longitude   *float64 `json:"longitude,omitempty"`
	FixQuality  int      `json:"fixQuality"`
	Satellites  int      `json:"satellites"`
	Timestamp   string   `json:"timestamp"`
	Seq         uint64   `json:"seq"`
	Source      Sources  `json:"source"`
}

// Sources names the origin of each reading: "hardware", "simulated", or
// "missing" with the reason beside it.
type Sources struct {
	Env drivers.Source `json:"env"`
	GPS drivers.Source `json:"gps"`
	// EnvError and GPSError say why a "missing" sensor gives nothing.
	EnvError string `json:"envError,omitempty"`
	GPSError string `json:"gpsError,omitempty"`
}

// SourcesOf is what a sample says about its sensors.
func SourcesOf(s Sample) Sources {
	src := Sources{Env: s.Env.Source, GPS: s.GPSSource}
	if s.EnvError != "" {
		src.Env, src.EnvError = drivers.Missing, s.EnvError
	}
	if s.GPSError != "" {
		src.GPS, src.GPSError = drivers.Missing, s.GPSError
	}
	return src
}

// Message is a body ready to send with its properties.
type Message struct {
	ID        string // message id ($.mid): stable across resends
	Seq       uint64
	Body      []byte
	Alert     bool
	CreatedAt time.Time
	// Properties are the application properties (temperatureAlert).
	Properties map[string]string
}

// Build turns a sample into a message. deviceID and Seq make the message id,
// so a resend after a crash carries the same id and the cloud can drop it.
// threshold is the temperature in °C above which temperatureAlert is "true".
func Build(deviceID string, s Sample, threshold float64) (Message, error) {
	env := s.EnvError == ""
	if env && (math.IsNaN(s.Env.TemperatureC) || math.IsInf(s.Env.TemperatureC, 0)) {
		return Message{}, fmt.Errorf("telemetry: temperature is %v", s.Env.TemperatureC)
	}
	b := Body{
		Timestamp: s.Time.UTC().Format(time.RFC3339Nano),
		Seq:       s.Seq,
		Source:    SourcesOf(s),
	}
	if env {
		t, p := round(s.Env.TemperatureC, 2), round(s.Env.PressureHPa, 2)
		b.Temperature, b.Pressure = &t, &p
		if s.Env.HumidityRH != nil {
			h := round(*s.Env.HumidityRH, 2)
			b.Humidity = &h
		}
	}
	if p := s.Position; p != nil && s.GPSError == "" {
		lat, lon := round(p.Latitude, 6), round(p.Longitude, 6)
		b.Latitude, b.Longitude = &lat, &lon
		b.FixQuality, b.Satellites = p.Quality, p.Satellites
		b.Source.GPS = p.Source
	}
	body, err := json.Marshal(b)
	if err != nil {
		return Message{}, fmt.Errorf("telemetry: encode: %w", err)
	}
	// Without a temperature there is nothing to alert on.
	alert := env && s.Env.TemperatureC > threshold
	return Message{
		ID:         deviceID + "-" + strconv.FormatUint(s.Seq, 10),
		Seq:        s.Seq,
		Body:       body,
		Alert:      alert,
		CreatedAt:  s.Time.UTC(),
		Properties: map[string]string{AlertProperty: strconv.FormatBool(alert)},
	}, nil
}

// round keeps messages small and free of float noise like 4.000000000001.
func round(v float64, places int) float64 {
	p := math.Pow10(places)
	return math.Round(v*p) / p
}
