package agent

import (
	"time"

	"github.com/reefer/tracker/firmware/command"
	"github.com/reefer/tracker/firmware/telemetry"
)

// StatusReport is what `tracker doctor` and the getStatus direct method
// show. It marshals to JSON as is.
type StatusReport struct {
	DeviceID        string  `json:"deviceId"`
	FirmwareVersion string  `json:"firmwareVersion"`
	Running         bool    `json:"running"` // Run is sampling
	Connected       bool    `json:"connected"`
	TelemetryDelay  float64 `json:"telemetryDelay"` // seconds, the twin's (or configured)
	// TelemetryInterval is the interval in force: IntervalOverride's while
	// a command's override lasts, else TelemetryDelay.
	TelemetryInterval float64           `json:"telemetryInterval"`
	IntervalOverride  *command.Override `json:"telemetryIntervalOverride,omitempty"`
	LastCommand       *command.Outcome  `json:"lastCommand,omitempty"`
	// The temperature alert's debounce and the alerts in force.
	AlertHysteresis  float64           `json:"temperatureAlertHysteresis"`
	AlertMinDuration float64           `json:"temperatureAlertMinDuration"` // seconds
	AlertActive      bool              `json:"alertActive"`
	Alerts           map[string]bool   `json:"alerts"` // each alert kind, in force or not
	AlertThreshold   float64           `json:"temperatureAlertThreshold"`
	DesiredVersion   int64             `json:"desiredVersion"`
	Sources          telemetry.Sources `json:"sources"`

	QueueDepth int   `json:"queueDepth"`
	QueueBytes int64 `json:"queueBytes"`
	// Dropped counts readings lost to a full queue (Queue.Dropped) or, in
	// this run, to a full holding area (HeldDropped).
	Dropped uint64 `json:"droppedMessages"`

	// WaitingForClock: the wall clock is before Config.ClockFloor. Held
	// samples wait for it in memory; HeldDropped of them were dropped.
	WaitingForClock bool   `json:"waitingForClock,omitempty"`
	Held            int    `json:"heldSamples"`
	HeldDropped     uint64 `json:"heldDropped,omitempty"`

	Samples      uint64 `json:"samples"`
	SensorErrors uint64 `json:"sensorErrors"`
	Sent         uint64 `json:"sent"`
	SendErrors   uint64 `json:"sendErrors"`
	QueueErrors  uint64 `json:"queueErrors"`

	LastSample       time.Time `json:"lastSample,omitzero"`
	LastSeq          uint64    `json:"lastSeq,omitzero"`
	LastSend         time.Time `json:"lastSend,omitzero"`
	LastError        string    `json:"lastError,omitempty"`
	LastErrorAt      time.Time `json:"lastErrorAt,omitzero"`
	LastDesiredError string    `json:"lastDesiredError,omitempty"`
	LastProvisioned  time.Time `json:"lastProvisioned,omitzero"`
}

// sources is the env sensor as the last sample found it and the GPS as
// the receiver is now.
func (a *Agent) sources() telemetry.Sources {
	var gps telemetry.Sources
	if a.cfg.GPS != nil {
		gps = telemetry.SourcesOf(telemetry.Sample{GPSSource: a.cfg.GPS.Source(), GPSError: a.cfg.GPS.Problem()})
	}
	a.mu.Lock()
	s := a.st.envSources
	a.mu.Unlock()
	s.GPS, s.GPSError = gps.GPS, gps.GPSError
	return s
}

// Status returns the agent's current state.
func (a *Agent) Status() StatusReport {
	depth, bytes := a.cfg.Queue.Len()
	dropped := a.cfg.Queue.Dropped()
	sources := a.sources()
	waiting := !a.clockSet(a.clock.Now())
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.st
	return StatusReport{
		DeviceID:          a.cfg.DeviceID,
		FirmwareVersion:   a.cfg.FirmwareVersion,
		Running:           a.sampled != nil && !isClosed(a.sampled),
		Connected:         st.connected,
		TelemetryDelay:    st.interval.Seconds(),
		TelemetryInterval: a.effectiveLocked().Seconds(),
		IntervalOverride:  st.override,
		LastCommand:       st.lastCmd,
		AlertHysteresis:   st.alerts.hysteresis,
		AlertMinDuration:  st.alerts.minDuration.Seconds(),
		AlertActive:       st.alerts.any(),
		Alerts:            st.alerts.state(),
		AlertThreshold:    st.threshold,
		DesiredVersion:    st.desiredVersion,
		Sources:           sources,
		QueueDepth:        depth,
		QueueBytes:        bytes,
		Dropped:           dropped + st.heldDropped,
		WaitingForClock:   waiting,
		Held:              len(st.held),
		HeldDropped:       st.heldDropped,
		Samples:           st.samples,
		SensorErrors:      st.sensorErrs,
		Sent:              st.sent,
		SendErrors:        st.sendErrs,
		QueueErrors:       st.queueErrs,
		LastSample:        st.lastSample,
		LastSeq:           st.lastSeq,
		LastSend:          st.lastSend,
		LastError:         st.lastErr,
		LastErrorAt:       st.lastErrAt,
		LastDesiredError:  st.desiredErr,
		LastProvisioned:   st.provisioned,
	}
}
