package service

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/reefer/tracker/deploy/emulator/store"
)

// Event is one device-to-cloud message as the monitoring routes show it,
// close to what `az iot hub monitor-events` prints.
type Event struct {
	DeviceID     string `json:"deviceId"`
	Hub          string `json:"hub"`
	EnqueuedTime string `json:"enqueuedTime"`
	MessageID    string `json:"messageId,omitempty"`
	// Payload is the body itself when it is JSON, a string when it is
	// other UTF-8 text, and base64 (PayloadEncoding "base64") otherwise.
	Payload          json.RawMessage   `json:"payload"`
	PayloadEncoding  string            `json:"payloadEncoding,omitempty"`
	SystemProperties map[string]string `json:"systemProperties"`
	Properties       map[string]string `json:"properties"`
}

func eventOf(m store.Message) Event {
	e := Event{
		DeviceID:         m.DeviceID,
		Hub:              m.Hub,
		EnqueuedTime:     m.EnqueuedTime.UTC().Format(time.RFC3339Nano),
		MessageID:        m.MessageID,
		SystemProperties: m.SystemProperties,
		Properties:       m.Properties,
	}
	switch {
	case len(m.Body) > 0 && json.Valid(m.Body):
		e.Payload = append(json.RawMessage(nil), m.Body...)
	case utf8.Valid(m.Body):
		e.Payload, _ = json.Marshal(string(m.Body))
	default:
		e.Payload, _ = json.Marshal(base64.StdEncoding.EncodeToString(m.Body))
		e.PayloadEncoding = "base64"
	}
	if e.SystemProperties == nil {
		e.SystemProperties = map[string]string{}
	}
	if e.Properties == nil {
		e.Properties = map[string]string{}
	}
	return e
}

func parseSince(r *http.Request) (time.Time, bool, error) {
	v := r.URL.Query().Get("since")
	if v == "" {
		return time.Time{}, false, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, false, store.ErrInvalid.With("since must be an RFC 3339 time, not %q", v)
	}
	return t, true, nil
}

// deviceEvents is GET /devices/{id}/messages/events?since=&top=: the
// device's recent telemetry, oldest first, strictly after since. Poll with
// the enqueuedTime of the last event seen.
func (h *hubAPI) deviceEvents(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	since, _, err := parseSince(r)
	if err != nil {
		h.s.fail(w, r, err)
		return
	}
	top := math.MaxInt
	if v := r.URL.Query().Get("top"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			h.s.fail(w, r, store.ErrInvalid.With("top must be a positive integer, not %q", v))
			return
		}
		top = n
	}
	msgs := h.s.st.Telemetry(h.hub, id)
	if err := h.knownDevice(id, msgs); err != nil {
		h.s.fail(w, r, err)
		return
	}
	out := []Event{}
	for _, m := range msgs {
		if m.EnqueuedTime.After(since) {
			out = append(out, eventOf(m))
		}
	}
	if len(out) > top {
		out = out[len(out)-top:] // the most recent ones
	}
	writeJSON(w, http.StatusOK, out)
}

// knownDevice accepts an existing identity or a deleted one whose
// telemetry is still retained (docs/protocol.md F), else reports 404001.
func (h *hubAPI) knownDevice(id string, msgs []store.Message) error {
	if len(msgs) > 0 {
		return nil
	}
	_, err := h.s.st.GetDevice(h.hub, id)
	return err
}

// cursor tracks what a stream has sent for one device: everything up to
// time t, plus the first n messages enqueued exactly at t. Enqueued times
// never decrease, so this survives the history being trimmed at the front.
type cursor struct {
	t time.Time
	n int
}

// fresh returns the messages after c and advances c.
func (c *cursor) fresh(msgs []store.Message) []store.Message {
	var out []store.Message
	seenAtT := 0
	for _, m := range msgs {
		mt := m.EnqueuedTime.Time
		switch {
		case mt.Before(c.t):
			continue
		case mt.Equal(c.t):
			seenAtT++
			if seenAtT <= c.n {
				continue
			}
		}
		out = append(out, m)
	}
	for _, m := range out {
		if m.EnqueuedTime.Equal(c.t) {
			c.n++
		} else {
			c.t, c.n = m.EnqueuedTime.Time, 1
		}
	}
	return out
}

// eventStream is GET /messages/events/stream[?deviceId=][&since=]: a
// long-lived response of newline-delimited JSON Events, one per message as
// it arrives, for the whole hub or one device. Without since it starts at
// the current time, like `az iot hub monitor-events`; with since it first
// replays the kept history after that time. It ends when the client goes
// away or the service is closed.
func (h *hubAPI) eventStream(w http.ResponseWriter, r *http.Request) {
	since, given, err := parseSince(r)
	if err != nil {
		h.s.fail(w, r, err)
		return
	}
	only := r.URL.Query().Get("deviceId")
	if only != "" {
		if err := h.knownDevice(only, h.s.st.Telemetry(h.hub, only)); err != nil {
			h.s.fail(w, r, err)
			return
		}
	}
	start := cursor{t: since, n: math.MaxInt} // strictly after since
	if !given {
		start = cursor{t: h.s.now()} // from now, inclusive
	}
	cursors := map[string]*cursor{}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	enc := json.NewEncoder(w)
	for {
		// Take the signal before reading so no message slips between.
		sig := h.s.st.TelemetrySignal()
		ids := []string{only}
		if only == "" {
			ds, err := h.s.st.ListDevices(h.hub)
			if err != nil {
				return
			}
			ids = ids[:0]
			for _, d := range ds {
				ids = append(ids, d.DeviceID)
			}
		}
		var batch []store.Message
		for _, id := range ids {
			c := cursors[id]
			if c == nil {
				c = &cursor{t: start.t, n: start.n}
				cursors[id] = c
			}
			batch = append(batch, c.fresh(h.s.st.Telemetry(h.hub, id))...)
		}
		sortByTime(batch)
		for _, m := range batch {
			if err := enc.Encode(eventOf(m)); err != nil {
				return
			}
		}
		if len(batch) > 0 {
			if err := rc.Flush(); err != nil {
				return
			}
		}
		select {
		case <-sig:
		case <-r.Context().Done():
			return
		case <-h.s.ctx.Done():
			return
		}
	}
}

func sortByTime(ms []store.Message) {
	// Insertion sort: batches are small and mostly ordered.
	for i := 1; i < len(ms); i++ {
		for j := i; j > 0 && ms[j].EnqueuedTime.Before(ms[j-1].EnqueuedTime.Time); j-- {
			ms[j], ms[j-1] = ms[j-1], ms[j]
		}
	}
}

// ---- cloud-to-device ----

// C2DEnvelopeType is the Content-Type that makes POST
// /devices/{id}/messages/deviceBound read a JSON envelope (C2DEnvelope)
// instead of taking the body verbatim.
const C2DEnvelopeType = "application/vnd.azemu.c2d+json"

// C2DEnvelope is the JSON form of a cloud-to-device message. Body is sent
// as UTF-8 text (or as its JSON text when it is not a string); BodyBase64
// carries binary bodies.
type C2DEnvelope struct {
	Body            json.RawMessage   `json:"body,omitempty"`
	BodyBase64      string            `json:"bodyBase64,omitempty"`
	MessageID       string            `json:"messageId,omitempty"`
	CorrelationID   string            `json:"correlationId,omitempty"`
	UserID          string            `json:"userId,omitempty"`
	ContentType     string            `json:"contentType,omitempty"`
	ContentEncoding string            `json:"contentEncoding,omitempty"`
	TTLSeconds      int               `json:"ttlSeconds,omitempty"`
	Properties      map[string]string `json:"properties,omitempty"`
}

// C2D TTL range (docs/protocol.md B.4): 1 minute to 2 days, default 1 hour.
const (
	minC2DTTL = 60
	maxC2DTTL = 2 * 24 * 3600
)

// sendC2D is POST /devices/{id}/messages/deviceBound. IoT Hub sends C2D
// only over AMQP (docs/protocol.md E), so this is the emulator's own trigger. The body
// is the message; system properties come from the headers iothub-messageid,
// iothub-correlationid, iothub-userid, iothub-contenttype,
// iothub-contentencoding and iothub-ttl (seconds), application properties
// from iothub-app-{name}. With Content-Type C2DEnvelopeType the body is a
// C2DEnvelope instead. A full queue answers 403 403004.
func (h *hubAPI) sendC2D(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	b, err := readBody(r)
	if err != nil {
		h.s.fail(w, r, err)
		return
	}
	var env C2DEnvelope
	if strings.EqualFold(strings.TrimSpace(strings.Split(r.Header.Get("Content-Type"), ";")[0]), C2DEnvelopeType) {
		if err := jsonUnmarshal(b, &env); err != nil {
			h.s.fail(w, r, err)
			return
		}
		switch {
		case env.BodyBase64 != "":
			if b, err = base64.StdEncoding.DecodeString(env.BodyBase64); err != nil {
				h.s.fail(w, r, store.ErrInvalid.With("bodyBase64 is not base64"))
				return
			}
		case len(env.Body) > 0:
			var s string
			if json.Unmarshal(env.Body, &s) == nil {
				b = []byte(s)
			} else {
				b = env.Body
			}
		default:
			b = nil
		}
	} else {
		hd := r.Header
		env = C2DEnvelope{
			MessageID:       hd.Get("iothub-messageid"),
			CorrelationID:   hd.Get("iothub-correlationid"),
			UserID:          hd.Get("iothub-userid"),
			ContentType:     hd.Get("iothub-contenttype"),
			ContentEncoding: hd.Get("iothub-contentencoding"),
		}
		if v := hd.Get("iothub-ttl"); v != "" {
			if env.TTLSeconds, err = strconv.Atoi(v); err != nil {
				h.s.fail(w, r, store.ErrInvalid.With("iothub-ttl must be seconds, not %q", v))
				return
			}
		}
		for k, vs := range hd {
			if name, ok := strings.CutPrefix(strings.ToLower(k), "iothub-app-"); ok && name != "" && len(vs) > 0 {
				if env.Properties == nil {
					env.Properties = map[string]string{}
				}
				env.Properties[name] = vs[0]
			}
		}
	}
	if len(env.MessageID) > 128 {
		h.s.fail(w, r, store.ErrInvalid.With("message id longer than 128 characters"))
		return
	}
	msg := store.C2DMessage{
		MessageID:       env.MessageID,
		CorrelationID:   env.CorrelationID,
		UserID:          env.UserID,
		ContentType:     env.ContentType,
		ContentEncoding: env.ContentEncoding,
		Body:            b,
		Properties:      env.Properties,
	}
	if env.TTLSeconds != 0 {
		if env.TTLSeconds < minC2DTTL || env.TTLSeconds > maxC2DTTL {
			h.s.fail(w, r, store.ErrInvalid.With("ttl must be between %d and %d seconds", minC2DTTL, maxC2DTTL))
			return
		}
		msg.ExpiryTime = store.Time{Time: h.s.now().UTC().Add(time.Duration(env.TTLSeconds) * time.Second)}
	}
	out, err := h.s.st.EnqueueC2D(h.hub, id, msg)
	if err != nil {
		h.s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}
