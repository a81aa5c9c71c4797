package iothub

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
)

// Desired is a desired-properties update handed to Config.OnDesired.
type Desired struct {
	Version int64
	// Full is true when Props is the whole desired section (the twin GET after
	// every connect, or a resync); false for a patch, where null means the key
	// was deleted (docs/protocol.md B.5).
	Full bool
	// Props is the desired properties, a JSON object, without the
	// protocol's "$version" (that is Version) and "$metadata" members.
	Props json.RawMessage
}

// Twin is the device's view of its twin (docs/protocol.md B.5: only the two sections).
type Twin struct {
	Desired         json.RawMessage
	Reported        json.RawMessage
	DesiredVersion  int64
	ReportedVersion int64
}

func parseTwin(body []byte) (*Twin, error) {
	var raw struct {
		Desired  json.RawMessage `json:"desired"`
		Reported json.RawMessage `json:"reported"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, fmt.Errorf("twin body: %w", err)
	}
	if len(raw.Desired) == 0 || string(raw.Desired) == "null" {
		return nil, errors.New("twin body: no desired section")
	}
	t := &Twin{Desired: raw.Desired, Reported: raw.Reported}
	var err error
	if t.DesiredVersion, err = sectionVersion(raw.Desired); err != nil {
		return nil, fmt.Errorf("twin desired: %w", err)
	}
	if len(raw.Reported) > 0 && string(raw.Reported) != "null" {
		if t.ReportedVersion, err = sectionVersion(raw.Reported); err != nil {
			return nil, fmt.Errorf("twin reported: %w", err)
		}
	}
	return t, nil
}

// sectionVersion reads "$version" from a twin section or patch.
func sectionVersion(section []byte) (int64, error) {
	var v struct {
		Version *int64 `json:"$version"`
	}
	if err := json.Unmarshal(section, &v); err != nil {
		return 0, err
	}
	if v.Version == nil {
		return 0, errors.New("no $version")
	}
	return *v.Version, nil
}

// properties drops the protocol's members ("$version", "$metadata") from a
// desired section or patch, leaving the properties alone (docs/protocol.md B.5). What
// is not a JSON object is passed on as it is.
func properties(section json.RawMessage) json.RawMessage {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(section, &m); err != nil || m == nil {
		return section
	}
	delete(m, "$version")
	delete(m, "$metadata")
	b, err := json.Marshal(m)
	if err != nil {
		return section
	}
	return b
}

// desiredSeq orders desired-property updates (docs/protocol.md B.5). paho delivers each
// message on its own goroutine (SetOrderMatters(false)), so patches can
// arrive out of order; and after a (re)connect patches can race the twin
// GET. The sequencer delivers strictly increasing versions:
//   - patches that arrive before the GET of this connection are held;
//   - the GET's desired section is delivered whole, then held patches newer
//     than it, in order; anything <= the last delivered version is dropped;
//   - a patch that skips a version is held and a resync (a fresh GET) is
//     requested; the missing patch, if it turns up first, closes the gap.
//
// It is not safe for concurrent use; the Client guards it.
type desiredSeq struct {
	last      int64 // last delivered version
	delivered bool  // something was delivered at all
	synced    bool  // the GET of the current connection was applied
	pending   map[int64]json.RawMessage
}

// reset starts a new connection: hold patches until the next GET.
func (q *desiredSeq) reset() {
	q.synced = false
	q.pending = nil
}

// full applies a twin GET result.
func (q *desiredSeq) full(version int64, desired json.RawMessage) (out []Desired, resync bool) {
	if !q.delivered || version > q.last {
		out = append(out, Desired{Version: version, Full: true, Props: desired})
		q.last, q.delivered = version, true
	}
	q.synced = true
	more, resync := q.drain()
	return append(out, more...), resync
}

// patch applies a notification with the given version.
func (q *desiredSeq) patch(version int64, body json.RawMessage) (out []Desired, resync bool) {
	if q.delivered && version <= q.last {
		return nil, false // stale: docs/protocol.md B.5
	}
	if q.pending == nil {
		q.pending = make(map[int64]json.RawMessage)
	}
	q.pending[version] = body
	if !q.synced {
		return nil, false // the GET will decide
	}
	return q.drain()
}

func (q *desiredSeq) drain() (out []Desired, resync bool) {
	for {
		body, ok := q.pending[q.last+1]
		if !ok {
			break
		}
		delete(q.pending, q.last+1)
		q.last++
		out = append(out, Desired{Version: q.last, Props: body})
	}
	for v := range q.pending {
		if v <= q.last {
			delete(q.pending, v)
		}
	}
	return out, len(q.pending) > 0
}

// pendingVersions is for tests and logs.
func (q *desiredSeq) pendingVersions() []int64 {
	vs := make([]int64, 0, len(q.pending))
	for v := range q.pending {
		vs = append(vs, v)
	}
	sort.Slice(vs, func(i, j int) bool { return vs[i] < vs[j] })
	return vs
}

// reportedPatch validates and encodes a reported-properties patch. docs/protocol.md F:
// the reported section is at most 32 KB; a patch larger than that can only
// be rejected, so refuse it before sending.
func reportedPatch(patch any) ([]byte, error) {
	var b []byte
	switch p := patch.(type) {
	case json.RawMessage:
		b = p
	case []byte:
		b = p
	default:
		var err error
		if b, err = json.Marshal(patch); err != nil {
			return nil, fmt.Errorf("reported patch: %w", err)
		}
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil || obj == nil {
		return nil, fmt.Errorf("%w: reported patch must be a JSON object", ErrBadRequest)
	}
	if len(b) > MaxReportedSize {
		return nil, fmt.Errorf("%w: reported patch is %d bytes, limit %d (docs/protocol.md F)", ErrTooLarge, len(b), MaxReportedSize)
	}
	for k := range obj {
		if err := validTwinKey(k); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
		}
	}
	return b, nil
}

// validTwinKey applies docs/protocol.md F to top-level keys: no control characters,
// ".", "$" or space, at most 1 KB.
func validTwinKey(k string) error {
	if k == "" || len(k) > 1024 {
		return fmt.Errorf("twin key %q: empty or longer than 1 KB", k)
	}
	for _, r := range k {
		if r < 0x20 || r == 0x7f || r == '.' || r == '$' || r == ' ' {
			return fmt.Errorf("twin key %q: character %q not allowed", k, r)
		}
	}
	return nil
}
