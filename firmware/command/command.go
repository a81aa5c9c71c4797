// Package command is the tracker's cloud-to-device command set: the
// commands an operator can send a tracker at sea as C2D messages, how their
// JSON is read and checked, and the small record that lets the tracker
// carry a command's effect and outcome across a restart. It decides
// nothing about sampling or sending: firmware/agent carries commands out.
//
// A command is a C2D message whose body is one JSON object naming it in
// "command", with the command's parameters beside it; docs/commands.md is
// the operator's reference. Anything else (not JSON, no or an unknown
// command, a parameter the command does not take, a value out of bounds)
// is rejected with ErrRejected and a reason.
package command

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/reefer/tracker/firmware/telemetry"
)

// Command names.
const (
	SendNow                = "sendNow"                // sample and queue one reading now
	SetTelemetryInterval   = "setTelemetryInterval"   // override the interval, until further notice or for a period
	ClearTelemetryInterval = "clearTelemetryInterval" // end the override: the twin's telemetryDelay applies again
	FlushQueue             = "flushQueue"             // send what is queued now, without waiting out a back-off
	ReportStatus           = "reportStatus"           // report every reported property now
)

// Names lists the commands, for messages and documentation.
var Names = []string{SendNow, SetTelemetryInterval, ClearTelemetryInterval, FlushQueue, ReportStatus}

// MaxOverride bounds setTelemetryInterval's durationSeconds: a voyage leg.
// Longer is "until further notice" (no durationSeconds) and a
// clearTelemetryInterval.
const MaxOverride = 30 * 24 * time.Hour

// MaxBody bounds the body read as a command: the commands are tiny, and a
// C2D message may be up to 64 KB (docs/protocol.md B.4).
const MaxBody = 4 << 10

// ErrRejected wraps every reason a message is not a valid command.
var ErrRejected = errors.New("command rejected")

// Command is one parsed, checked command.
type Command struct {
	Name string
	// Seconds is setTelemetryInterval's new interval.
	Seconds float64
	// For is how long setTelemetryInterval's interval lasts; 0 until
	// further notice.
	For time.Duration
}

// wire is a command's JSON. Pointers tell an absent parameter from zero.
type wire struct {
	Command         *string  `json:"command"`
	Seconds         *float64 `json:"seconds"`
	DurationSeconds *float64 `json:"durationSeconds"`
}

// Parse reads and checks a command from a C2D message body.
func Parse(body []byte) (Command, error) {
	if len(body) > MaxBody {
		return Command{}, fmt.Errorf("%w: body of %d bytes, at most %d", ErrRejected, len(body), MaxBody)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var w wire
	if err := dec.Decode(&w); err != nil {
		return Command{}, fmt.Errorf("%w: not a JSON command object: %w", ErrRejected, err)
	}
	if dec.More() {
		return Command{}, fmt.Errorf("%w: data after the JSON object", ErrRejected)
	}
	if w.Command == nil {
		return Command{}, fmt.Errorf("%w: no \"command\" (one of %v)", ErrRejected, Names)
	}
	c := Command{Name: *w.Command}
	switch c.Name {
	case SetTelemetryInterval:
		if w.Seconds == nil {
			return Command{}, fmt.Errorf("%w: %s needs \"seconds\"", ErrRejected, c.Name)
		}
		lo, hi := telemetry.MinDelay.Seconds(), telemetry.MaxDelay.Seconds()
		if !(*w.Seconds >= lo && *w.Seconds <= hi) {
			return Command{}, fmt.Errorf("%w: %s seconds %v outside %v..%v", ErrRejected, c.Name, *w.Seconds, lo, hi)
		}
		c.Seconds = *w.Seconds
		if w.DurationSeconds != nil {
			if !(*w.DurationSeconds >= 1 && *w.DurationSeconds <= MaxOverride.Seconds()) {
				return Command{}, fmt.Errorf("%w: %s durationSeconds %v outside 1..%v", ErrRejected, c.Name, *w.DurationSeconds, MaxOverride.Seconds())
			}
			c.For = time.Duration(math.Round(*w.DurationSeconds)) * time.Second
		}
	case SendNow, ClearTelemetryInterval, FlushQueue, ReportStatus:
		if w.Seconds != nil || w.DurationSeconds != nil {
			return Command{}, fmt.Errorf("%w: %s takes no parameters", ErrRejected, c.Name)
		}
	default:
		return Command{}, fmt.Errorf("%w: unknown command %q (one of %v)", ErrRejected, c.Name, Names)
	}
	return c, nil
}
