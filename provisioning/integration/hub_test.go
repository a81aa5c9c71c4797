package integration

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/reefer/tracker/deploy/emulator"
	"github.com/reefer/tracker/deploy/emulator/emulatortest"
	"github.com/reefer/tracker/deploy/emulator/store"
	"github.com/reefer/tracker/provisioning/dps"
	"github.com/reefer/tracker/provisioning/iothub"
)

// devCert is a device's TLS chain.
type devCert struct{ chain tls.Certificate }

// provisioned starts an emulator with an enrolled fleet and provisions one
// device through DPS.
func provisioned(t *testing.T, id string) (*emulator.Emulator, *fleet, *dps.Result, *devCert) {
	t.Helper()
	e := emulatortest.Start(t)
	f := newFleet(t)
	enrollFleet(t, e, f, nil)
	leaf := f.device(t, id)
	cc := &devCert{chain: f.chain(leaf)}
	return e, f, provision(t, e, id, cc.chain), cc
}

func isConnected(s iothub.StateChange) bool { return s.State == iothub.StateConnected }
func isDisconnected(s iothub.StateChange) bool {
	return s.State == iothub.StateDisconnected && errors.Is(s.Err, iothub.ErrConnectionLost)
}

// TestHubDeletedDeviceReprovisions: the hub refuses a deleted device with
// CONNACK 5 (docs/protocol.md B.7, G.3), the client ends with ErrNotAuthorized after
// NotAuthorizedLimit refusals, and a fresh DPS registration re-creates the
// identity (docs/protocol.md C, G.13) so the device connects again.
func TestHubDeletedDeviceReprovisions(t *testing.T) {
	t.Parallel()
	e, _, res, cc := provisioned(t, "dev-del")
	d := connect(t, e, res, cc.chain, func(c *iothub.Config) { c.NotAuthorizedLimit = 2 })
	if err := d.c.Send(testCtx(t), iothub.Message{Body: []byte("before")}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if err := e.Store().DeleteDevice(res.AssignedHub, res.DeviceID, "*"); err != nil {
		t.Fatal(err)
	}
	d.waitState(t, "the hub to drop the deleted device", isDisconnected)
	select {
	case <-d.c.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("client did not give up on the deleted device")
	}
	if err := d.c.Err(); !errors.Is(err, iothub.ErrNotAuthorized) {
		t.Fatalf("client Err = %v; want ErrNotAuthorized", err)
	}

	res2 := provision(t, e, "dev-del", cc.chain)
	if res2.AssignedHub != res.AssignedHub || res2.DeviceID != res.DeviceID {
		t.Errorf("re-registration = %+v; want the same hub and device", res2)
	}
	d2 := connect(t, e, res2, cc.chain, nil)
	if err := d2.c.Send(testCtx(t), iothub.Message{Body: []byte("after")}); err != nil {
		t.Fatalf("Send after re-provisioning: %v", err)
	}
	// The emulator forgets a deleted device's recorded telemetry (a real
	// hub keeps D2C messages 7 days, docs/protocol.md F), so only "after" is there.
	msgs, err := e.WaitTelemetry(testCtx(t), res.AssignedHub, res.DeviceID, 1)
	if err != nil || string(msgs[len(msgs)-1].Body) != "after" {
		t.Errorf("telemetry = %v, %v; want the message sent after re-provisioning", msgs, err)
	}
}

// TestHubTwinAcrossReconnect: GET on connect, reported patches, and
// desired patches in $version order across a reconnect during which the
// twin changed (docs/protocol.md B.5: subscribe, GET, drop patches <= GET's version).
func TestHubTwinAcrossReconnect(t *testing.T) {
	t.Parallel()
	e, _, res, cc := provisioned(t, "dev-twin")
	hub, id := res.AssignedHub, res.DeviceID
	if _, err := e.UpdateDesired(hub, id, map[string]any{"interval": 10}); err != nil {
		t.Fatal(err)
	}
	d := connect(t, e, res, cc.chain, nil)

	first := d.nextDesired(t)
	if !first.Full || !strings.Contains(string(first.Props), `"interval":10`) {
		t.Fatalf("first desired = %+v %s; want the full twin with interval 10", first, first.Props)
	}
	last := first.Version

	// Reported: 204 with the new version; the emulator's twin has it.
	v1, err := d.c.UpdateReported(testCtx(t), map[string]any{"fw": "1.0", "interval": 10})
	if err != nil {
		t.Fatalf("UpdateReported: %v", err)
	}
	v2, err := d.c.UpdateReported(testCtx(t), map[string]any{"fw": nil})
	if err != nil || v2 <= v1 {
		t.Fatalf("UpdateReported = %d, %v; want a version above %d", v2, err, v1)
	}
	tw, err := d.c.GetTwin(testCtx(t))
	if err != nil {
		t.Fatalf("GetTwin: %v", err)
	}
	if tw.ReportedVersion != v2 || strings.Contains(string(tw.Reported), `"fw"`) || !strings.Contains(string(tw.Reported), `"interval":10`) {
		t.Errorf("twin reported = v%d %s; want v%d with interval and without fw", tw.ReportedVersion, tw.Reported, v2)
	}

	// Patches while connected arrive one by one, in order.
	for i := 1; i <= 3; i++ {
		if _, err := e.UpdateDesired(hub, id, map[string]any{"interval": 10 + i}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 3; i++ {
		x := d.nextDesired(t)
		if x.Full || x.Version <= last {
			t.Fatalf("desired update %d = %+v; want a patch newer than %d", i, x, last)
		}
		last = x.Version
	}

	// Drop the connection and hold the device offline while the twin
	// changes twice; the hub does not keep those notifications.
	d.gate.close()
	if err := e.SetDeviceStatus(hub, id, store.StatusDisabled); err != nil {
		t.Fatal(err)
	}
	d.waitState(t, "the disconnect", isDisconnected)
	d.gate.waitHeld(t)
	if err := e.SetDeviceStatus(hub, id, store.StatusEnabled); err != nil {
		t.Fatal(err)
	}
	for _, v := range []int{20, 30} {
		if _, err := e.UpdateDesired(hub, id, map[string]any{"interval": v, "mode": "offline-" + string(rune('0'+v/10))}); err != nil {
			t.Fatal(err)
		}
	}
	d.gate.release()
	d.waitState(t, "the reconnect", isConnected)

	x := d.nextDesired(t)
	if !x.Full || x.Version <= last || !strings.Contains(string(x.Props), `"interval":30`) || !strings.Contains(string(x.Props), `"mode":"offline-3"`) {
		t.Fatalf("after reconnect desired = %+v %s; want the full twin with interval 30", x, x.Props)
	}
	last = x.Version
	if _, err := e.UpdateDesired(hub, id, map[string]any{"interval": 40}); err != nil {
		t.Fatal(err)
	}
	x = d.nextDesired(t)
	if x.Full || x.Version != last+1 || !strings.Contains(string(x.Props), `"interval":40`) {
		t.Fatalf("patch after reconnect = %+v %s; want version %d with interval 40", x, x.Props, last+1)
	}
	select {
	case extra := <-d.desired:
		t.Errorf("unexpected desired update %+v %s; stale or duplicate", extra, extra.Props)
	case <-time.After(100 * time.Millisecond):
	}
}

// TestHubDuplicateConnection: a second client with the same device id
// takes over; the first sees its connection closed (docs/protocol.md B.7). Left to
// reconnect, the two knock each other off and report ErrTakenOver.
func TestHubDuplicateConnection(t *testing.T) {
	t.Parallel()
	e, _, res, cc := provisioned(t, "dev-dup")
	stable := func(c *iothub.Config) {
		c.StableAfter = time.Hour // every close here is "short"
		c.TakeoverThreshold = 2
	}
	a := connect(t, e, res, cc.chain, stable)
	a.gate.close() // keep the first one down once kicked
	b := connect(t, e, res, cc.chain, stable)

	a.waitState(t, "the first client to lose its connection", isDisconnected)
	a.gate.waitHeld(t)
	if err := b.c.Send(testCtx(t), iothub.Message{Body: []byte("from b")}); err != nil {
		t.Fatalf("second client Send: %v", err)
	}
	if err := a.c.Send(testCtx(t), iothub.Message{Body: []byte("from a")}); !errors.Is(err, iothub.ErrNotConnected) {
		t.Errorf("first client Send = %v; want ErrNotConnected", err)
	}

	// Let them duel.
	a.gate.release()
	takenOver := func(s iothub.StateChange) bool { return errors.Is(s.Err, iothub.ErrTakenOver) }
	a.waitState(t, "ErrTakenOver on the first client", takenOver)
	b.waitState(t, "ErrTakenOver on the second client", takenOver)
}

// TestHubTelemetryProperties: what the client encodes is what the hub
// decodes (docs/protocol.md B.3): spaces as %20, unicode, and the bag's own
// delimiters inside names and values.
func TestHubTelemetryProperties(t *testing.T) {
	t.Parallel()
	e, _, res, cc := provisioned(t, "dev-tel")
	d := connect(t, e, res, cc.chain, nil)
	created := time.Date(2026, 3, 4, 5, 6, 7, 890_000_000, time.UTC)
	props := map[string]string{
		"a b":      "c d",
		"unicode":  "Kühlcontainer ❄ 冷",
		"amp&name": "x&y",
		"eq=name":  "k=v==",
		"path":     "/a/b/c",
		"plus":     "1+1 %20",
		"empty":    "",
	}
	m := iothub.Message{
		Body:            []byte(`{"temperature":-18.5}`),
		MessageID:       "msg 1/&=ü",
		CorrelationID:   "corr-42",
		ContentType:     "application/json",
		ContentEncoding: "utf-8",
		CreationTime:    created,
		Properties:      props,
	}
	if err := d.c.Send(testCtx(t), m); err != nil {
		t.Fatalf("Send: %v", err)
	}
	msgs, err := e.WaitTelemetry(testCtx(t), res.AssignedHub, res.DeviceID, 1)
	if err != nil {
		t.Fatal(err)
	}
	got := msgs[0]
	if string(got.Body) != string(m.Body) {
		t.Errorf("body = %q; want %q", got.Body, m.Body)
	}
	if !maps.Equal(got.Properties, props) {
		t.Errorf("application properties =\n%q\nwant\n%q", got.Properties, props)
	}
	wantSys := map[string]string{
		"message-id":                  m.MessageID,
		"correlation-id":              "corr-42",
		"content-type":                "application/json",
		"content-encoding":            "utf-8",
		"iothub-creation-time-utc":    "2026-03-04T05:06:07.890Z",
		"iothub-connection-device-id": res.DeviceID,
	}
	for k, v := range wantSys {
		if got.SystemProperties[k] != v {
			t.Errorf("system property %s = %q; want %q", k, got.SystemProperties[k], v)
		}
	}
	if got.MessageID != m.MessageID {
		t.Errorf("message id = %q; want %q", got.MessageID, m.MessageID)
	}
}

// TestHubDirectMethod: a method invoked through the emulator's service
// side reaches the handler and its answer comes back (docs/protocol.md B.6, E).
func TestHubDirectMethod(t *testing.T) {
	t.Parallel()
	e, _, res, cc := provisioned(t, "dev-meth")
	d := connect(t, e, res, cc.chain, nil)
	got := make(chan json.RawMessage, 1)
	d.c.HandleMethod("setInterval", func(_ context.Context, p json.RawMessage) (int, any) {
		got <- p
		return 200, map[string]any{"ok": true, "echo": p}
	})
	r, err := e.InvokeMethod(testCtx(t), res.AssignedHub, res.DeviceID, store.MethodRequest{
		MethodName: "setInterval", Payload: json.RawMessage(`{"seconds":15}`), ResponseTimeoutInSeconds: 10,
	})
	if err != nil {
		t.Fatalf("InvokeMethod: %v", err)
	}
	if p := <-got; string(p) != `{"seconds":15}` {
		t.Errorf("handler payload = %s", p)
	}
	if r.Status != 200 || string(r.Payload) != `{"echo":{"seconds":15},"ok":true}` {
		t.Errorf("method result = %d %s", r.Status, r.Payload)
	}
	// No payload either way: the device gets an empty body and answers
	// with one, which the service side reports as null (docs/protocol.md B.6, E).
	d.c.HandleMethod("ping", func(_ context.Context, p json.RawMessage) (int, any) {
		if p != nil {
			return 400, map[string]string{"error": "unexpected payload " + string(p)}
		}
		return 204, nil
	})
	r, err = e.InvokeMethod(testCtx(t), res.AssignedHub, res.DeviceID, store.MethodRequest{MethodName: "ping", ResponseTimeoutInSeconds: 10})
	if err != nil || r.Status != 204 || string(r.Payload) != "null" {
		t.Errorf("ping = %d %s, %v; want 204 null", r.Status, r.Payload, err)
	}
	r, err = e.InvokeMethod(testCtx(t), res.AssignedHub, res.DeviceID, store.MethodRequest{MethodName: "noSuchMethod", ResponseTimeoutInSeconds: 10})
	if err != nil || r.Status != 404 {
		t.Errorf("unknown method = %+v, %v; want status 404 from the device", r, err)
	}
}

// TestHubC2D: a queued cloud-to-device message is delivered with its
// properties and completed by the PUBACK (docs/protocol.md B.4).
func TestHubC2D(t *testing.T) {
	t.Parallel()
	e, _, res, cc := provisioned(t, "dev-c2d")
	d := connect(t, e, res, cc.chain, nil)
	props := map[string]string{"command": "defrost now", "zone": "a&b=c/ü"}
	mid, err := e.SendC2D(res.AssignedHub, res.DeviceID, []byte("defrost"), props)
	if err != nil {
		t.Fatalf("SendC2D: %v", err)
	}
	var m iothub.Message
	select {
	case m = <-d.c2d:
	case <-time.After(20 * time.Second):
		t.Fatal("no C2D message")
	}
	if string(m.Body) != "defrost" || m.MessageID != mid || !maps.Equal(m.Properties, props) {
		t.Errorf("C2D = body %q mid %q props %q; want %q %q %q", m.Body, m.MessageID, m.Properties, "defrost", mid, props)
	}
	eventually(t, "the C2D message to be completed", func() bool {
		p, err := e.Store().PendingC2D(res.AssignedHub, res.DeviceID)
		return err == nil && len(p) == 0
	})
}

// TestHubC2DQueuedWhileOffline: with CleanSession 0 (the client's
// default) a message queued while the device was offline arrives after
// the reconnect (docs/protocol.md B.2, B.4).
func TestHubC2DQueuedWhileOffline(t *testing.T) {
	t.Parallel()
	e, _, res, cc := provisioned(t, "dev-c2d-off")
	d := connect(t, e, res, cc.chain, nil)
	d.gate.close()
	if err := e.SetDeviceStatus(res.AssignedHub, res.DeviceID, store.StatusDisabled); err != nil {
		t.Fatal(err)
	}
	d.waitState(t, "the disconnect", isDisconnected)
	d.gate.waitHeld(t)
	if err := e.SetDeviceStatus(res.AssignedHub, res.DeviceID, store.StatusEnabled); err != nil {
		t.Fatal(err)
	}
	mid, err := e.SendC2D(res.AssignedHub, res.DeviceID, []byte("while you were away"), nil)
	if err != nil {
		t.Fatal(err)
	}
	d.gate.release()
	select {
	case m := <-d.c2d:
		if m.MessageID != mid || string(m.Body) != "while you were away" {
			t.Errorf("C2D = %q %q; want %q", m.MessageID, m.Body, mid)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the message queued while offline never arrived")
	}
}
