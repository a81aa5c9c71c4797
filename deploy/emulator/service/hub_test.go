package service_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reefer/tracker/deploy/emulator/service"
	"github.com/reefer/tracker/deploy/emulator/store"
)

func hubPath(p string) string {
	if strings.Contains(p, "?") {
		return p + "&api-version=" + hubVer
	}
	return p + "?api-version=" + hubVer
}

const thumb = "AABBCCDDEEFF00112233445566778899AABBCCDDEEFF00112233445566778899"

func selfSigned(id string) map[string]any {
	return map[string]any{"deviceId": id, "authentication": map[string]any{
		"type": "selfSigned", "x509Thumbprint": map[string]any{"primaryThumbprint": thumb},
	}}
}

func TestDeviceIdentityLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := hub1Token()

	r := e.do("PUT", hubPath("/devices/dev-1"), tok, selfSigned("dev-1"))
	want(t, "create", r, 200, 0)
	var d store.Device
	r.json(t, &d)
	if d.DeviceID != "dev-1" || d.ETag == "" || d.GenerationID == "" || d.Status != "enabled" || d.Authentication.Type != "selfSigned" {
		t.Errorf("created device = %s", r.body)
	}
	want(t, "create existing without If-Match", e.do("PUT", hubPath("/devices/dev-1"), tok, selfSigned("dev-1")), 409, 409001)
	want(t, "update stale etag", e.do("PUT", hubPath("/devices/dev-1"), tok, selfSigned("dev-1"), "If-Match", `"c3RhbGU="`), 412, 412001)
	upd := selfSigned("dev-1")
	upd["status"] = "disabled"
	r = e.do("PUT", hubPath("/devices/dev-1"), tok, upd, "If-Match", `"`+d.ETag+`"`)
	want(t, "update with etag", r, 200, 0)
	var d2 store.Device
	r.json(t, &d2)
	if d2.Status != "disabled" || d2.ETag == d.ETag || d2.GenerationID != d.GenerationID {
		t.Errorf("updated device = %s; want disabled, new etag, same generation", r.body)
	}
	want(t, "update with star", e.do("PUT", hubPath("/devices/dev-1"), tok, upd, "If-Match", "*"), 200, 0)
	want(t, "If-Match on a missing device", e.do("PUT", hubPath("/devices/ghost"), tok, selfSigned("ghost"), "If-Match", `"x"`), 404, 404001)
	want(t, "id mismatch", e.do("PUT", hubPath("/devices/dev-2"), tok, selfSigned("dev-1")), 400, 400004)
	want(t, "bad thumbprint", e.do("PUT", hubPath("/devices/dev-2"), tok, map[string]any{"authentication": map[string]any{"type": "selfSigned", "x509Thumbprint": map[string]any{"primaryThumbprint": "xyz"}}}), 400, 400004)
	want(t, "invalid device id", e.do("PUT", hubPath("/devices/bad%20id"), tok, map[string]any{}), 400, 400004)

	// Device ids may hold characters that must be escaped in a URL.
	r = e.do("PUT", hubPath("/devices/odd%23id%3F"), tok, map[string]any{"authentication": map[string]any{"type": "sas"}})
	want(t, "odd id", r, 200, 0)
	r.json(t, &d)
	if d.DeviceID != "odd#id?" || d.Authentication.SymmetricKey.PrimaryKey == nil {
		t.Errorf("odd id device = %s; want id odd#id? with generated keys", r.body)
	}

	r = e.do("GET", hubPath("/devices/dev-1"), tok, nil)
	want(t, "get", r, 200, 0)
	want(t, "get missing", e.do("GET", hubPath("/devices/nope"), tok, nil), 404, 404001)
	want(t, "device ids are case-sensitive", e.do("GET", hubPath("/devices/DEV-1"), tok, nil), 404, 404001)

	for i := 0; i < 3; i++ {
		want(t, "create more", e.do("PUT", hubPath(fmt.Sprintf("/devices/more-%d", i)), tok, selfSigned(fmt.Sprintf("more-%d", i))), 200, 0)
	}
	r = e.do("GET", hubPath("/devices?top=2"), tok, nil)
	want(t, "list top=2", r, 200, 0)
	var list []store.Device
	r.json(t, &list)
	if len(list) != 2 {
		t.Errorf("GET /devices?top=2 = %d devices; want 2", len(list))
	}
	r = e.do("GET", hubPath("/devices"), tok, nil)
	r.json(t, &list)
	if len(list) != 5 {
		t.Errorf("GET /devices = %d devices; want 5", len(list))
	}
	want(t, "top out of range", e.do("GET", hubPath("/devices?top=0"), tok, nil), 400, 400004)
	want(t, "top not a number", e.do("GET", hubPath("/devices?top=x"), tok, nil), 400, 400004)

	// Hubs are separate: hub2 does not see hub1's devices.
	r = e.do("GET", hubPath("/devices/dev-1"), service.SASToken(hub2, hubOwner, hub2Key, time.Now().Add(time.Hour)), nil)
	want(t, "other hub", r, 404, 404001)

	want(t, "delete stale", e.do("DELETE", hubPath("/devices/dev-1"), tok, nil, "If-Match", `"stale"`), 412, 412001)
	want(t, "delete", e.do("DELETE", hubPath("/devices/dev-1"), tok, nil, "If-Match", "*"), 204, 0)
	want(t, "get deleted", e.do("GET", hubPath("/devices/dev-1"), tok, nil), 404, 404001)
	want(t, "twin deleted too", e.do("GET", hubPath("/twins/dev-1"), tok, nil), 404, 404001)
	want(t, "delete missing", e.do("DELETE", hubPath("/devices/dev-1"), tok, nil), 404, 404001)
}

type desiredEvent struct {
	hub, id string
	patch   map[string]any
	version int64
}

func TestTwinPatchReplaceAndNotify(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var mu sync.Mutex
	var events []desiredEvent
	e.st.AddObserver(store.ObserverFuncs{OnDesired: func(hub, id string, patch map[string]any, v int64) {
		mu.Lock()
		defer mu.Unlock()
		events = append(events, desiredEvent{hub, id, patch, v})
	}})
	tok := hub1Token()
	want(t, "create", e.do("PUT", hubPath("/devices/dev-1"), tok, selfSigned("dev-1")), 200, 0)

	r := e.do("GET", hubPath("/twins/dev-1"), tok, nil)
	want(t, "get twin", r, 200, 0)
	var tw store.Twin
	r.json(t, &tw)
	v0 := tw.Properties.Desired.Version
	if tw.DeviceID != "dev-1" || tw.ETag == "" || tw.AuthenticationType != "selfSigned" {
		t.Errorf("twin = %s", r.body)
	}

	patch := `{"tags":{"site":"A","fleet":{"id":7}},"properties":{"desired":{"interval":30,"mode":"eco","big":4503599627370495}}}`
	r = e.do("PATCH", hubPath("/twins/dev-1"), tok, patch)
	want(t, "patch", r, 200, 0)
	r.json(t, &tw)
	if tw.Properties.Desired.Version != v0+1 || tw.Tags["site"] != "A" {
		t.Errorf("after patch twin = %s; want desired $version %d and tag site=A", r.body, v0+1)
	}
	if !strings.Contains(string(r.body), `"big":4503599627370495`) {
		t.Errorf("large integer not kept exactly: %s", r.body)
	}
	etag := tw.ETag

	// null deletes, other keys stay; If-Match honoured.
	want(t, "patch stale etag", e.do("PATCH", hubPath("/twins/dev-1"), tok, `{"properties":{"desired":{"mode":null}}}`, "If-Match", `"stale"`), 412, 412001)
	r = e.do("PATCH", hubPath("/twins/dev-1"), tok, `{"properties":{"desired":{"mode":null}}}`, "If-Match", etag)
	want(t, "patch delete key", r, 200, 0)
	var raw map[string]any
	r.json(t, &raw)
	desired := raw["properties"].(map[string]any)["desired"].(map[string]any)
	if _, ok := desired["mode"]; ok || desired["interval"] != float64(30) || desired["$version"] != float64(v0+2) {
		t.Errorf("after null patch desired = %v; want mode gone, interval 30, $version %d", desired, v0+2)
	}

	// Tags-only patch does not bump desired or notify.
	r = e.do("PATCH", hubPath("/twins/dev-1"), tok, `{"tags":{"site":"B"}}`)
	want(t, "tags patch", r, 200, 0)
	r.json(t, &tw)
	if tw.Properties.Desired.Version != v0+2 || tw.Tags["site"] != "B" {
		t.Errorf("after tags patch = %s", r.body)
	}

	// PUT replaces: absent keys are deleted and the device is told so.
	r = e.do("PUT", hubPath("/twins/dev-1"), tok, `{"tags":{"only":"tag"},"properties":{"desired":{"fresh":true}}}`)
	want(t, "replace", r, 200, 0)
	r.json(t, &raw)
	desired = raw["properties"].(map[string]any)["desired"].(map[string]any)
	tags := raw["tags"].(map[string]any)
	if _, ok := desired["interval"]; ok || desired["fresh"] != true || len(tags) != 1 || tags["only"] != "tag" {
		t.Errorf("after replace twin = %s; want only fresh and tag only", r.body)
	}

	mu.Lock()
	got := append([]desiredEvent(nil), events...)
	mu.Unlock()
	if len(got) != 3 {
		t.Fatalf("desired notifications = %d (%+v); want 3 (patch, null patch, replace)", len(got), got)
	}
	if got[0].hub != hub1 || got[0].id != "dev-1" || got[0].version != v0+1 || got[0].patch["interval"] == nil {
		t.Errorf("first notification = %+v", got[0])
	}
	if v, ok := got[1].patch["mode"]; !ok || v != nil {
		t.Errorf("null patch notification = %+v; want mode: null", got[1].patch)
	}
	if v, ok := got[2].patch["interval"]; !ok || v != nil || got[2].patch["fresh"] != true {
		t.Errorf("replace notification = %+v; want interval: null and fresh: true", got[2].patch)
	}

	// Validation.
	for _, tc := range []struct{ name, body string }{
		{"reported is read-only", `{"properties":{"reported":{"x":1}}}`},
		{"bad key", `{"properties":{"desired":{"a.b":1}}}`},
		{"tags not an object", `{"tags":[1]}`},
		{"not an object", `[1]`},
		{"malformed", `{"tags":`},
	} {
		want(t, tc.name, e.do("PATCH", hubPath("/twins/dev-1"), tok, tc.body), 400, 400004)
	}
	want(t, "patch missing twin", e.do("PATCH", hubPath("/twins/nope"), tok, `{"tags":{"a":1}}`), 404, 404001)
	want(t, "get missing twin", e.do("GET", hubPath("/twins/nope"), tok, nil), 404, 404001)
}

// fakeInvoker answers direct methods like a connected device would.
type fakeInvoker struct {
	mu   sync.Mutex
	reqs []store.MethodRequest
	fn   func(ctx context.Context, req store.MethodRequest) (store.MethodResult, error)
}

func (f *fakeInvoker) InvokeMethod(ctx context.Context, hub, id string, req store.MethodRequest) (store.MethodResult, error) {
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	f.mu.Unlock()
	return f.fn(ctx, req)
}

func TestDirectMethods(t *testing.T) {
	t.Parallel()
	inv := &fakeInvoker{fn: func(ctx context.Context, req store.MethodRequest) (store.MethodResult, error) {
		switch req.MethodName {
		case "reboot":
			return store.MethodResult{Status: 200, Payload: json.RawMessage(`{"rebooting":true,"echo":` + string(req.Payload) + `}`)}, nil
		case "empty":
			return store.MethodResult{Status: 204}, nil
		case "offline":
			return store.MethodResult{}, store.ErrDeviceNotOnline.With("not connected")
		case "slow":
			return store.MethodResult{}, store.ErrMethodTimeout.With("no answer")
		case "boom":
			panic("invoker exploded")
		}
		return store.MethodResult{Status: 404, Payload: json.RawMessage(`{"error":"unknown method"}`)}, nil
	}}
	e := newEnv(t, func(c *service.Config) { c.Methods = inv })
	tok := hub1Token()
	want(t, "create", e.do("PUT", hubPath("/devices/dev-1"), tok, selfSigned("dev-1")), 200, 0)

	r := e.do("POST", hubPath("/twins/dev-1/methods"), tok, `{"methodName":"reboot","payload":{"delay":5},"responseTimeoutInSeconds":10,"connectTimeoutInSeconds":3}`)
	want(t, "reboot", r, 200, 0)
	var res struct {
		Status  int             `json:"status"`
		Payload json.RawMessage `json:"payload"`
	}
	r.json(t, &res)
	if res.Status != 200 || !strings.Contains(string(res.Payload), `"echo":{"delay":5}`) {
		t.Errorf("reboot = %s; want status 200 with echoed payload", r.body)
	}
	inv.mu.Lock()
	last := inv.reqs[len(inv.reqs)-1]
	inv.mu.Unlock()
	if last.ResponseTimeoutInSeconds != 10 || last.ConnectTimeoutInSeconds != 3 {
		t.Errorf("invoker got timeouts %d/%d; want 10/3", last.ResponseTimeoutInSeconds, last.ConnectTimeoutInSeconds)
	}

	r = e.do("POST", hubPath("/twins/dev-1/methods"), tok, `{"methodName":"empty"}`)
	want(t, "empty answer", r, 200, 0)
	r.json(t, &res)
	if res.Status != 204 || string(res.Payload) != "null" {
		t.Errorf("empty = %s; want status 204, payload null", r.body)
	}
	inv.mu.Lock()
	last = inv.reqs[len(inv.reqs)-1]
	inv.mu.Unlock()
	if last.ResponseTimeoutInSeconds != 30 || last.ConnectTimeoutInSeconds != 0 {
		t.Errorf("default timeouts = %d/%d; want 30/0", last.ResponseTimeoutInSeconds, last.ConnectTimeoutInSeconds)
	}

	want(t, "offline", e.do("POST", hubPath("/twins/dev-1/methods"), tok, `{"methodName":"offline"}`), 404, 404103)
	want(t, "timeout", e.do("POST", hubPath("/twins/dev-1/methods"), tok, `{"methodName":"slow","responseTimeoutInSeconds":5}`), 504, 504101)
	want(t, "panic is a 500", e.do("POST", hubPath("/twins/dev-1/methods"), tok, `{"methodName":"boom"}`), 500, 500001)
	want(t, "still serving after a panic", e.do("GET", hubPath("/devices/dev-1"), tok, nil), 200, 0)
	want(t, "unknown device", e.do("POST", hubPath("/twins/nope/methods"), tok, `{"methodName":"reboot"}`), 404, 404001)

	for _, tc := range []struct{ name, body string }{
		{"no method name", `{"payload":{}}`},
		{"bad method name", `{"methodName":"a/b"}`},
		{"space in name", `{"methodName":"a b"}`},
		{"response timeout too small", `{"methodName":"reboot","responseTimeoutInSeconds":4}`},
		{"response timeout too large", `{"methodName":"reboot","responseTimeoutInSeconds":301}`},
		{"connect timeout negative", `{"methodName":"reboot","connectTimeoutInSeconds":-1}`},
		{"connect timeout too large", `{"methodName":"reboot","connectTimeoutInSeconds":301}`},
		{"malformed", `{"methodName":`},
	} {
		want(t, tc.name, e.do("POST", hubPath("/twins/dev-1/methods"), tok, tc.body), 400, 400004)
	}
	for _, ok := range []string{
		`{"methodName":"comp*cmd","responseTimeoutInSeconds":5,"connectTimeoutInSeconds":0}`,
		`{"methodName":"x","responseTimeoutInSeconds":300,"connectTimeoutInSeconds":300}`,
	} {
		r := e.do("POST", hubPath("/twins/dev-1/methods"), tok, ok)
		want(t, ok, r, 200, 0)
		r.json(t, &res)
		if res.Status != 404 {
			t.Errorf("%s: device status = %d; want the device's 404", ok, res.Status)
		}
	}
	big := `{"methodName":"reboot","payload":"` + strings.Repeat("x", 129<<10) + `"}`
	want(t, "payload over 128 KB", e.do("POST", hubPath("/twins/dev-1/methods"), tok, big), 413, 413001)
}

func TestDirectMethodWithoutInvokerIsOffline(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := hub1Token()
	want(t, "create", e.do("PUT", hubPath("/devices/dev-1"), tok, selfSigned("dev-1")), 200, 0)
	want(t, "no invoker", e.do("POST", hubPath("/twins/dev-1/methods"), tok, `{"methodName":"reboot"}`), 404, 404103)
}

func TestDeviceQuery(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := hub1Token()
	for _, id := range []string{"q-a", "q-b", "q-c"} {
		e.device(hub1, id)
	}
	if _, err := e.st.UpdateTwin(hub1, "q-b", store.TwinPatch{Tags: map[string]any{"site": "north", "trip": map[string]any{"port": "NLRTM"}}}, ""); err != nil {
		t.Fatal(err)
	}
	var p store.TwinPatch
	p.Properties.Desired = map[string]any{"telemetryDelay": 3, "mode": "eco"}
	if _, err := e.st.UpdateTwin(hub1, "q-a", p, ""); err != nil {
		t.Fatal(err)
	}
	disabled := selfSigned("q-c")
	disabled["status"] = "disabled"
	want(t, "disable q-c", e.do("PUT", hubPath("/devices/q-c"), tok, disabled, "If-Match", "*"), 200, 0)
	tests := []struct {
		query string
		want  string
	}{
		{"SELECT * FROM devices", "q-a q-b q-c"},
		{"select * from devices where deviceId = 'q-a'", "q-a"},
		{"SELECT * FROM devices WHERE status = 'disabled'", "q-c"},
		{"SELECT * FROM devices WHERE tags.site = 'north'", "q-b"},
		{"SELECT * FROM devices WHERE tags.site = 'south'", ""},
		{"SELECT * FROM devices WHERE tags.trip.port = 'NLRTM' AND status = 'enabled'", "q-b"},
		{"SELECT * FROM devices WHERE tags.site = 'north' and status = 'disabled'", ""},
		{"SELECT * FROM devices WHERE properties.desired.telemetryDelay = 3", "q-a"},
		{"SELECT * FROM devices WHERE properties.desired.telemetryDelay = '3'", ""},
		{"SELECT * FROM devices WHERE properties.desired.mode = 'eco'", "q-a"},
		{"SELECT * FROM devices WHERE properties.reported.mode = 'eco'", ""},
	}
	for _, tc := range tests {
		r := e.do("POST", hubPath("/devices/query"), tok, map[string]any{"query": tc.query})
		want(t, tc.query, r, 200, 0)
		var twins []store.Twin
		r.json(t, &twins)
		var ids []string
		for _, tw := range twins {
			ids = append(ids, tw.DeviceID)
		}
		if got := strings.Join(ids, " "); got != tc.want {
			t.Errorf("query %q = %q; want %q", tc.query, got, tc.want)
		}
	}
	r := e.do("POST", hubPath("/devices/query"), tok, `{"query":"SELECT * FROM devices"}`, "x-ms-max-item-count", "2")
	var page []store.Twin
	r.json(t, &page)
	if len(page) != 2 || r.header.Get("x-ms-continuation") == "" {
		t.Errorf("paged query = %d twins, continuation %q; want 2 and a token", len(page), r.header.Get("x-ms-continuation"))
	}
	r = e.do("POST", hubPath("/devices/query"), tok, `{"query":"SELECT * FROM devices"}`, "x-ms-max-item-count", "2", "x-ms-continuation", r.header.Get("x-ms-continuation"))
	r.json(t, &page)
	if len(page) != 1 || page[0].DeviceID != "q-c" {
		t.Errorf("second page = %s; want q-c", r.body)
	}
	want(t, "unsupported query", e.do("POST", hubPath("/devices/query"), tok, `{"query":"SELECT deviceId FROM devices"}`), 400, 400004)
	want(t, "unsupported condition", e.do("POST", hubPath("/devices/query"), tok, `{"query":"SELECT * FROM devices WHERE status != 'x'"}`), 400, 400004)
	want(t, "OR", e.do("POST", hubPath("/devices/query"), tok, `{"query":"SELECT * FROM devices WHERE status = 'x' OR status = 'y'"}`), 400, 400004)
}
