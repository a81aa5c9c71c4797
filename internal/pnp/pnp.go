// Package pnp is the IoT Plug and Play convention for answering a writable
// property (docs/protocol.md B.5): the acknowledgement a device reports
// under the property's own name, its status codes, and a strict reader for
// it. The tracker writes it; the model check, the demo and the tests that
// read a twin parse it with Parse, so the shape is stated once.
package pnp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// Acknowledgement codes (ac), HTTP status codes by convention
// (docs/protocol.md B.5). The tracker applies a value at once, so it never
// answers 202 (in progress).
const (
	// Accepted: the desired value is in use (as Value says, which may be
	// the desired value adjusted; Description then says how).
	Accepted = 200
	// SetByDevice: there is no desired value; Value is the device's own
	// (the configured value) and Version is 0.
	SetByDevice = 203
	// Rejected: the desired value was refused; Value is the one still in
	// use.
	Rejected = 400
)

// Ack is a writable property's reported value under the conventions:
// {"value": …, "ac": code, "av": desired $version, "ad": "…"}.
type Ack struct {
	Value       any    `json:"value"`
	Code        int    `json:"ac"`
	Version     int64  `json:"av"`
	Description string `json:"ad,omitempty"`
}

// ErrNotAck is wrapped by Parse's errors.
var ErrNotAck = errors.New("not a Plug and Play writable-property acknowledgement")

// members are the acknowledgement's members; the first three are required.
var members = []string{"value", "ac", "av", "ad"}

// Parse reads an acknowledgement strictly: a JSON object with value, ac
// and av, optionally ad, and nothing else; ac a status code (100 to 599),
// av a version (an integer, not negative), ad a string. Numbers inside
// Value are json.Number, so a checker sees them as written.
func Parse(b []byte) (Ack, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil || m == nil {
		return Ack{}, fmt.Errorf("%w: %s is not a JSON object", ErrNotAck, clip(b))
	}
	var errs []error
	for k := range m {
		if !slices.Contains(members, k) {
			errs = append(errs, fmt.Errorf("unknown member %q", k))
		}
	}
	for _, k := range members[:3] {
		if _, ok := m[k]; !ok {
			errs = append(errs, fmt.Errorf("no %q", k))
		}
	}
	var a Ack
	if raw, ok := m["value"]; ok {
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber()
		if err := d.Decode(&a.Value); err != nil {
			errs = append(errs, fmt.Errorf("value: %w", err))
		}
	}
	if raw, ok := m["ac"]; ok {
		if err := json.Unmarshal(raw, &a.Code); err != nil || a.Code < 100 || a.Code > 599 {
			errs = append(errs, fmt.Errorf("ac %s is not a status code", raw))
		}
	}
	if raw, ok := m["av"]; ok {
		if err := json.Unmarshal(raw, &a.Version); err != nil || a.Version < 0 {
			errs = append(errs, fmt.Errorf("av %s is not a version", raw))
		}
	}
	if raw, ok := m["ad"]; ok {
		if err := json.Unmarshal(raw, &a.Description); err != nil || string(raw) == "null" {
			errs = append(errs, fmt.Errorf("ad %s is not a string", raw))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Ack{}, fmt.Errorf("%w: %s: %w", ErrNotAck, clip(b), err)
	}
	return a, nil
}

// From reads an acknowledgement from a decoded JSON value, such as a
// member of a twin's reported section read as map[string]any.
func From(v any) (Ack, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return Ack{}, fmt.Errorf("%w: %w", ErrNotAck, err)
	}
	return Parse(b)
}

// Number is Value as a float64, when it is a number.
func (a Ack) Number() (float64, bool) {
	switch v := a.Value.(type) {
	case json.Number:
		f, err := v.Float64()
		return f, err == nil
	case float64:
		return v, true
	}
	return 0, false
}

func clip(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "…"
	}
	return string(b)
}
