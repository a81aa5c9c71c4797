package service

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/reefer/tracker/deploy/emulator/store"
)

// hubRoutes registers the IoT Hub service API of one hub (docs/protocol.md E) plus the
// emulator's monitoring and C2D routes.
func (s *Service) hubRoutes(m *http.ServeMux, hub string) {
	h := &hubAPI{s: s, hub: hub}
	m.HandleFunc("GET /$emulator", s.info) // any policy

	// Permissions per Azure's "Control access to IoT Hub": the identity
	// registry needs RegistryRead/RegistryWrite; twins, methods, C2D and
	// monitoring need ServiceConnect. Queries need RegistryRead (a
	// ServiceConnect-only policy is refused, as observed in
	// MicrosoftLearning/AZ-220#26). DeviceConnect opens no service route.
	m.HandleFunc("PUT /devices/{id}", s.need(RegistryWrite, h.putDevice))
	m.HandleFunc("GET /devices/{id}", s.need(RegistryRead, h.getDevice))
	m.HandleFunc("DELETE /devices/{id}", s.need(RegistryWrite, h.deleteDevice))
	m.HandleFunc("GET /devices", s.need(RegistryRead, h.listDevices))
	m.HandleFunc("POST /devices/query", s.need(RegistryRead, h.queryDevices))

	m.HandleFunc("GET /twins/{id}", s.need(ServiceConnect, h.getTwin))
	m.HandleFunc("PATCH /twins/{id}", s.need(ServiceConnect, h.patchTwin))
	m.HandleFunc("PUT /twins/{id}", s.need(ServiceConnect, h.replaceTwin))
	m.HandleFunc("POST /twins/{id}/methods", s.need(ServiceConnect, h.invokeMethod))

	m.HandleFunc("GET /devices/{id}/messages/events", s.need(ServiceConnect, h.deviceEvents))
	m.HandleFunc("GET /messages/events/stream", s.need(ServiceConnect, h.eventStream))
	m.HandleFunc("POST /devices/{id}/messages/deviceBound", s.need(ServiceConnect, h.sendC2D))
	m.HandleFunc("POST /devices/{id}/messages/devicebound", s.need(ServiceConnect, h.sendC2D))

	m.HandleFunc("/", s.notFound)
}

// hubAPI serves one hub.
type hubAPI struct {
	s   *Service
	hub string
}

// ---- identities ----

func (h *hubAPI) putDevice(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var d store.Device
	if err := decodeJSON(r, &d); err != nil {
		h.s.fail(w, r, err)
		return
	}
	if d.DeviceID == "" {
		d.DeviceID = id
	}
	if d.DeviceID != id {
		h.s.fail(w, r, store.ErrInvalid.With("deviceId %q in the body does not match %q in the path", d.DeviceID, id))
		return
	}
	out, err := h.s.st.PutDevice(h.hub, d, r.Header.Get("If-Match"))
	h.s.reply(w, r, out, out.ETag, err)
}

func (h *hubAPI) getDevice(w http.ResponseWriter, r *http.Request) {
	d, err := h.s.st.GetDevice(h.hub, r.PathValue("id"))
	h.s.reply(w, r, d, d.ETag, err)
}

func (h *hubAPI) deleteDevice(w http.ResponseWriter, r *http.Request) {
	h.s.replyDeleted(w, r, h.s.st.DeleteDevice(h.hub, r.PathValue("id"), r.Header.Get("If-Match")))
}

// listDevices is the deprecated GET /devices?top=N (docs/protocol.md E); top defaults
// to and is capped at 1000 as on IoT Hub.
func (h *hubAPI) listDevices(w http.ResponseWriter, r *http.Request) {
	top := 1000
	if v := r.URL.Query().Get("top"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			h.s.fail(w, r, store.ErrInvalid.With("top must be between 1 and 1000, not %q", v))
			return
		}
		top = n
	}
	ds, err := h.s.st.ListDevices(h.hub)
	if err != nil {
		h.s.fail(w, r, err)
		return
	}
	if len(ds) > top {
		ds = ds[:top]
	}
	writeJSON(w, http.StatusOK, ds)
}

// deviceQueryRe is the subset of the IoT Hub query language the emulator
// answers: SELECT * FROM devices, optionally WHERE one or more conditions
// joined by AND (docs/protocol.md E, query).
var deviceQueryRe = regexp.MustCompile(`(?is)^\s*select\s+\*\s+from\s+devices(?:\s+where\s+(.+?))?\s*$`)

// condRe is one condition: <field> = <literal>, the field deviceId,
// status, connectionState, tags.<path>, properties.desired.<path> or
// properties.reported.<path>, the literal a 'string', a number, true or
// false.
var condRe = regexp.MustCompile(`(?i)^\s*([A-Za-z0-9_$.]+)\s*=\s*('[^']*'|-?[0-9]+(?:\.[0-9]+)?|true|false)\s*$`)

var andRe = regexp.MustCompile(`(?i)\s+and\s+`)

type condition struct {
	field string
	value any // string, float64 or bool
}

// parseWhere splits a WHERE clause into equality conditions.
func parseWhere(where string) ([]condition, bool) {
	if strings.TrimSpace(where) == "" {
		return nil, true
	}
	var out []condition
	for _, part := range andRe.Split(where, -1) {
		m := condRe.FindStringSubmatch(part)
		if m == nil {
			return nil, false
		}
		c := condition{field: m[1]}
		switch lit := m[2]; {
		case strings.HasPrefix(lit, "'"):
			c.value = strings.Trim(lit, "'")
		case strings.EqualFold(lit, "true"), strings.EqualFold(lit, "false"):
			c.value = strings.EqualFold(lit, "true")
		default:
			f, err := strconv.ParseFloat(lit, 64)
			if err != nil {
				return nil, false
			}
			c.value = f
		}
		out = append(out, c)
	}
	return out, true
}

// queryDevices is POST /devices/query {"query":"SELECT * FROM devices"}
// (what az iot hub query and device-identity list send). It answers twins,
// paged with x-ms-max-item-count / x-ms-continuation.
func (h *hubAPI) queryDevices(w http.ResponseWriter, r *http.Request) {
	var q struct {
		Query string `json:"query"`
	}
	if err := decodeJSON(r, &q); err != nil {
		h.s.fail(w, r, err)
		return
	}
	m := deviceQueryRe.FindStringSubmatch(q.Query)
	var conds []condition
	ok := m != nil
	if ok {
		conds, ok = parseWhere(m[1])
	}
	if !ok {
		h.s.fail(w, r, store.ErrInvalid.With("unsupported query %q: the emulator supports SELECT * FROM devices [WHERE field = value [AND ...]] on deviceId, status, connectionState, tags.*, properties.desired.*, properties.reported.*", q.Query))
		return
	}
	ds, err := h.s.st.ListDevices(h.hub)
	if err != nil {
		h.s.fail(w, r, err)
		return
	}
	var twins []store.Twin
	var keys []string
	for _, d := range ds {
		t, err := h.s.st.GetTwin(h.hub, d.DeviceID)
		if err != nil {
			continue // deleted meanwhile
		}
		if !slices.ContainsFunc(conds, func(c condition) bool { return !twinFieldIs(t, c) }) {
			twins = append(twins, t)
			keys = append(keys, t.DeviceID)
		}
	}
	if twins == nil {
		twins = []store.Twin{}
	}
	h.s.writePage(w, r, "twin", keys, func(i, j int) any { return twins[i:j] })
}

// twinFieldIs reports whether the twin's field equals the condition's
// value; a missing field or another type never does.
func twinFieldIs(t store.Twin, c condition) bool {
	switch strings.ToLower(c.field) {
	case "deviceid":
		return t.DeviceID == c.value
	case "status":
		return t.Status == c.value
	case "connectionstate":
		return t.ConnectionState == c.value
	}
	var root any
	var path string
	if p, ok := strings.CutPrefix(c.field, "tags."); ok {
		root, path = t.Tags, p
	} else if p, ok := strings.CutPrefix(c.field, "properties.desired."); ok {
		root, path = map[string]any(t.Properties.Desired.Props), p
	} else if p, ok := strings.CutPrefix(c.field, "properties.reported."); ok {
		root, path = map[string]any(t.Properties.Reported.Props), p
	} else {
		return false
	}
	v := root
	for _, k := range strings.Split(path, ".") {
		obj, ok := v.(map[string]any)
		if !ok {
			return false
		}
		if v, ok = obj[k]; !ok {
			return false
		}
	}
	switch want := c.value.(type) {
	case float64:
		switch n := v.(type) {
		case json.Number:
			f, err := n.Float64()
			return err == nil && f == want
		case float64:
			return n == want
		case int:
			return float64(n) == want
		case int64:
			return float64(n) == want
		}
		return false
	default:
		return v == want
	}
}

// ---- twins ----

func (h *hubAPI) getTwin(w http.ResponseWriter, r *http.Request) {
	t, err := h.s.st.GetTwin(h.hub, r.PathValue("id"))
	h.s.reply(w, r, t, t.ETag, err)
}

func (h *hubAPI) patchTwin(w http.ResponseWriter, r *http.Request)   { h.changeTwin(w, r, false) }
func (h *hubAPI) replaceTwin(w http.ResponseWriter, r *http.Request) { h.changeTwin(w, r, true) }

// changeTwin applies PATCH (merge, null deletes) or PUT (replace) to the
// tags and desired properties (docs/protocol.md E). Reported properties belong to the
// device and are refused. A desired change reaches a connected device
// through the store's observers.
func (h *hubAPI) changeTwin(w http.ResponseWriter, r *http.Request, replace bool) {
	patch, err := decodeTwinPatch(r, replace)
	if err != nil {
		h.s.fail(w, r, err)
		return
	}
	id := r.PathValue("id")
	var t store.Twin
	if replace {
		t, err = h.s.st.ReplaceTwin(h.hub, id, patch, r.Header.Get("If-Match"))
	} else {
		t, err = h.s.st.UpdateTwin(h.hub, id, patch, r.Header.Get("If-Match"))
	}
	h.s.reply(w, r, t, t.ETag, err)
}

func decodeTwinPatch(r *http.Request, replace bool) (store.TwinPatch, error) {
	var p store.TwinPatch
	b, err := readBody(r)
	if err != nil {
		return p, err
	}
	// Numbers stay json.Number so large integers survive exactly.
	m, err := store.DecodeJSONObject(b)
	if err != nil {
		return p, store.ErrInvalid.With("malformed JSON body: %v", err)
	}
	obj := func(v any, name string) (map[string]any, error) {
		switch x := v.(type) {
		case nil:
			return nil, nil
		case map[string]any:
			return x, nil
		default:
			return nil, store.ErrInvalid.With("%s must be a JSON object", name)
		}
	}
	if p.Tags, err = obj(m["tags"], "tags"); err != nil {
		return p, err
	}
	props, err := obj(m["properties"], "properties")
	if err != nil {
		return p, err
	}
	if _, ok := props["reported"]; ok {
		return p, store.ErrInvalid.With("reported properties can only be changed by the device")
	}
	if p.Properties.Desired, err = obj(props["desired"], "properties.desired"); err != nil {
		return p, err
	}
	if d := p.Properties.Desired; d != nil {
		// $version and $metadata are the service's; clients that echo a
		// fetched twin back send them.
		delete(d, "$version")
		delete(d, "$metadata")
		if !replace && len(d) == 0 {
			p.Properties.Desired = nil
		}
	}
	if !replace && len(p.Tags) == 0 {
		p.Tags = nil
	}
	if replace {
		// PUT replaces both sections: an absent one becomes empty.
		if p.Tags == nil {
			p.Tags = map[string]any{}
		}
		if p.Properties.Desired == nil {
			p.Properties.Desired = map[string]any{}
		}
	}
	return p, nil
}

// ---- direct methods ----

// Limits of direct methods (docs/protocol.md B.6, E, F).
const (
	maxMethodPayload       = 128 << 10
	defaultResponseTimeout = 30
)

// invokeMethod is POST /twins/{id}/methods (docs/protocol.md E).
func (h *hubAPI) invokeMethod(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var req store.MethodRequest
	var raw struct {
		MethodName               *string         `json:"methodName"`
		Payload                  json.RawMessage `json:"payload"`
		ResponseTimeoutInSeconds *int            `json:"responseTimeoutInSeconds"`
		ConnectTimeoutInSeconds  *int            `json:"connectTimeoutInSeconds"`
	}
	if err := decodeJSON(r, &raw); err != nil {
		h.s.fail(w, r, err)
		return
	}
	if raw.MethodName == nil || !validMethodName(*raw.MethodName) {
		h.s.fail(w, r, store.ErrInvalid.With("methodName is missing or contains characters IoT Hub does not allow"))
		return
	}
	req.MethodName = *raw.MethodName
	req.ResponseTimeoutInSeconds = defaultResponseTimeout
	if p := raw.ResponseTimeoutInSeconds; p != nil {
		if *p < 5 || *p > 300 {
			h.s.fail(w, r, store.ErrInvalid.With("responseTimeoutInSeconds must be between 5 and 300, not %d", *p))
			return
		}
		req.ResponseTimeoutInSeconds = *p
	}
	if p := raw.ConnectTimeoutInSeconds; p != nil {
		if *p < 0 || *p > 300 {
			h.s.fail(w, r, store.ErrInvalid.With("connectTimeoutInSeconds must be between 0 and 300, not %d", *p))
			return
		}
		req.ConnectTimeoutInSeconds = *p
	}
	if len(raw.Payload) > maxMethodPayload {
		h.s.fail(w, r, store.ErrTooLarge.With("method payload of %d bytes exceeds %d", len(raw.Payload), maxMethodPayload))
		return
	}
	req.Payload = raw.Payload
	if _, err := h.s.st.GetDevice(h.hub, id); err != nil {
		h.s.fail(w, r, err)
		return
	}
	if h.s.cfg.Methods == nil {
		h.s.fail(w, r, store.ErrDeviceNotOnline.With("device %q is not online", id))
		return
	}
	// The invoker enforces both timeouts; the context is a backstop a
	// little beyond them.
	limit := time.Duration(req.ConnectTimeoutInSeconds+req.ResponseTimeoutInSeconds)*time.Second + 2*time.Second
	ctx, cancel := context.WithTimeout(r.Context(), limit)
	defer cancel()
	res, err := h.s.cfg.Methods.InvokeMethod(ctx, h.hub, id, req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = store.ErrMethodTimeout.With("timed out waiting for the response from device %q", id)
		}
		h.s.fail(w, r, err)
		return
	}
	if len(res.Payload) == 0 {
		res.Payload = json.RawMessage("null")
	}
	if !json.Valid(res.Payload) {
		h.s.fail(w, r, store.ErrInternal.With("device %q answered with a payload that is not JSON", id))
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// validMethodName: printable US-ASCII without $ ( ) < > @ , ; : \ " / [ ] ?
// = { }, space and tab (docs/protocol.md F). '*' stays allowed for Plug and Play
// component commands (docs/protocol.md B.6).
func validMethodName(n string) bool {
	if n == "" || len(n) > 128 {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`$()<>@,;:\"/[]?={}`, c) >= 0 {
			return false
		}
	}
	return true
}
