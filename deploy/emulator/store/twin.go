package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// TwinCollection is one twin section (desired or reported): its properties,
// its $version and its $metadata. It marshals the way IoT Hub shows it to
// the service: properties plus "$metadata" and "$version" (docs/protocol.md E).
type TwinCollection struct {
	Props    map[string]any
	Version  int64
	Metadata map[string]any // mirrors Props; each node has $lastUpdated(+Version)
}

// MarshalJSON implements json.Marshaler (service view, with $metadata).
func (c TwinCollection) MarshalJSON() ([]byte, error) {
	m := make(map[string]any, len(c.Props)+2)
	for k, v := range c.Props {
		m[k] = v
	}
	meta := c.Metadata
	if meta == nil {
		meta = map[string]any{}
	}
	m["$metadata"] = meta
	m["$version"] = c.Version
	return json.Marshal(m)
}

// UnmarshalJSON implements json.Unmarshaler; it splits out $version and
// $metadata.
func (c *TwinCollection) UnmarshalJSON(b []byte) error {
	m, err := decodeObject(b)
	if err != nil {
		return err
	}
	c.Version = 0
	if v, ok := m["$version"]; ok {
		if n, ok := v.(json.Number); ok {
			c.Version, _ = n.Int64()
		}
		delete(m, "$version")
	}
	c.Metadata = nil
	if md, ok := m["$metadata"].(map[string]any); ok {
		c.Metadata = md
	}
	delete(m, "$metadata")
	c.Props = m
	return nil
}

// DeviceView returns the section as a device sees it in a twin GET: the
// properties plus "$version", no $metadata (docs/protocol.md B.5).
func (c TwinCollection) DeviceView() map[string]any {
	m := make(map[string]any, len(c.Props)+1)
	for k, v := range c.Props {
		m[k] = v
	}
	m["$version"] = c.Version
	return m
}

func (c TwinCollection) clone() TwinCollection {
	return TwinCollection{Props: cloneMap(c.Props), Version: c.Version, Metadata: cloneMap(c.Metadata)}
}

// DecodeJSONObject decodes a JSON object keeping numbers as json.Number, so
// integers survive a round trip exactly. Callers use it for twin patches.
func DecodeJSONObject(b []byte) (map[string]any, error) { return decodeObject(b) }

func decodeObject(b []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("trailing data after JSON object")
	}
	if m == nil {
		return nil, fmt.Errorf("not a JSON object")
	}
	return m, nil
}

// normalize converts numbers decoded as float64 (from a caller that used
// plain json.Unmarshal, or Go literals) to json.Number so validation and
// storage treat every map alike.
func normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = normalize(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = normalize(e)
		}
		return out
	case float64:
		b, _ := json.Marshal(x)
		return json.Number(b)
	case float32, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		b, _ := json.Marshal(x)
		return json.Number(b)
	default:
		// Strings, bools, nil, json.Number pass; anything else is
		// round-tripped through JSON.
		if _, ok := x.(string); ok || x == nil {
			return x
		}
		if _, ok := x.(bool); ok {
			return x
		}
		if _, ok := x.(json.Number); ok {
			return x
		}
		b, err := json.Marshal(x)
		if err != nil {
			return nil
		}
		var out any
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		_ = dec.Decode(&out)
		return out
	}
}

func cloneMap(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = cloneValue(v)
	}
	return out
}

func cloneValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		return cloneMap(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = cloneValue(e)
		}
		return out
	default:
		return v
	}
}

// mergePatch merges patch into dst (JSON merge-patch: objects merge, null
// deletes, anything else replaces) and records $lastUpdated metadata for
// every touched node (docs/protocol.md B.5, E).
func mergePatch(dst, meta, patch map[string]any, now time.Time, version int64) {
	ts := now.UTC().Format(azureTimeLayout)
	for k, pv := range patch {
		if pv == nil {
			delete(dst, k)
			delete(meta, k)
			continue
		}
		if po, ok := pv.(map[string]any); ok {
			do, ok := dst[k].(map[string]any)
			if !ok {
				do = map[string]any{}
				dst[k] = do
			}
			mo, ok := meta[k].(map[string]any)
			if !ok {
				mo = map[string]any{}
				meta[k] = mo
			}
			mo["$lastUpdated"] = ts
			mo["$lastUpdatedVersion"] = version
			mergePatch(do, mo, po, now, version)
			continue
		}
		dst[k] = cloneValue(pv)
		meta[k] = map[string]any{"$lastUpdated": ts, "$lastUpdatedVersion": version}
	}
}

// applyPatch applies a patch to a twin section and bumps its version.
func (c *TwinCollection) applyPatch(patch map[string]any, now time.Time) {
	if c.Props == nil {
		c.Props = map[string]any{}
	}
	if c.Metadata == nil {
		c.Metadata = map[string]any{}
	}
	c.Version++
	mergePatch(c.Props, c.Metadata, patch, now, c.Version)
	c.Metadata["$lastUpdated"] = now.UTC().Format(azureTimeLayout)
	c.Metadata["$lastUpdatedVersion"] = c.Version
}

// replace sets the section's properties wholesale and bumps its version.
func (c *TwinCollection) replace(props map[string]any, now time.Time) {
	c.Props = map[string]any{}
	c.Metadata = map[string]any{}
	c.Version++
	mergePatch(c.Props, c.Metadata, props, now, c.Version)
	c.Metadata["$lastUpdated"] = now.UTC().Format(azureTimeLayout)
	c.Metadata["$lastUpdatedVersion"] = c.Version
}

// Twin limits (docs/protocol.md F).
const (
	MaxTagsBytes    = 8 * 1024
	MaxSectionBytes = 32 * 1024
	MaxValueBytes   = 4 * 1024
	MaxKeyBytes     = 1024
	MaxTwinDepth    = 10
	maxTwinInteger  = 4503599627370495
	minTwinInteger  = -4503599627370496
)

// ValidateTwinPatch checks a twin patch against the key and value rules of
// docs/protocol.md F. It returns an ErrTwinInvalid-wrapping *Error.
func ValidateTwinPatch(patch map[string]any) error {
	return validateObject(patch, 1)
}

func validateObject(m map[string]any, depth int) error {
	if depth > MaxTwinDepth {
		return ErrTwinInvalid.With("nesting deeper than %d levels", MaxTwinDepth)
	}
	for k, v := range m {
		if err := validateKey(k); err != nil {
			return err
		}
		if err := validateValue(k, v, depth); err != nil {
			return err
		}
	}
	return nil
}

func validateKey(k string) error {
	if k == "" {
		return ErrTwinInvalid.With("empty property name")
	}
	if len(k) > MaxKeyBytes {
		return ErrTwinInvalid.With("property name longer than %d bytes", MaxKeyBytes)
	}
	if !utf8.ValidString(k) {
		return ErrTwinInvalid.With("property name %q is not UTF-8", k)
	}
	for _, r := range k {
		if r < 0x20 || r == 0x7f || r == '.' || r == '$' || r == ' ' {
			return ErrTwinInvalid.With("property name %q contains %q", k, r)
		}
	}
	return nil
}

func validateValue(k string, v any, depth int) error {
	switch x := v.(type) {
	case nil, bool:
		return nil
	case string:
		if len(x) > MaxValueBytes {
			return ErrTwinInvalid.With("value of %q longer than %d bytes", k, MaxValueBytes)
		}
	case json.Number:
		if i, err := x.Int64(); err == nil {
			if i > maxTwinInteger || i < minTwinInteger {
				return ErrTwinInvalid.With("integer %q out of range", k)
			}
		} else if !strings.ContainsAny(string(x), ".eE") {
			return ErrTwinInvalid.With("integer %q out of range", k)
		}
	case map[string]any:
		if err := validateObject(x, depth+1); err != nil {
			return err
		}
	case []any:
		if depth+1 > MaxTwinDepth {
			return ErrTwinInvalid.With("nesting deeper than %d levels", MaxTwinDepth)
		}
		for _, e := range x {
			if err := validateValue(k, e, depth+1); err != nil {
				return err
			}
		}
	default:
		return ErrTwinInvalid.With("unsupported value type %T for %q", v, k)
	}
	return nil
}

// sectionSize is the JSON size of a section's properties, excluding
// $version and $metadata (docs/protocol.md F).
func sectionSize(props map[string]any) int {
	b, _ := json.Marshal(props)
	return len(b)
}
