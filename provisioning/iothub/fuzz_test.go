package iothub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Everything the hub sends arrives as a topic and a payload (docs/protocol.md B.4-B.6).
// Seeds: testdata/fuzz/Fuzz*/ holds real hub topics and twin documents.

// FuzzDecodePropertyBag: a C2D property bag (docs/protocol.md B.4) decodes without
// panicking, and once decoded, encoding and decoding it again changes
// nothing: the client's own bag (B.3) says the same thing back.
func FuzzDecodePropertyBag(f *testing.F) {
	f.Add("$.mid=1d6f&$.to=%2Fdevices%2Fsensor-thl-001%2Fmessages%2FdeviceBound&$.ce=utf-8&$.ct=application%2Fjson&command=reboot")
	f.Add("prop1&prop2=&prop3=a%20string")
	f.Add("%24.mid=7&%24.ctime=2026-12-03T10%3A00%3A00.123Z&%24.exp=2026-12-03T11%3A00%3A00Z")
	f.Fuzz(func(t *testing.T, bag string) {
		var m Message
		if err := DecodePropertyBag(bag, &m); err != nil {
			return
		}
		enc, err := EncodePropertyBag(&m)
		if err != nil {
			if !errors.Is(err, ErrInvalidProperty) {
				t.Fatalf("EncodePropertyBag error %v does not wrap ErrInvalidProperty", err)
			}
			return // e.g. an unknown "$.x" system property: ours never sends one
		}
		checkTopicSafe(t, enc)
		var m2 Message
		if err := DecodePropertyBag(enc, &m2); err != nil {
			t.Fatalf("our encoding %q of %q does not decode: %v", enc, bag, err)
		}
		enc2, err := EncodePropertyBag(&m2)
		if err != nil || enc2 != enc {
			t.Fatalf("bag %q: encode/decode is not stable: %q then %q (%v)", bag, enc, enc2, err)
		}
		if !sameMessage(m, m2) && m.CreationTime.Equal(m.CreationTime.Truncate(time.Millisecond)) {
			t.Fatalf("bag %q decodes to %+v, its re-encoding %q to %+v", bag, m, enc, m2)
		}
	})
}

// FuzzEncodePropertyBag: any application property and system property
// values either encode to a bag that cannot add a topic level or a
// wildcard and that decodes to the same message, or are refused with
// ErrInvalidProperty.
func FuzzEncodePropertyBag(f *testing.F) {
	f.Add("temperatureAlert", "true", "sensor-thl-001-42", "application/json")
	f.Add("a b+c", "x&y=z#/", "$.mid", "")
	f.Fuzz(func(t *testing.T, key, value, mid, ct string) {
		m := Message{MessageID: mid, ContentType: ct, ContentEncoding: "utf-8",
			Properties: map[string]string{key: value}}
		enc, err := EncodePropertyBag(&m)
		if err != nil {
			if !errors.Is(err, ErrInvalidProperty) {
				t.Fatalf("error %v does not wrap ErrInvalidProperty", err)
			}
			return
		}
		checkTopicSafe(t, enc)
		var got Message
		if err := DecodePropertyBag(enc, &got); err != nil {
			t.Fatalf("%q does not decode: %v", enc, err)
		}
		if !sameMessage(m, got) {
			t.Fatalf("%+v encoded as %q decodes to %+v", m, enc, got)
		}
		if _, err := parseC2D("d", "devices/d/messages/devicebound/"+enc, nil); err != nil {
			t.Fatalf("as a C2D topic: %v", err)
		}
	})
}

// sameMessage compares the property fields; an empty map equals nil.
func sameMessage(a, b Message) bool {
	if len(a.Properties) == 0 && len(b.Properties) == 0 {
		a.Properties, b.Properties = nil, nil
	}
	ta, tb := a.CreationTime, b.CreationTime
	a.CreationTime, b.CreationTime = time.Time{}, time.Time{}
	a.Body, b.Body = nil, nil
	return ta.Equal(tb) && reflect.DeepEqual(a, b)
}

// checkTopicSafe: a bag must stay inside its topic level and never carry
// an MQTT wildcard or NUL (MQTT 3.1.1 section 4.7).
func checkTopicSafe(t *testing.T, bag string) {
	t.Helper()
	if strings.ContainsAny(bag, "/#+\x00") {
		t.Fatalf("bag %q contains '/', '#', '+' or NUL", bag)
	}
}

// FuzzHubTopics feeds one topic to every parser of hub-to-device topics
// (docs/protocol.md B.5, B.6): none panics; what they accept is well formed; and the
// reply topic for an accepted method request carries its $rid back.
func FuzzHubTopics(f *testing.F) {
	f.Add("$iothub/twin/res/200/?$rid=1")
	f.Add("$iothub/twin/res/204/?$rid=2&$version=6")
	f.Add("$iothub/twin/PATCH/properties/desired/?$version=8")
	f.Add("$iothub/methods/POST/getStatus/?$rid=1")
	f.Fuzz(func(t *testing.T, topic string) {
		if r, err := parseTwinResponseTopic(topic); err == nil {
			if r.Status < 100 || r.Status > 999 || r.RID == "" {
				t.Fatalf("twin response %q parsed as %+v", topic, r)
			}
		}
		if v, ok, err := parseDesiredTopic(topic); err != nil && ok {
			t.Fatalf("desired %q: ok with error %v", topic, err)
		} else if !ok && v != 0 {
			t.Fatalf("desired %q: version %d without ok", topic, v)
		}
		name, rid, err := parseMethodTopic(topic)
		if err != nil {
			return
		}
		if name == "" || strings.Contains(name, "/") || rid == "" {
			t.Fatalf("method %q parsed as name %q rid %q", topic, name, rid)
		}
		reply := methodResponseTopic(200, rid)
		if strings.ContainsAny(reply, "#+\x00") {
			t.Fatalf("reply topic %q has a wildcard or NUL", reply)
		}
		r, err := parseTwinResponseTopic(strings.Replace(reply, "$iothub/methods/res/", twinResPrefix, 1))
		if err != nil || r.RID != rid || r.Status != 200 {
			t.Fatalf("reply %q does not carry $rid %q back: %+v %v", reply, rid, r, err)
		}
	})
}

// FuzzMethod: a method request (topic and payload) reaches the handler and
// the reply is an integer status with a JSON (or empty) body within the
// 128 KB limit (docs/protocol.md B.6, F), whatever the payload. The handler here
// answers with the payload it got, as an echo would.
func FuzzMethod(f *testing.F) {
	f.Add("$iothub/methods/POST/getStatus/?$rid=1", []byte(``))
	f.Add("$iothub/methods/POST/sendNow/?$rid=2", []byte(`{"reason":"test"}`))
	f.Add("$iothub/methods/POST/echo/?$rid=3", []byte(`not json`))
	c := &Client{log: slog.New(slog.DiscardHandler), ctx: context.Background()}
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		name, _, err := parseMethodTopic(topic)
		if err != nil {
			return
		}
		echo := func(_ context.Context, in json.RawMessage) (int, any) {
			if len(in) == 0 {
				return 204, nil
			}
			return 200, in
		}
		status, body := c.runMethod(name, echo, payload)
		switch {
		case len(payload) == 0 && (status != 204 || body != nil):
			t.Fatalf("empty payload: %d %q", status, body)
		case len(payload) > 0 && status != 200 && status != 500:
			t.Fatalf("status %d", status)
		case len(body) > MaxMethodPayload:
			t.Fatalf("reply of %d bytes over the limit", len(body))
		case len(body) > 0 && !json.Valid(body):
			t.Fatalf("reply %q is not JSON", body)
		case status == 200 && json.Valid(payload) && len(payload) <= MaxMethodPayload && !jsonEqual(body, payload):
			t.Fatalf("echo of %q came back as %q", payload, body)
		}
	})
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && reflect.DeepEqual(x, y)
}

// FuzzTwinDocument: a twin GET body (docs/protocol.md B.5) parses or is refused; an
// accepted one has a JSON desired section whose $version is the one
// reported, and handing it to a fresh sequencer delivers exactly it.
func FuzzTwinDocument(f *testing.F) {
	f.Add([]byte(`{"desired":{"telemetryDelay":1,"$version":1},"reported":{"$version":1}}`))
	f.Add([]byte(`{"desired":{"telemetrySendFrequency":"5m","$version":12},"reported":{"telemetrySendFrequency":"5m","batteryLevel":55,"$version":123}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		tw, err := parseTwin(body)
		if err != nil {
			return
		}
		if !json.Valid(tw.Desired) {
			t.Fatalf("desired section %q is not JSON", tw.Desired)
		}
		if v, err := sectionVersion(tw.Desired); err != nil || v != tw.DesiredVersion {
			t.Fatalf("desired $version %d, section says %d (%v)", tw.DesiredVersion, v, err)
		}
		var q desiredSeq
		out, resync := q.full(tw.DesiredVersion, tw.Desired)
		if resync || len(out) != 1 || !out[0].Full || out[0].Version != tw.DesiredVersion {
			t.Fatalf("fresh sequencer given the GET delivered %+v (resync %v)", out, resync)
		}
	})
}

// FuzzDesiredPatch: a desired notification's topic and body (docs/protocol.md B.5)
// give a version the way onDesiredPatch reads them (the topic's $version,
// else the body's), or an error, never a panic; and a sequencer that has
// applied the version before delivers the patch as it came.
func FuzzDesiredPatch(f *testing.F) {
	f.Add("$iothub/twin/PATCH/properties/desired/?$version=8", []byte(`{"telemetrySendFrequency":"5m","route":null,"$version":8}`))
	f.Add("$iothub/twin/PATCH/properties/desired/", []byte(`{"telemetryDelay":3,"$version":2}`))
	f.Fuzz(func(t *testing.T, topic string, body []byte) {
		v, ok, err := parseDesiredTopic(topic)
		if err == nil && !ok {
			v, err = sectionVersion(body)
		}
		if err != nil || v == math.MinInt64 {
			return
		}
		var q desiredSeq
		q.full(v-1, json.RawMessage(`{}`))
		out, resync := q.patch(v, body)
		if resync || len(out) != 1 || out[0].Full || out[0].Version != v || !bytes.Equal(out[0].Props, body) {
			t.Fatalf("patch %d after %d delivered %+v (resync %v)", v, v-1, out, resync)
		}
	})
}

// FuzzDesiredSequence drives the sequencer with a fuzzed mix of twin GETs
// and patches (each byte pair is an operation and a version offset) and
// checks docs/protocol.md B.5's rule: delivered versions only go up, a patch is
// delivered only right after its predecessor, and a resync is asked for
// when, and only when, a gap is open.
func FuzzDesiredSequence(f *testing.F) {
	f.Add([]byte{0, 5, 1, 6, 1, 8, 1, 7})
	f.Add([]byte{1, 3, 2, 0, 0, 2, 1, 4})
	f.Fuzz(func(t *testing.T, ops []byte) {
		var q desiredSeq
		var last int64
		delivered := false
		for i := 0; i+1 < len(ops); i += 2 {
			v := int64(ops[i+1])
			var out []Desired
			var resync bool
			stale := delivered && v <= last
			switch ops[i] % 3 {
			case 0:
				out, resync = q.full(v, json.RawMessage(`{}`))
				stale = false // a GET is applied (or not) but always drains
			case 1:
				out, resync = q.patch(v, json.RawMessage(`{}`))
			case 2:
				q.reset() // a new connection
				continue
			}
			for _, d := range out {
				if delivered && d.Version <= last {
					t.Fatalf("ops %v: version %d delivered after %d", ops, d.Version, last)
				}
				if !d.Full && delivered && d.Version != last+1 {
					t.Fatalf("ops %v: patch %d delivered after %d (a gap)", ops, d.Version, last)
				}
				last, delivered = d.Version, true
			}
			// A resync is asked for only with a gap open, and always when an
			// applied update leaves one open; a stale patch changes nothing
			// and need not ask again.
			open := len(q.pendingVersions()) > 0
			if resync && !open || q.synced && !stale && open && !resync {
				t.Fatalf("ops %v: resync %v with pending %v", ops, resync, q.pendingVersions())
			}
		}
	})
}

// FuzzReportedPatch: a reported patch is sent only when it is a JSON
// object within 32 KB whose keys the hub takes (docs/protocol.md F); anything else is
// refused with ErrBadRequest or ErrTooLarge before it leaves the device.
func FuzzReportedPatch(f *testing.F) {
	f.Add([]byte(`{"telemetryDelay":3,"temperatureAlertThreshold":30,"lastDesiredError":null}`))
	f.Add([]byte(`{"a.b":1}`))
	f.Fuzz(func(t *testing.T, patch []byte) {
		b, err := reportedPatch(json.RawMessage(patch))
		if err != nil {
			if !errors.Is(err, ErrBadRequest) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("error %v wraps neither ErrBadRequest nor ErrTooLarge", err)
			}
			return
		}
		var obj map[string]json.RawMessage
		if json.Unmarshal(b, &obj) != nil || obj == nil || len(b) > MaxReportedSize {
			t.Fatalf("accepted %q: not an object within %d bytes", b, MaxReportedSize)
		}
		for k := range obj {
			if validTwinKey(k) != nil {
				t.Fatalf("accepted key %q", k)
			}
		}
	})
}
