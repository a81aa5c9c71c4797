package telemetry

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Application properties of an alert message. IoT Hub message routing
// filters on application properties by name (a route query such as
// messageType = 'alert': docs/protocol.md B.3, [hub-routing]), without reading the body.
const (
	MessageTypeProperty = "messageType" // "alert" on alert messages
	MessageTypeAlert    = "alert"
	AlertTypeProperty   = "alertType"  // an AlertKind
	AlertStateProperty  = "alertState" // "active" or "cleared"
)

// AlertKind says what an alert is about.
type AlertKind string

const (
	// AlertTemperature: the temperature stayed above the threshold.
	AlertTemperature AlertKind = "temperature"
	// AlertEnvSensor: the temperature sensor gives no readings.
	AlertEnvSensor AlertKind = "envSensorLost"
	// AlertGPS: the GPS receiver gives nothing (port gone, silent).
	AlertGPS AlertKind = "gpsLost"
)

// Alert states.
const (
	AlertActive  = "active"
	AlertCleared = "cleared"
)

// Alert is one alert state change.
type Alert struct {
	Seq    uint64
	Kind   AlertKind
	Active bool
	// Time is when the change was confirmed (the message's timestamp);
	// Since is when the condition began (for a temperature alert, the first
	// reading past the threshold, Time minus the minimum duration or more).
	Time, Since time.Time
	// Temperature is the reading that confirmed it (temperature alerts).
	Temperature *float64
	Threshold   float64
	Hysteresis  float64
	MinDuration time.Duration
	// Reason says why a sensor is lost (sensor alerts).
	Reason string
}

// AlertBody is an alert message's JSON body.
type AlertBody struct {
	Alert       AlertKind `json:"alert"`
	State       string    `json:"state"`
	Timestamp   string    `json:"timestamp"`
	Since       string    `json:"since"`
	Seq         uint64    `json:"seq"`
	Temperature *float64  `json:"temperature,omitempty"`
	Threshold   *float64  `json:"threshold,omitempty"`
	Hysteresis  *float64  `json:"hysteresis,omitempty"`
	MinDuration *float64  `json:"minDurationSeconds,omitempty"`
	Reason      string    `json:"reason,omitempty"`
}

// BuildAlert turns an alert into a message with the same id scheme as
// readings (device id and seq, shared with them).
func BuildAlert(deviceID string, a Alert) (Message, error) {
	state := AlertCleared
	if a.Active {
		state = AlertActive
	}
	b := AlertBody{
		Alert:     a.Kind,
		State:     state,
		Timestamp: a.Time.UTC().Format(time.RFC3339Nano),
		Since:     a.Since.UTC().Format(time.RFC3339Nano),
		Seq:       a.Seq,
		Reason:    a.Reason,
	}
	if a.Kind == AlertTemperature {
		th, hy, md := a.Threshold, a.Hysteresis, a.MinDuration.Seconds()
		b.Threshold, b.Hysteresis, b.MinDuration = &th, &hy, &md
		if a.Temperature != nil {
			t := round(*a.Temperature, 2)
			b.Temperature = &t
		}
	}
	body, err := json.Marshal(b)
	if err != nil {
		return Message{}, fmt.Errorf("telemetry: encode alert: %w", err)
	}
	return Message{
		ID:        deviceID + "-" + strconv.FormatUint(a.Seq, 10),
		Seq:       a.Seq,
		Body:      body,
		Alert:     a.Active,
		CreatedAt: a.Time.UTC(),
		Properties: map[string]string{
			MessageTypeProperty: MessageTypeAlert,
			AlertTypeProperty:   string(a.Kind),
			AlertStateProperty:  state,
		},
	}, nil
}
