package emulator

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/reefer/tracker/deploy/emulator/store"
)

// answerMethods makes the device answer every method with status and body,
// recording the requests it saw.
func answerMethods(t *testing.T, c *client, status string, body []byte) chan paho.Message {
	t.Helper()
	seen := make(chan paho.Message, 10)
	tok := c.c.Subscribe("$iothub/methods/POST/#", 0, func(cl paho.Client, m paho.Message) {
		seen <- m
		q, _ := url.ParseQuery(m.Topic()[strings.Index(m.Topic(), "?")+1:])
		cl.Publish("$iothub/methods/res/"+status+"/?$rid="+q.Get("$rid"), 0, false, body)
	})
	if !tok.WaitTimeout(waitTime) || tok.Error() != nil {
		t.Fatalf("subscribe methods: %v", tok.Error())
	}
	return seen
}

func TestDirectMethods(t *testing.T) {
	t.Parallel()
	e := StartForTest(t)
	hub := e.HubHost(0)
	dev := hubDevice(t, e, "dev-1")
	ctx := context.Background()

	if _, err := e.InvokeMethod(ctx, hub, "dev-1", store.MethodRequest{MethodName: "reboot"}); !errors.Is(err, store.ErrDeviceNotOnline) {
		t.Errorf("invoke on offline device = %v; want ErrDeviceNotOnline (404103)", err)
	}
	if _, err := e.InvokeMethod(ctx, hub, "ghost", store.MethodRequest{MethodName: "reboot"}); !errors.Is(err, store.ErrDeviceNotFound) {
		t.Errorf("invoke on unknown device = %v; want ErrDeviceNotFound", err)
	}
	c := mustHubDial(t, e, 0, "dev-1", dev.TLS())
	// Connected but not subscribed is not online for methods.
	if _, err := e.InvokeMethod(ctx, hub, "dev-1", store.MethodRequest{MethodName: "reboot"}); !errors.Is(err, store.ErrDeviceNotOnline) {
		t.Errorf("invoke before subscribe = %v; want ErrDeviceNotOnline", err)
	}
	seen := answerMethods(t, c, "201", []byte(`{"ok":true}`))
	res, err := e.InvokeMethod(ctx, hub, "dev-1", store.MethodRequest{MethodName: "reboot", Payload: json.RawMessage(`{"delay":1}`)})
	if err != nil || res.Status != 201 || string(res.Payload) != `{"ok":true}` {
		t.Fatalf("InvokeMethod = %+v (%s), %v; want 201 {\"ok\":true}", res, res.Payload, err)
	}
	req := <-seen
	if !strings.HasPrefix(req.Topic(), "$iothub/methods/POST/reboot/?$rid=") || string(req.Payload()) != `{"delay":1}` {
		t.Errorf("device saw %s %s", req.Topic(), req.Payload())
	}
	for _, bad := range []store.MethodRequest{
		{MethodName: "a b"}, {MethodName: ""}, {MethodName: "x", ResponseTimeoutInSeconds: 4},
		{MethodName: "x", ResponseTimeoutInSeconds: 301}, {MethodName: "x", ConnectTimeoutInSeconds: -1},
	} {
		if _, err := e.InvokeMethod(ctx, hub, "dev-1", bad); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("InvokeMethod(%+v) = %v; want ErrInvalid", bad, err)
		}
	}
}

func TestDirectMethodTimeoutAndEmptyReply(t *testing.T) {
	t.Parallel()
	e := StartForTest(t)
	hub := e.HubHost(0)
	silentDev := hubDevice(t, e, "silent")
	emptyDev := hubDevice(t, e, "empty")
	silent := mustHubDial(t, e, 0, "silent", silentDev.TLS())
	silent.subscribe(t, "$iothub/methods/POST/#")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := e.InvokeMethod(ctx, hub, "silent", store.MethodRequest{MethodName: "ping"}); !errors.Is(err, store.ErrMethodTimeout) || store.CodeOf(err) != 504101 {
		t.Errorf("unanswered method = %v; want ErrMethodTimeout 504101", err)
	}
	empty := mustHubDial(t, e, 0, "empty", emptyDev.TLS())
	answerMethods(t, empty, "200", nil)
	res, err := e.InvokeMethod(context.Background(), hub, "empty", store.MethodRequest{MethodName: "ping"})
	if err != nil || res.Status != 200 || string(res.Payload) != "null" {
		t.Errorf("empty reply = %+v (%s), %v; want 200 null", res, res.Payload, err)
	}
}

func TestDirectMethodConnectTimeout(t *testing.T) {
	t.Parallel()
	e := StartForTest(t)
	hub := e.HubHost(0)
	dev := hubDevice(t, e, "dev-1")
	go func() {
		time.Sleep(200 * time.Millisecond)
		c, err := hubDial(t, e, 0, "dev-1", dev.TLS())
		if err != nil {
			t.Error(err)
			return
		}
		answerMethods(t, c, "200", []byte(`"late but here"`))
	}()
	res, err := e.InvokeMethod(context.Background(), hub, "dev-1", store.MethodRequest{MethodName: "ping", ConnectTimeoutInSeconds: 5})
	if err != nil || string(res.Payload) != `"late but here"` {
		t.Errorf("InvokeMethod with connect timeout = %+v, %v", res, err)
	}
}

func waitQueueEmpty(t *testing.T, e *Emulator, hub, id string) {
	t.Helper()
	deadline := time.Now().Add(waitTime)
	for time.Now().Before(deadline) {
		if p, _ := e.Store().PendingC2D(hub, id); len(p) == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	p, _ := e.Store().PendingC2D(hub, id)
	t.Fatalf("C2D queue still holds %d messages", len(p))
}

func TestC2DDelivery(t *testing.T) {
	t.Parallel()
	e := StartForTest(t)
	hub := e.HubHost(0)
	dev := hubDevice(t, e, "dev-1")
	id1, err := e.SendC2D(hub, "dev-1", []byte("first"), map[string]string{"color": "light blue"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.SendC2D(hub, "dev-1", []byte("second"), nil); err != nil {
		t.Fatal(err)
	}
	c := mustHubDial(t, e, 0, "dev-1", dev.TLS())
	time.Sleep(50 * time.Millisecond)
	select {
	case m := <-c.msgs:
		t.Fatalf("C2D delivered before subscribing: %s", m.Topic())
	default:
	}
	c.subscribe(t, "devices/dev-1/messages/devicebound/#")
	got := map[string]paho.Message{}
	for i := 0; i < 2; i++ {
		m := c.next(t)
		got[string(m.Payload())] = m
	}
	m := got["first"]
	if m == nil || m.Qos() != 1 {
		t.Fatalf("first C2D missing or not QoS 1: %v", got)
	}
	wantPrefix := "devices/dev-1/messages/devicebound/%24.mid=" + id1 + "&%24.to=%2Fdevices%2Fdev-1%2Fmessages%2FdeviceBound"
	if !strings.HasPrefix(m.Topic(), wantPrefix) || !strings.Contains(m.Topic(), "&color=light%20blue") {
		t.Errorf("C2D topic = %s; want prefix %s and color=light%%20blue", m.Topic(), wantPrefix)
	}
	waitQueueEmpty(t, e, hub, "dev-1") // PUBACK completed both
	if _, err := e.SendC2D(hub, "dev-1", []byte("online"), nil); err != nil {
		t.Fatal(err)
	}
	if m := c.next(t); string(m.Payload()) != "online" {
		t.Errorf("online C2D = %q", m.Payload())
	}
	waitQueueEmpty(t, e, hub, "dev-1")
}

// manualAckC2D connects id with acknowledgements left to the test and
// subscribes to its C2D messages, which arrive on the channel returned.
func manualAckC2D(t *testing.T, e *Emulator, id string) <-chan paho.Message {
	t.Helper()
	hub := e.HubHost(0)
	dev := hubDevice(t, e, id)
	msgs := make(chan paho.Message, 10)
	opts := paho.NewClientOptions().AddBroker("ssl://" + e.Info().Hubs[0].MQTTAddress).SetClientID(id).
		SetUsername(hub + "/" + id + "/?api-version=2021-04-12").SetTLSConfig(e.ClientTLSConfig(dev.TLS())).
		SetProtocolVersion(4).SetAutoReconnect(false).SetAutoAckDisabled(true)
	cl := paho.NewClient(opts)
	if tok := cl.Connect(); !tok.WaitTimeout(waitTime) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { cl.Disconnect(50) })
	tok := cl.Subscribe("devices/"+id+"/messages/devicebound/#", 1, func(_ paho.Client, m paho.Message) { msgs <- m })
	if !tok.WaitTimeout(waitTime) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	return msgs
}

func TestC2DRedeliveredWithoutPuback(t *testing.T) {
	t.Parallel()
	e := StartForTest(t, func(c *Config) { c.C2DLockTimeout = 300 * time.Millisecond })
	hub := e.HubHost(0)
	msgs := manualAckC2D(t, e, "dev-1")
	if _, err := e.SendC2D(hub, "dev-1", []byte("again"), nil); err != nil {
		t.Fatal(err)
	}
	<-msgs // not acknowledged: the lock expires and it comes back
	select {
	case m := <-msgs:
		m.Ack()
	case <-time.After(waitTime):
		t.Fatal("C2D message not redelivered after the lock expired")
	}
	waitQueueEmpty(t, e, hub, "dev-1")
}

// A message acknowledged on a connection is not delivered a second time
// on it, not even by a delivery pass that read the locks and the queue
// before the PUBACK completed it (a pass started by another SUBSCRIBE at
// connect, racing the acknowledgement): docs/protocol.md B.4, a message
// goes out again only once its lock expired or on a new connection. A new
// message with the same message id (a sender's retry) is delivered.
func TestC2DNotRedeliveredAfterPuback(t *testing.T) {
	t.Parallel()
	e := StartForTest(t)
	hub := e.HubHost(0)
	msgs := manualAckC2D(t, e, "dev-1")
	next := func() paho.Message {
		t.Helper()
		select {
		case m := <-msgs:
			return m
		case <-time.After(waitTime):
			t.Fatal("no C2D message delivered")
			return nil
		}
	}
	s := e.hub.conn(hub, "dev-1")
	if s == nil {
		t.Fatal("no session")
	}
	once, err := e.SendC2D(hub, "dev-1", []byte("once"), nil)
	if err != nil {
		t.Fatal(err)
	}
	m := next()
	locked := s.lockedC2D() // a pass reads the locks and the queue ...
	stale, err := e.store.PendingC2D(hub, "dev-1")
	if err != nil || len(stale) != 1 || !locked[once] {
		t.Fatalf("pending %v, %v, locked %v; want the message, locked", stale, err, locked)
	}
	m.Ack() // ... the PUBACK completes the message ...
	waitQueueEmpty(t, e, hub, "dev-1")
	s.deliverPending(locked, stale) // ... and the pass goes on.
	if _, err := e.SendC2D(hub, "dev-1", []byte("after"), nil); err != nil {
		t.Fatal(err)
	}
	if m := next(); string(m.Payload()) != "after" {
		t.Fatalf("next delivery %q; want \"after\" (the acknowledged message delivered a second time)", m.Payload())
	} else {
		m.Ack()
	}
	if _, err := e.store.EnqueueC2D(hub, "dev-1", store.C2DMessage{MessageID: once, Body: []byte("retry")}); err != nil {
		t.Fatal(err)
	}
	if m := next(); string(m.Payload()) != "retry" {
		t.Fatalf("next delivery %q; want the sender's retry with the same message id", m.Payload())
	} else {
		m.Ack()
	}
	waitQueueEmpty(t, e, hub, "dev-1")
}

func TestC2DQueueLimit(t *testing.T) {
	t.Parallel()
	e := StartForTest(t)
	hub := e.HubHost(0)
	hubDevice(t, e, "dev-1")
	for i := 0; i < store.MaxC2DQueue; i++ {
		if _, err := e.SendC2D(hub, "dev-1", []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.SendC2D(hub, "dev-1", []byte("x"), nil); !errors.Is(err, store.ErrQueueFull) {
		t.Errorf("51st C2D = %v; want ErrQueueFull (403004)", err)
	}
}
