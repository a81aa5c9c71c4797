package telemetry

import "time"

// The two settings an operator tunes, in the config file and as desired
// twin properties: how often a message is sent and the temperature above
// which it carries the alert. Their defaults and bounds are here once, for
// the config's validation and the twin's alike.
const (
	DefaultDelay = 10 * time.Second
	MinDelay     = time.Second
	MaxDelay     = time.Hour

	// DefaultAlertThreshold is the reference flow's 30 °C
	// (docs/reference-flow.md).
	DefaultAlertThreshold = 30.0
	// The BME280 measures -40..85 °C (its operating range): a threshold
	// outside it would never, or always, raise the alert.
	MinAlertThreshold = -40.0
	MaxAlertThreshold = 85.0
)

// The temperature alert's debounce, also set in the config file and as
// desired twin properties: the alert is raised once the temperature has
// stayed above the threshold for AlertMinDuration, and cleared once it has
// stayed below threshold minus AlertHysteresis as long, so a noisy sensor
// near the threshold does not flap.
const (
	DefaultAlertHysteresis = 1.0 // °C
	MinAlertHysteresis     = 0.0
	MaxAlertHysteresis     = 10.0

	DefaultAlertMinDuration = time.Minute
	MinAlertMinDuration     = time.Duration(0) // at the first reading past it
	MaxAlertMinDuration     = time.Hour
)
