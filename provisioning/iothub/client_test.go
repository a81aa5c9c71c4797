package iothub

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

func testTLS() *tls.Config { return &tls.Config{MinVersion: tls.VersionTLS12} }

func TestNewValidates(t *testing.T) {
	t.Parallel()
	ok := Config{Hub: "h.azure-devices.net", DeviceID: "d", TLS: testTLS()}
	tests := []struct {
		name string
		mod  func(*Config)
	}{
		{"no hub", func(c *Config) { c.Hub = "" }},
		{"bad device", func(c *Config) { c.DeviceID = "a/b" }},
		{"no tls", func(c *Config) { c.TLS = nil }},
		{"keep-alive too long", func(c *Config) { c.KeepAlive = 1178 * time.Second }},
		{"keep-alive fractional", func(c *Config) { c.KeepAlive = 1500 * time.Millisecond }},
		{"empty port", func(c *Config) { c.Hub = "h:" }},
	}
	for _, tt := range tests {
		cfg := ok
		tt.mod(&cfg)
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%s) = nil error", tt.name)
		}
	}
	if _, err := New(ok); err != nil {
		t.Errorf("New(valid) = %v", err)
	}
}

func TestConnectOptionsSubscriptionsAndTwin(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) {
		c.Hub = "127.0.0.1:40002"
		c.DeviceClientType = "reefer-tracker/0.1"
	})
	if err := h.c.Connect(context.Background()); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	if s := h.c.State(); s != StateConnected {
		t.Errorf("State = %s; want connected", s)
	}
	o := h.hub.last().o
	if got := o.Servers[0].String(); got != "tls://127.0.0.1:40002" {
		t.Errorf("broker = %q", got)
	}
	if o.ClientID != "sensor-thl-001" || o.Password != "" ||
		o.Username != "127.0.0.1:40002/sensor-thl-001/?api-version=2021-04-12&DeviceClientType=reefer-tracker%2F0.1" {
		t.Errorf("client id/user/password = %q/%q/%q", o.ClientID, o.Username, o.Password)
	}
	if o.TLSConfig.ServerName != "127.0.0.1" || o.TLSConfig.MinVersion != tls.VersionTLS12 {
		t.Errorf("TLS ServerName %q MinVersion %x; want host only and the caller's settings", o.TLSConfig.ServerName, o.TLSConfig.MinVersion)
	}
	if o.CleanSession || o.AutoReconnect || o.ConnectRetry || o.Order || o.ProtocolVersion != 4 || o.KeepAlive != 240 {
		t.Errorf("clean=%v autoreconnect=%v retry=%v order=%v protocol=%d keepalive=%d",
			o.CleanSession, o.AutoReconnect, o.ConnectRetry, o.Order, o.ProtocolVersion, o.KeepAlive)
	}
	h.hub.mu.Lock()
	subs := h.hub.subs[1]
	h.hub.mu.Unlock()
	if len(subs) != 4 || len(subs) > maxSubscriptions || !reflect.DeepEqual(subs, subscriptions("sensor-thl-001")) {
		t.Errorf("subscriptions = %v", subs)
	}
	if gets := h.hub.published(twinGetPrefix); len(gets) != 1 || gets[0].qos != 0 || len(gets[0].payload) != 0 {
		t.Errorf("twin GETs = %+v; want one, QoS 0, empty body", gets)
	}
	d := h.nextDesired(t)
	if !d.Full || d.Version != 12 || !strings.Contains(string(d.Props), `"telemetryDelay":1`) {
		t.Errorf("first desired = %+v; want the full section at version 12", d)
	}
	if strings.Contains(string(d.Props), "$version") {
		t.Errorf("desired properties %s carry the protocol's $version", d.Props)
	}
	if err := h.c.Connect(context.Background()); err == nil {
		t.Error("second Connect = nil error")
	}
}

func TestDefaultPortAndServerName(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	if err := h.c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	o := h.hub.last().o
	if got := o.Servers[0].String(); got != "tls://hub-x.azure-devices.net:8883" {
		t.Errorf("broker = %q", got)
	}
	if o.TLSConfig.ServerName != "hub-x.azure-devices.net" || !strings.HasPrefix(o.Username, "hub-x.azure-devices.net/sensor-thl-001/?api-version=2021-04-12&DeviceClientType=reefer-tracker") {
		t.Errorf("ServerName %q username %q", o.TLSConfig.ServerName, o.Username)
	}
}

func TestSendWaitsForPubAck(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	ack := newPendingToken()
	h.hub.override = func(_ *fakeClient, topic string, _ []byte) (mqtt.Token, bool) {
		if strings.HasPrefix(topic, "devices/") {
			return ack, true
		}
		return nil, false
	}
	if err := h.c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	m := Message{Body: []byte(`{"temperature":4.1}`), ContentType: "application/json", ContentEncoding: "utf-8",
		Properties: map[string]string{"temperatureAlert": "false"}}
	done := make(chan error, 1)
	go func() { done <- h.c.Send(context.Background(), m) }()
	select {
	case err := <-done:
		t.Fatalf("Send returned %v before the PUBACK", err)
	case <-time.After(20 * time.Millisecond):
	}
	ack.complete(nil)
	if err := <-done; err != nil {
		t.Fatalf("Send: %v", err)
	}
	pubs := h.hub.published("devices/")
	want := "devices/sensor-thl-001/messages/events/$.ct=application%2Fjson&$.ce=utf-8&temperatureAlert=false"
	if len(pubs) != 1 || pubs[0].topic != want || pubs[0].qos != 1 || string(pubs[0].payload) != `{"temperature":4.1}` {
		t.Errorf("published %+v; want one QoS 1 message on %q", pubs, want)
	}
}

// Publish returns before the PUBACK, so several messages are in flight at
// once and go out in the order published; each wait ends with its own ack.
func TestPublishKeepsSeveralInFlight(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	acks := []*token{newPendingToken(), newPendingToken(), newPendingToken()}
	n := 0
	h.hub.override = func(_ *fakeClient, topic string, _ []byte) (mqtt.Token, bool) {
		if strings.HasPrefix(topic, "devices/") {
			n++
			return acks[n-1], true
		}
		return nil, false
	}
	if err := h.c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	var waits []func(context.Context) error
	for i := range acks {
		w, err := h.c.Publish(Message{Body: []byte(fmt.Sprint(i))})
		if err != nil {
			t.Fatalf("Publish #%d = %v", i, err)
		}
		waits = append(waits, w)
	}
	pubs := h.hub.published("devices/")
	if len(pubs) != 3 || string(pubs[0].payload) != "0" || string(pubs[2].payload) != "2" {
		t.Fatalf("published %+v before any PUBACK; want all three, in order", pubs)
	}
	acks[1].complete(nil)
	if err := waits[1](context.Background()); err != nil {
		t.Fatalf("wait #1 after its PUBACK = %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := waits[0](ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("wait #0 without its PUBACK = %v; want it still waiting", err)
	}
	acks[0].complete(nil)
	acks[2].complete(errors.New("refused"))
	if err := waits[0](context.Background()); err != nil {
		t.Errorf("wait #0 = %v", err)
	}
	if err := waits[2](context.Background()); err == nil || !strings.Contains(err.Error(), "iothub send sensor-thl-001") {
		t.Errorf("wait #2 after a failed PUBACK = %v; want the error, with context", err)
	}
}

func TestSendErrors(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.OperationTimeout = 20 * time.Millisecond })
	if err := h.c.Send(context.Background(), Message{}); !errors.Is(err, ErrNotConnected) {
		t.Errorf("Send before Connect = %v; want ErrNotConnected", err)
	}
	pending := newPendingToken()
	h.hub.override = func(_ *fakeClient, topic string, _ []byte) (mqtt.Token, bool) {
		if strings.HasPrefix(topic, "devices/") {
			return pending, true
		}
		return nil, false
	}
	if err := h.c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := h.c.Send(context.Background(), Message{Body: make([]byte, MaxMessageSize+1)}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Send(too large) = %v; want ErrTooLarge", err)
	}
	if n := len(h.hub.published("devices/")); n != 0 {
		t.Errorf("%d messages published despite size error", n)
	}
	if err := h.c.Send(context.Background(), Message{}); !errors.Is(err, ErrTimeout) {
		t.Errorf("Send without PUBACK = %v; want ErrTimeout", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h.c.Send(ctx, Message{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Send(cancelled) = %v; want context.Canceled", err)
	}
	if !strings.Contains(fmt.Sprint(h.c.Send(ctx, Message{})), "iothub send sensor-thl-001") {
		t.Error("Send error lacks context")
	}
}

func TestSendConnectionLostWhileWaiting(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.hub.override = func(_ *fakeClient, topic string, _ []byte) (mqtt.Token, bool) {
		if strings.HasPrefix(topic, "devices/") {
			return newPendingToken(), true
		}
		return nil, false
	}
	if err := h.c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	first := h.hub.last()
	done := make(chan error, 1)
	go func() { done <- h.c.Send(context.Background(), Message{}) }()
	eventually(t, "the publish", func() bool { return len(h.hub.published("devices/")) == 1 })
	first.drop(io.EOF)
	if err := <-done; !errors.Is(err, ErrConnectionLost) || !errors.Is(err, io.EOF) {
		t.Errorf("Send = %v; want ErrConnectionLost wrapping EOF", err)
	}
}

func TestUpdateReported(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	if err := h.c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	v, err := h.c.UpdateReported(context.Background(), map[string]int{"telemetryDelay": 3})
	if err != nil || v != 4 {
		t.Fatalf("UpdateReported = %d, %v; want 4", v, err)
	}
	pubs := h.hub.published("$iothub/twin/PATCH/properties/reported/")
	if len(pubs) != 1 || string(pubs[0].payload) != `{"telemetryDelay":3}` || !strings.HasPrefix(pubs[0].topic, "$iothub/twin/PATCH/properties/reported/?$rid=") {
		t.Errorf("reported publishes = %+v", pubs)
	}
	if v, err := h.c.UpdateReported(context.Background(), json.RawMessage(`{"a":null}`)); err != nil || v != 5 {
		t.Errorf("second UpdateReported = %d, %v; want 5", v, err)
	}
	if _, err := h.c.UpdateReported(context.Background(), []int{1}); !errors.Is(err, ErrBadRequest) {
		t.Errorf("UpdateReported(array) = %v; want ErrBadRequest", err)
	}
}

func TestUpdateReportedStatusErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status int
		want   error
	}{
		{400, ErrBadRequest},
		{429, ErrThrottled},
		{500, ErrServer},
		{0, ErrTimeout}, // no answer
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, func(c *Config) { c.OperationTimeout = 50 * time.Millisecond })
			h.hub.override = func(c *fakeClient, topic string, _ []byte) (mqtt.Token, bool) {
				rid, ok := strings.CutPrefix(topic, reportedPrefix)
				if !ok {
					return nil, false
				}
				if tt.status != 0 {
					go c.deliver(fmt.Sprintf("$iothub/twin/res/%d/?$rid=%s", tt.status, rid), []byte(`{"errorCode":1,"message":"nope"}`))
				}
				return doneToken(nil), true
			}
			if err := h.c.Connect(context.Background()); err != nil {
				t.Fatal(err)
			}
			_, err := h.c.UpdateReported(context.Background(), map[string]int{"x": 1})
			if !errors.Is(err, tt.want) {
				t.Errorf("UpdateReported with status %d = %v; want %v", tt.status, err, tt.want)
			}
		})
	}
}

func TestDesiredPatchesInVersionOrder(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	if err := h.c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := h.nextDesired(t); d.Version != 12 {
		t.Fatalf("first desired version %d; want 12", d.Version)
	}
	cli := h.hub.last()
	patch := func(v int) {
		cli.deliver(fmt.Sprintf("$iothub/twin/PATCH/properties/desired/?$version=%d", v), []byte(fmt.Sprintf(`{"telemetryDelay":%d,"$version":%d}`, v, v)))
	}
	patch(14) // arrives first: held, resync requested
	patch(12) // stale: dropped
	patch(13)
	patch(15)
	for _, want := range []int64{13, 14, 15} {
		d := h.nextDesired(t)
		if d.Full || d.Version != want {
			t.Fatalf("desired = version %d full=%v; want patch %d", d.Version, d.Full, want)
		}
	}
	// A patch without $version in the topic falls back to the body.
	cli.deliver("$iothub/twin/PATCH/properties/desired/", []byte(`{"telemetryDelay":16,"$version":16}`))
	if d := h.nextDesired(t); d.Version != 16 {
		t.Errorf("desired = %d; want 16", d.Version)
	}
	// The resync GET triggered by the gap returned version 12: nothing more.
	select {
	case d := <-h.desired:
		t.Errorf("unexpected desired update %+v", d)
	case <-time.After(20 * time.Millisecond):
	}
}

func TestDesiredGapResyncs(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	if err := h.c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.nextDesired(t)
	h.hub.mu.Lock()
	h.hub.twin = `{"desired":{"telemetryDelay":5,"$version":20},"reported":{"$version":3}}`
	h.hub.mu.Unlock()
	h.hub.last().deliver("$iothub/twin/PATCH/properties/desired/?$version=20", []byte(`{"telemetryDelay":5,"$version":20}`))
	// Versions 13..19 never come: the client re-reads the twin.
	d := h.nextDesired(t)
	if d.Version != 20 {
		t.Fatalf("desired = %+v; want version 20", d)
	}
	eventually(t, "the resync GET", func() bool { return len(h.hub.published(twinGetPrefix)) == 2 })
}

// A gap that the missing patch closes within GapWait needs no twin GET:
// paho delivers messages on separate goroutines, so a small reordering is
// normal and must not cost a round trip.
func TestDesiredGapClosedByLatePatchNoResync(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	waited := make(chan time.Duration, 1)
	h := newHarness(t, func(c *Config) {
		c.GapWait = 750 * time.Millisecond
		c.Sleep = func(ctx context.Context, d time.Duration) error {
			waited <- d
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	})
	if err := h.c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.nextDesired(t) // version 12 from the GET
	cli := h.hub.last()
	cli.deliver("$iothub/twin/PATCH/properties/desired/?$version=14", []byte(`{"telemetryDelay":14,"$version":14}`))
	if d := <-waited; d != 750*time.Millisecond {
		t.Errorf("gap wait = %s; want GapWait", d)
	}
	cli.deliver("$iothub/twin/PATCH/properties/desired/?$version=13", []byte(`{"telemetryDelay":13,"$version":13}`))
	for _, want := range []int64{13, 14} {
		if d := h.nextDesired(t); d.Full || d.Version != want {
			t.Fatalf("desired = %+v; want patch %d", d, want)
		}
	}
	close(release)
	time.Sleep(20 * time.Millisecond) // let the waiter look at the (closed) gap
	if n := len(h.hub.published(twinGetPrefix)); n != 1 {
		t.Errorf("twin GETs = %d; want 1 (the connect): the gap closed by itself", n)
	}
}

func TestMethods(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	got := make(chan string, 1)
	h.c.HandleMethod("setInterval", func(ctx context.Context, p json.RawMessage) (int, any) {
		got <- string(p)
		return 200, map[string]any{"ok": true}
	})
	h.c.HandleMethod("crash", func(context.Context, json.RawMessage) (int, any) { panic("boom") })
	h.c.HandleMethod("empty", func(_ context.Context, p json.RawMessage) (int, any) {
		if p != nil {
			return 400, nil
		}
		return 204, nil
	})
	h.c.HandleMethod("huge", func(context.Context, json.RawMessage) (int, any) {
		return 200, strings.Repeat("x", MaxMethodPayload)
	})
	if err := h.c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	cli := h.hub.last()
	tests := []struct {
		name, payload string
		wantTopic     string
		wantBody      string
	}{
		{"setInterval", `{"seconds":5}`, "$iothub/methods/res/200/?$rid=r1", `{"ok":true}`},
		{"unknown", ``, "$iothub/methods/res/404/?$rid=r2", `{"error":"method \"unknown\" is not implemented"}`},
		{"crash", `{}`, "$iothub/methods/res/500/?$rid=r3", `{"error":"method \"crash\" failed"}`},
		{"empty", ``, "$iothub/methods/res/204/?$rid=r4", ``},
		{"huge", ``, "$iothub/methods/res/500/?$rid=r5", ""},
	}
	for i, tt := range tests {
		cli.deliver(fmt.Sprintf("$iothub/methods/POST/%s/?$rid=r%d", tt.name, i+1), []byte(tt.payload))
		pubs := h.hub.published("$iothub/methods/res/")
		if len(pubs) != i+1 {
			t.Fatalf("%s: %d replies; want %d", tt.name, len(pubs), i+1)
		}
		p := pubs[i]
		if p.topic != tt.wantTopic || (tt.wantBody != "" && string(p.payload) != tt.wantBody) || p.qos != 0 {
			t.Errorf("%s: reply %q %s (qos %d); want %q %s", tt.name, p.topic, p.payload, p.qos, tt.wantTopic, tt.wantBody)
		}
	}
	if p := <-got; p != `{"seconds":5}` {
		t.Errorf("handler got %s", p)
	}
}

func TestHandleMethodPanicsOnBadName(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	defer func() {
		if recover() == nil {
			t.Error("HandleMethod(bad name) did not panic")
		}
	}()
	h.c.HandleMethod("a/b", nil)
}

func TestC2D(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	if err := h.c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !h.hub.last().deliverAcked("devices/sensor-thl-001/messages/devicebound/%24.mid=m1&%24.to=%2Fdevices%2Fsensor-thl-001%2Fmessages%2FdeviceBound&cmd=open%20door", []byte("payload")) {
		t.Error("a C2D message the handler took was not acknowledged")
	}
	select {
	case m := <-h.c2d:
		if m.MessageID != "m1" || m.Properties["cmd"] != "open door" || string(m.Body) != "payload" {
			t.Errorf("C2D = %+v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no C2D message")
	}
}

// The PUBACK completes a C2D message at the hub (docs/protocol.md B.4), so it is sent
// only once the handler accepted the message: a handler error or no handler
// leaves it for the hub to deliver again. One that cannot be parsed would
// fail at every redelivery and is completed.
func TestC2DAcknowledgedOnlyWhenHandled(t *testing.T) {
	t.Parallel()
	const topic = "devices/sensor-thl-001/messages/devicebound/%24.mid=m1"
	refuse := errors.New("disk full")
	for _, tc := range []struct {
		name    string
		handler func(Message) error
		topic   string
		want    bool
	}{
		{"handled", func(Message) error { return nil }, topic, true},
		{"handler error", func(Message) error { return refuse }, topic, false},
		{"no handler", nil, topic, false},
		{"unparsable property bag", func(Message) error { t.Error("handler called"); return nil },
			"devices/sensor-thl-001/messages/devicebound/%zz=1", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(c *Config) { c.OnC2D = tc.handler })
			if err := h.c.Connect(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := h.hub.last().deliverAcked(tc.topic, []byte("{}")); got != tc.want {
				t.Errorf("acknowledged = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestReconnectResubscribesAndRereadsTwin(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	if err := h.c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.nextDesired(t)
	h.waitState(t, StateConnected)
	h.hub.mu.Lock()
	h.hub.twin = `{"desired":{"telemetryDelay":3,"$version":13},"reported":{"$version":3}}`
	h.hub.mu.Unlock()

	h.hub.last().drop(errors.New("pingresp not received, disconnecting"))
	ev := h.waitState(t, StateDisconnected)
	if !errors.Is(ev.Err, ErrConnectionLost) || errors.Is(ev.Err, ErrTakenOver) {
		t.Errorf("disconnect event err = %v; want ErrConnectionLost only", ev.Err)
	}
	h.waitState(t, StateConnected)
	if n := h.hub.sessions(); n != 2 {
		t.Fatalf("sessions = %d; want 2", n)
	}
	h.hub.mu.Lock()
	subs := h.hub.subs[2]
	h.hub.mu.Unlock()
	if len(subs) != 4 {
		t.Errorf("re-subscriptions = %v; want all 4", subs)
	}
	// The missed change arrives through the GET after reconnect.
	if d := h.nextDesired(t); !d.Full || d.Version != 13 {
		t.Errorf("desired after reconnect = %+v; want full version 13", d)
	}
	if err := h.c.Send(context.Background(), Message{Body: []byte("x")}); err != nil {
		t.Errorf("Send after reconnect: %v", err)
	}
	if pubs := h.hub.published("devices/"); len(pubs) != 1 || pubs[0].session != 2 {
		t.Errorf("telemetry went to %+v; want session 2", pubs)
	}
	if got := h.sleeps.Got(); len(got) != 1 || got[0] > 2*time.Second {
		t.Errorf("reconnect sleeps = %v; want one jittered back-off", got)
	}
}

func TestConnectRetriesTransientThenSucceeds(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.hub.connectErr = func(n int) error {
		if n <= 3 {
			return fmt.Errorf("%w : dial tcp: i/o timeout", packets.ErrorNetworkError)
		}
		return nil
	}
	if err := h.c.Connect(context.Background()); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	// Full jitter (0.5) over 1 s, 2 s, 4 s.
	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second}
	if got := h.sleeps.Got(); !reflect.DeepEqual(got, want) {
		t.Errorf("sleeps = %v; want %v", got, want)
	}
}

func TestConnectNotAuthorized(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.hub.connectErr = func(int) error { return packets.ErrorRefusedNotAuthorised }
	err := h.c.Connect(context.Background())
	if !errors.Is(err, ErrNotAuthorized) || !errors.Is(err, packets.ErrorRefusedNotAuthorised) {
		t.Fatalf("Connect = %v; want ErrNotAuthorized", err)
	}
	if n := h.hub.sessions(); n != 3 {
		t.Errorf("attempts = %d; want NotAuthorizedLimit (3)", n)
	}
	select {
	case <-h.c.Done():
	default:
		t.Error("Done not closed after terminal error")
	}
	if !errors.Is(h.c.Err(), ErrNotAuthorized) {
		t.Errorf("Err = %v", h.c.Err())
	}
}

func TestNotAuthorizedCountsOnlyConsecutive(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	seq := []error{packets.ErrorRefusedNotAuthorised, packets.ErrorRefusedNotAuthorised,
		packets.ErrorRefusedServerUnavailable, packets.ErrorRefusedNotAuthorised, nil}
	h.hub.connectErr = func(n int) error { return seq[n-1] }
	if err := h.c.Connect(context.Background()); err != nil {
		t.Fatalf("Connect = %v; a transient failure between refusals resets the count", err)
	}
}

func TestNotAuthorizedWhileRunningStopsClient(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	if err := h.c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The device gets disabled: the hub drops it and refuses reconnects (docs/protocol.md B.7).
	h.hub.mu.Lock()
	h.hub.connectErr = func(int) error { return packets.ErrorRefusedNotAuthorised }
	h.hub.mu.Unlock()
	h.hub.last().drop(io.EOF)
	ev := h.waitState(t, StateClosed)
	if !errors.Is(ev.Err, ErrNotAuthorized) {
		t.Errorf("final state err = %v; want ErrNotAuthorized", ev.Err)
	}
	select {
	case <-h.c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed")
	}
	if !errors.Is(h.c.Err(), ErrNotAuthorized) || !strings.Contains(h.c.Err().Error(), "sensor-thl-001") {
		t.Errorf("Err = %v", h.c.Err())
	}
	if err := h.c.Send(context.Background(), Message{}); !errors.Is(err, ErrNotConnected) {
		t.Errorf("Send after stop = %v; want ErrNotConnected", err)
	}
}

// TestTakeoverHeuristic runs in a testing/synctest bubble: time.Sleep ages
// the connection on the bubble's clock before each close.
func TestTakeoverHeuristic(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		if err := h.c.Connect(context.Background()); err != nil {
			t.Fatal(err)
		}
		h.waitState(t, StateConnected)
		kick := func(err error, after time.Duration) StateChange {
			t.Helper()
			time.Sleep(after)
			h.hub.last().drop(err)
			ev := h.waitState(t, StateDisconnected)
			h.waitState(t, StateConnected)
			return ev
		}
		// Two short remote closes: not yet.
		for i := 0; i < 2; i++ {
			if ev := kick(io.EOF, 5*time.Second); errors.Is(ev.Err, ErrTakenOver) {
				t.Fatalf("close %d reported takeover too early: %v", i+1, ev.Err)
			}
		}
		// Third in a row: suspected takeover.
		if ev := kick(io.EOF, 5*time.Second); !errors.Is(ev.Err, ErrTakenOver) || !errors.Is(ev.Err, ErrConnectionLost) {
			t.Errorf("third short close = %v; want ErrTakenOver", ev.Err)
		}
		// A stable connection resets the streak.
		if ev := kick(io.EOF, 10*time.Minute); errors.Is(ev.Err, ErrTakenOver) {
			t.Errorf("close after a stable connection = %v; want no takeover", ev.Err)
		}
		// Ping timeouts are not remote closes.
		for i := 0; i < 3; i++ {
			if ev := kick(errors.New("pingresp not received, disconnecting"), time.Second); errors.Is(ev.Err, ErrTakenOver) {
				t.Errorf("ping timeout %d = %v; want no takeover", i, ev.Err)
			}
		}
		// Flapping connections grow the back-off: 1 s·2^n jittered by 0.5, capped at 5 min.
		got := h.sleeps.Got()
		if len(got) != 7 || got[0] != time.Second || got[1] != 2*time.Second || got[2] != 4*time.Second || got[3] != 500*time.Millisecond {
			t.Errorf("reconnect sleeps = %v", got)
		}
	})
}

func TestCloseIsIdempotentAndFinal(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	if err := h.c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	cli := h.hub.last()
	h.c.Close()
	h.c.Close()
	select {
	case <-h.c.Done():
	default:
		t.Error("Done not closed after Close")
	}
	if h.c.Err() != nil || h.c.State() != StateClosed {
		t.Errorf("after Close: Err=%v State=%s", h.c.Err(), h.c.State())
	}
	cli.mu.Lock()
	down := cli.down
	cli.mu.Unlock()
	if !down {
		t.Error("MQTT client not disconnected")
	}
	if err := h.c.Connect(context.Background()); err == nil {
		t.Error("Connect after Close = nil error")
	}
	if _, err := h.c.UpdateReported(context.Background(), map[string]int{"a": 1}); !errors.Is(err, ErrNotConnected) {
		t.Errorf("UpdateReported after Close = %v", err)
	}
}

func TestConnectCancelled(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.hub.connectErr = func(int) error { return packets.ErrorRefusedServerUnavailable }
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h.c.Connect(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Connect(cancelled) = %v; want context.Canceled", err)
	}
}

// A CONNECT abandoned half-way (ctx ended, or Close) must still be torn
// down: paho finishes the handshake in the background, and a connection
// left behind would keep the device id busy on the hub and knock off the
// next one (docs/protocol.md B.7).
func TestAbandonedConnectIsDisconnected(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.hub.connectTok = func(int) mqtt.Token { return newPendingToken() }
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	if err := h.c.Connect(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Connect = %v; want context.Canceled", err)
	}
	cli := h.hub.last()
	cli.mu.Lock()
	down := cli.down
	cli.mu.Unlock()
	if !down {
		t.Error("half-open MQTT client not disconnected after the connect was abandoned")
	}
}

func TestInitialTwinFailureRetries(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.hub.mu.Lock()
	h.hub.twinStatus = 429
	h.hub.mu.Unlock()
	h.hub.connectErr = func(n int) error {
		if n == 2 {
			h.hub.mu.Lock()
			h.hub.twinStatus = 200
			h.hub.mu.Unlock()
		}
		return nil
	}
	if err := h.c.Connect(context.Background()); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	if n := h.hub.sessions(); n != 2 {
		t.Errorf("sessions = %d; want 2 (throttled twin GET closes the first)", n)
	}
	first := h.hub.clients[0]
	first.mu.Lock()
	defer first.mu.Unlock()
	if !first.down {
		t.Error("first connection not closed after its twin GET failed")
	}
}

func TestGetTwin(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	if _, err := h.c.GetTwin(context.Background()); !errors.Is(err, ErrNotConnected) {
		t.Errorf("GetTwin before Connect = %v", err)
	}
	if err := h.c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	tw, err := h.c.GetTwin(context.Background())
	if err != nil || tw.DesiredVersion != 12 || tw.ReportedVersion != 3 {
		t.Errorf("GetTwin = %+v, %v", tw, err)
	}
}
