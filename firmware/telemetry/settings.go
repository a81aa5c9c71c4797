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
