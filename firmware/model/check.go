package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/reefer/tracker/internal/pnp"
)

// Find returns the content named name, or nil.
func (in *Interface) Find(name string) *Content {
	for i := range in.Contents {
		if in.Contents[i].Name == name {
			return &in.Contents[i]
		}
	}
	return nil
}

// Names returns the names of the contents of one kind (Telemetry, Property
// or Command), in the model's order.
func (in *Interface) Names(kind string) []string {
	var out []string
	for i := range in.Contents {
		if in.Contents[i].Kind() == kind {
			out = append(out, in.Contents[i].Name)
		}
	}
	return out
}

// Unused returns the declared names of one kind that no document uses as
// a top-level member: with every message a tracker sent (or every reported
// section), what the model declares but the tracker never sends. A
// document that is not a JSON object uses nothing.
func (in *Interface) Unused(kind string, docs ...[]byte) []string {
	used := map[string]bool{}
	for _, d := range docs {
		var m map[string]json.RawMessage
		if json.Unmarshal(d, &m) == nil {
			for k := range m {
				used[k] = true
			}
		}
	}
	var out []string
	for _, name := range in.Names(kind) {
		if !used[name] {
			out = append(out, name)
		}
	}
	return out
}

// CheckTelemetry judges a message body: every member must be a declared
// Telemetry and its value must fit the declared schema. It returns every
// mismatch.
func (in *Interface) CheckTelemetry(body []byte) error {
	return in.checkDoc(body, "Telemetry", false)
}

// CheckReported judges a reported-properties document (a patch, or the
// twin's reported section: members starting with "$" are the hub's and
// are skipped): every member must be a declared Property and its value
// must fit the schema; a writable property's value must be the Plug and
// Play acknowledgement (docs/protocol.md B.5, pnp.Parse) whose "value"
// fits the schema. null is accepted anywhere: in a patch it deletes
// the member (docs/protocol.md B.5).
func (in *Interface) CheckReported(doc []byte) error {
	return in.checkDoc(doc, "Property", true)
}

// CheckResponse judges a direct method's answer against the declared
// Command: the command must exist, and when it declares a response the
// payload must fit it; otherwise the payload need only be JSON.
func (in *Interface) CheckResponse(command string, payload []byte) error {
	c := in.Find(command)
	if c == nil || c.Kind() != "Command" {
		return fmt.Errorf("model: %q is not a declared Command", command)
	}
	v, err := decode(payload)
	if err != nil {
		return fmt.Errorf("model: %s response: %w", command, err)
	}
	if c.Response == nil {
		return nil
	}
	return in.check(c.Response.Schema, v, false, command+" response")
}

func (in *Interface) checkDoc(doc []byte, kind string, nullOK bool) error {
	v, err := decode(doc)
	if err != nil {
		return fmt.Errorf("model: %w", err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return fmt.Errorf("model: %s document is %T, not an object", kind, v)
	}
	var errs []error
	for _, k := range sortedKeys(m) {
		if kind == "Property" && strings.HasPrefix(k, "$") {
			continue
		}
		c := in.Find(k)
		if c == nil || c.Kind() != kind {
			errs = append(errs, fmt.Errorf("model: %q is not a declared %s", k, kind))
			continue
		}
		if kind == "Property" && c.Writable && m[k] != nil {
			errs = append(errs, in.checkAck(c, m[k]))
			continue
		}
		if err := in.check(c.Schema, m[k], nullOK, k); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// checkAck judges the reported value of a writable property: an
// acknowledgement carrying a value of the property's schema.
func (in *Interface) checkAck(c *Content, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("model: %s: %w", c.Name, err)
	}
	ack, err := pnp.Parse(b)
	if err != nil {
		return fmt.Errorf("model: writable property %s: %w", c.Name, err)
	}
	return in.check(c.Schema, ack.Value, false, c.Name+".value")
}

func decode(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if d.More() {
		return nil, errors.New("trailing data after the JSON value")
	}
	return v, nil
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// check judges one value against a schema; path names it in errors.
func (in *Interface) check(s *Schema, v any, nullOK bool, path string) error {
	if v == nil {
		if nullOK {
			return nil
		}
		return fmt.Errorf("model: %s is null", path)
	}
	if s.Ref != "" {
		if named := in.named[s.Ref]; named != nil {
			return in.check(named, v, nullOK, path)
		}
		return checkPrimitive(s.Ref, v, path)
	}
	switch s.Type[0] {
	case "Object":
		m, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("model: %s is %s; want an object", path, show(v))
		}
		var errs []error
		for _, k := range sortedKeys(m) {
			i := slices.IndexFunc(s.Fields, func(f Field) bool { return f.Name == k })
			if i < 0 {
				errs = append(errs, fmt.Errorf("model: %s.%s is not a declared field", path, k))
				continue
			}
			if err := in.check(s.Fields[i].Schema, m[k], nullOK, path+"."+k); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	case "Enum":
		for _, ev := range s.EnumValues {
			if fmt.Sprint(ev.EnumValue) == fmt.Sprint(v) {
				if err := checkPrimitive(s.ValueSchema, v, path); err == nil {
					return nil
				}
			}
		}
		return fmt.Errorf("model: %s is %s; not one of the Enum's values", path, show(v))
	}
	return fmt.Errorf("model: %s: schema %v not supported", path, s.Type)
}

func checkPrimitive(name string, v any, path string) error {
	fail := func(want string) error { return fmt.Errorf("model: %s is %s; want %s (%s)", path, show(v), want, name) }
	switch name {
	case "boolean":
		if _, ok := v.(bool); !ok {
			return fail("true or false")
		}
	case "string":
		if _, ok := v.(string); !ok {
			return fail("a string")
		}
	case "double", "float":
		n, ok := v.(json.Number)
		f, err := n.Float64()
		if !ok || err != nil || math.IsInf(f, 0) {
			return fail("a finite number")
		}
		if name == "float" && math.Abs(f) > math.MaxFloat32 {
			return fail("a number within float32")
		}
	case "integer", "long":
		n, ok := v.(json.Number)
		i, err := n.Int64()
		if !ok || err != nil {
			return fail("an integral number")
		}
		if name == "integer" && i != int64(int32(i)) {
			return fail("a 32-bit integer")
		}
	case "dateTime":
		s, ok := v.(string)
		if _, err := time.Parse(time.RFC3339Nano, s); !ok || err != nil {
			return fail("an RFC 3339 date and time")
		}
	case "date":
		s, ok := v.(string)
		if _, err := time.Parse(time.DateOnly, s); !ok || err != nil {
			return fail("an RFC 3339 date")
		}
	case "time", "duration":
		if _, ok := v.(string); !ok {
			return fail("a string")
		}
	default:
		return fmt.Errorf("model: %s: unknown schema %q", path, name)
	}
	return nil
}

func show(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
