package service_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reefer/tracker/deploy/emulator/service"
	"github.com/reefer/tracker/deploy/emulator/store"
)

func (e *env) device(hub, id string) {
	e.t.Helper()
	if _, err := e.st.PutDevice(hub, store.Device{DeviceID: id}, ""); err != nil {
		e.t.Fatalf("PutDevice %s: %v", id, err)
	}
}

func (e *env) telemetry(id, body string, props map[string]string) {
	e.t.Helper()
	m := store.Message{DeviceID: id, Hub: hub1, Topic: "devices/" + id + "/messages/events/", Body: []byte(body),
		SystemProperties: map[string]string{"iothub-connection-device-id": id}, Properties: props}
	if err := e.st.RecordTelemetry(m); err != nil {
		e.t.Fatalf("RecordTelemetry: %v", err)
	}
}

func TestDeviceEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.device(hub1, "dev-1")
	tok := hub1Token()

	r := e.do("GET", hubPath("/devices/dev-1/messages/events"), tok, nil)
	want(t, "no events", r, 200, 0)
	if strings.TrimSpace(string(r.body)) != "[]" {
		t.Errorf("events before telemetry = %s; want []", r.body)
	}
	e.telemetry("dev-1", `{"temp":4.5}`, map[string]string{"alert": "no"})
	e.telemetry("dev-1", "plain text", nil)
	e.telemetry("dev-1", "\xff\xfe", nil)

	r = e.do("GET", hubPath("/devices/dev-1/messages/events"), tok, nil)
	want(t, "events", r, 200, 0)
	var evs []service.Event
	r.json(t, &evs)
	if len(evs) != 3 {
		t.Fatalf("events = %s; want 3", r.body)
	}
	if string(evs[0].Payload) != `{"temp":4.5}` || evs[0].Properties["alert"] != "no" || evs[0].DeviceID != "dev-1" || evs[0].SystemProperties["iothub-connection-device-id"] != "dev-1" {
		t.Errorf("JSON event = %+v", evs[0])
	}
	if string(evs[1].Payload) != `"plain text"` || evs[1].PayloadEncoding != "" {
		t.Errorf("text event payload = %s (%s)", evs[1].Payload, evs[1].PayloadEncoding)
	}
	if string(evs[2].Payload) != `"//4="` || evs[2].PayloadEncoding != "base64" {
		t.Errorf("binary event payload = %s (%s); want base64 //4=", evs[2].Payload, evs[2].PayloadEncoding)
	}

	// since is exclusive: polling with the last enqueuedTime yields only newer.
	r = e.do("GET", hubPath("/devices/dev-1/messages/events?since="+url.QueryEscape(evs[2].EnqueuedTime)), tok, nil)
	var none []service.Event
	r.json(t, &none)
	if len(none) != 0 {
		t.Errorf("events since the last = %s; want none", r.body)
	}
	e.telemetry("dev-1", `{"n":4}`, nil)
	r = e.do("GET", hubPath("/devices/dev-1/messages/events?since="+url.QueryEscape(evs[2].EnqueuedTime)), tok, nil)
	r.json(t, &none)
	if len(none) != 1 || string(none[0].Payload) != `{"n":4}` {
		t.Errorf("events since the last = %s; want only {\"n\":4}", r.body)
	}
	r = e.do("GET", hubPath("/devices/dev-1/messages/events?top=2"), tok, nil)
	r.json(t, &evs)
	if len(evs) != 2 || string(evs[1].Payload) != `{"n":4}` {
		t.Errorf("top=2 = %s; want the 2 most recent", r.body)
	}
	want(t, "bad since", e.do("GET", hubPath("/devices/dev-1/messages/events?since=yesterday"), tok, nil), 400, 400004)
	want(t, "bad top", e.do("GET", hubPath("/devices/dev-1/messages/events?top=-1"), tok, nil), 400, 400004)
	want(t, "unknown device", e.do("GET", hubPath("/devices/nope/messages/events"), tok, nil), 404, 404001)

	// docs/protocol.md F: messages are retained after the identity is deleted.
	if err := e.st.DeleteDevice(hub1, "dev-1", "*"); err != nil {
		t.Fatal(err)
	}
	r = e.do("GET", hubPath("/devices/dev-1/messages/events"), tok, nil)
	want(t, "events of a deleted device", r, 200, 0)
	r.json(t, &evs)
	if len(evs) != 4 || string(evs[3].Payload) != `{"n":4}` {
		t.Errorf("events after delete = %s; want the 4 recorded", r.body)
	}
}

// openStream starts a stream request and returns a line reader once the
// response headers arrived.
func (e *env) openStream(ctx context.Context, query string) (*bufio.Scanner, *http.Response) {
	e.t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", e.srv.URL+hubPath("/messages/events/stream"+query), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", hub1Token())
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatalf("stream: %v", err)
	}
	e.t.Cleanup(func() { res.Body.Close() })
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "application/x-ndjson") {
		e.t.Fatalf("stream status %d, content type %q; want 200 ndjson", res.StatusCode, res.Header.Get("Content-Type"))
	}
	return bufio.NewScanner(res.Body), res
}

func nextEvent(t *testing.T, sc *bufio.Scanner) service.Event {
	t.Helper()
	if !sc.Scan() {
		t.Fatalf("stream ended early: %v", sc.Err())
	}
	var ev service.Event
	if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
		t.Fatalf("stream line %q: %v", sc.Text(), err)
	}
	return ev
}

func TestEventStream(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.device(hub1, "dev-1")
	e.device(hub1, "dev-2")
	e.telemetry("dev-1", `{"old":true}`, nil) // before the stream: not shown

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	all, _ := e.openStream(ctx, "")
	only2, _ := e.openStream(ctx, "?deviceId=dev-2")

	for i := 0; i < 3; i++ {
		e.telemetry("dev-1", fmt.Sprintf(`{"i":%d}`, i), nil)
		e.telemetry("dev-2", fmt.Sprintf(`{"j":%d}`, i), nil)
	}
	// The hub-wide stream sees all six new messages, in order per device.
	var got1, got2 []string
	for k := 0; k < 6; k++ {
		ev := nextEvent(t, all)
		switch ev.DeviceID {
		case "dev-1":
			got1 = append(got1, string(ev.Payload))
		case "dev-2":
			got2 = append(got2, string(ev.Payload))
		}
	}
	if strings.Join(got1, " ") != `{"i":0} {"i":1} {"i":2}` || strings.Join(got2, " ") != `{"j":0} {"j":1} {"j":2}` {
		t.Errorf("hub stream got dev-1 %v, dev-2 %v", got1, got2)
	}
	for k := 0; k < 3; k++ {
		if ev := nextEvent(t, only2); ev.DeviceID != "dev-2" || string(ev.Payload) != fmt.Sprintf(`{"j":%d}`, k) {
			t.Errorf("device stream event %d = %+v; want dev-2 {\"j\":%d}", k, ev, k)
		}
	}

	// A device created after the stream started is picked up too.
	e.device(hub1, "dev-3")
	e.telemetry("dev-3", `{"late":1}`, nil)
	if ev := nextEvent(t, all); ev.DeviceID != "dev-3" {
		t.Errorf("event of a new device = %+v; want dev-3", ev)
	}

	// Closing the service ends the streams.
	e.svc.Close()
	done := make(chan bool)
	go func() { done <- all.Scan() }()
	select {
	case more := <-done:
		if more {
			t.Errorf("stream produced %q after Close; want the end", all.Text())
		}
	case <-ctx.Done():
		t.Fatal("stream did not end after Close")
	}
}

func TestEventStreamReplaysSince(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.device(hub1, "dev-1")
	e.telemetry("dev-1", `{"a":1}`, nil)
	first := e.st.Telemetry(hub1, "dev-1")[0].EnqueuedTime
	e.telemetry("dev-1", `{"a":2}`, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sc, _ := e.openStream(ctx, "?since="+url.QueryEscape(first.UTC().Format(time.RFC3339Nano)))
	if ev := nextEvent(t, sc); string(ev.Payload) != `{"a":2}` {
		t.Errorf("replayed event = %s; want {\"a\":2} (strictly after since)", ev.Payload)
	}
	e.telemetry("dev-1", `{"a":3}`, nil)
	if ev := nextEvent(t, sc); string(ev.Payload) != `{"a":3}` {
		t.Errorf("live event = %s; want {\"a\":3}", ev.Payload)
	}
	want(t, "stream unknown device", e.do("GET", hubPath("/messages/events/stream?deviceId=nope"), hub1Token(), nil), 404, 404001)
	want(t, "stream bad since", e.do("GET", hubPath("/messages/events/stream?since=x"), hub1Token(), nil), 400, 400004)
}

func TestCloudToDevice(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.device(hub1, "dev-1")
	var mu sync.Mutex
	notified := 0
	e.st.AddObserver(store.ObserverFuncs{OnC2D: func(hub, id string) {
		mu.Lock()
		defer mu.Unlock()
		if hub == hub1 && id == "dev-1" {
			notified++
		}
	}})
	tok := hub1Token()

	r := e.do("POST", hubPath("/devices/dev-1/messages/deviceBound"), tok, "set-interval 60",
		"Content-Type", "text/plain", "iothub-messageid", "m-1", "iothub-correlationid", "c-1",
		"iothub-contenttype", "text/plain", "iothub-ttl", "120", "iothub-app-Priority", "high")
	want(t, "enqueue with headers", r, 200, 0)
	r = e.do("POST", hubPath("/devices/dev-1/messages/devicebound"), tok,
		`{"body":{"cmd":"reboot"},"messageId":"m-2","contentType":"application/json","properties":{"k":"v"}}`,
		"Content-Type", service.C2DEnvelopeType)
	want(t, "enqueue envelope", r, 200, 0)
	r = e.do("POST", hubPath("/devices/dev-1/messages/deviceBound"), tok, `{"bodyBase64":"AAEC"}`, "Content-Type", service.C2DEnvelopeType)
	want(t, "enqueue binary envelope", r, 200, 0)

	q, err := e.st.PendingC2D(hub1, "dev-1")
	if err != nil || len(q) != 3 {
		t.Fatalf("PendingC2D = %d, %v; want 3", len(q), err)
	}
	m := q[0]
	if string(m.Body) != "set-interval 60" || m.MessageID != "m-1" || m.CorrelationID != "c-1" || m.ContentType != "text/plain" || m.Properties["priority"] != "high" {
		t.Errorf("header message = %+v", m)
	}
	if ttl := m.ExpiryTime.Sub(m.EnqueuedTime.Time); ttl < 110*time.Second || ttl > 130*time.Second {
		t.Errorf("header message ttl = %v; want about 120s", ttl)
	}
	if string(q[1].Body) != `{"cmd":"reboot"}` || q[1].MessageID != "m-2" || q[1].Properties["k"] != "v" || q[1].ContentType != "application/json" {
		t.Errorf("envelope message = %+v", q[1])
	}
	if string(q[2].Body) != "\x00\x01\x02" || q[2].MessageID == "" {
		t.Errorf("binary envelope message = %+v; want body 00 01 02 and a generated id", q[2])
	}
	mu.Lock()
	if notified != 3 {
		t.Errorf("C2D notifications = %d; want 3", notified)
	}
	mu.Unlock()

	want(t, "unknown device", e.do("POST", hubPath("/devices/nope/messages/deviceBound"), tok, "x"), 404, 404001)
	want(t, "ttl too short", e.do("POST", hubPath("/devices/dev-1/messages/deviceBound"), tok, "x", "iothub-ttl", "5"), 400, 400004)
	want(t, "ttl not a number", e.do("POST", hubPath("/devices/dev-1/messages/deviceBound"), tok, "x", "iothub-ttl", "soon"), 400, 400004)
	want(t, "bad envelope", e.do("POST", hubPath("/devices/dev-1/messages/deviceBound"), tok, `{"body":`, "Content-Type", service.C2DEnvelopeType), 400, 400004)
	want(t, "bad base64", e.do("POST", hubPath("/devices/dev-1/messages/deviceBound"), tok, `{"bodyBase64":"!!"}`, "Content-Type", service.C2DEnvelopeType), 400, 400004)
	want(t, "over 64 KB", e.do("POST", hubPath("/devices/dev-1/messages/deviceBound"), tok, strings.Repeat("x", 65*1024)), 413, 413001)

	// Fill the queue to 50 (docs/protocol.md B.4); the next one is refused.
	for i := 3; i < store.MaxC2DQueue; i++ {
		want(t, "fill", e.do("POST", hubPath("/devices/dev-1/messages/deviceBound"), tok, "x"), 200, 0)
	}
	want(t, "queue full", e.do("POST", hubPath("/devices/dev-1/messages/deviceBound"), tok, "x"), 403, 403004)
	r = e.do("GET", hubPath("/devices/dev-1"), tok, nil)
	var d store.Device
	r.json(t, &d)
	if d.CloudToDeviceMessageCount != store.MaxC2DQueue {
		t.Errorf("cloudToDeviceMessageCount = %d; want %d", d.CloudToDeviceMessageCount, store.MaxC2DQueue)
	}
}
