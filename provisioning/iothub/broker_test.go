package iothub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/reefer/tracker/provisioning/internal/brokertest"
)

// A wire-level check through real paho, real mutual TLS and a real broker
// (mochi on 127.0.0.1:0) with a small hook that answers twin requests like
// IoT Hub. The protocol-complete emulator tests live with deploy/emulator.

type hubHook struct {
	mqtt.HookBase
	srv       *mqtt.Server
	mu        sync.Mutex
	users     []string
	telemetry []string
	methodRes []string
	reportedV int
}

func (h *hubHook) ID() string { return "hub" }
func (h *hubHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublish}, []byte{b})
}
func (h *hubHook) OnACLCheck(*mqtt.Client, string, bool) bool { return true }

func (h *hubHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.users = append(h.users, fmt.Sprintf("%s|%s|%s|clean=%v", pk.Connect.Username, cl.ID, brokertest.PeerCN(cl), pk.Connect.Clean))
	return true
}

func (h *hubHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	t := pk.TopicName
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case strings.HasPrefix(t, twinGetPrefix):
		rid := strings.TrimPrefix(t, twinGetPrefix)
		go h.srv.Publish("$iothub/twin/res/200/?$rid="+rid, []byte(`{"desired":{"telemetryDelay":1,"$version":5},"reported":{"$version":1}}`), false, 0)
	case strings.HasPrefix(t, reportedPrefix):
		rid := strings.TrimPrefix(t, reportedPrefix)
		h.reportedV++
		go h.srv.Publish(fmt.Sprintf("$iothub/twin/res/204/?$rid=%s&$version=%d", rid, h.reportedV+1), nil, false, 0)
	case strings.HasPrefix(t, "devices/"):
		h.telemetry = append(h.telemetry, fmt.Sprintf("%s qos=%d %s", t, pk.FixedHeader.Qos, pk.Payload))
	case strings.HasPrefix(t, "$iothub/methods/res/"):
		h.methodRes = append(h.methodRes, t+" "+string(pk.Payload))
	}
	return pk, nil
}

func TestClientAgainstBroker(t *testing.T) {
	t.Parallel()
	pki := brokertest.NewPKI(t, "sensor-thl-001")
	b := brokertest.New(t, pki)
	srv := b.Server
	hook := &hubHook{srv: srv}
	b.Start(t, hook)

	states := make(chan StateChange, 50)
	desired := make(chan Desired, 10)
	c, err := New(Config{
		Hub:       b.Addr,
		DeviceID:  "sensor-thl-001",
		TLS:       pki.ClientTLS(),
		KeepAlive: 30 * time.Second,
		OnState:   func(s StateChange) { states <- s },
		OnDesired: func(d Desired) { desired <- d },
		Sleep:     func(ctx context.Context, d time.Duration) error { return ctx.Err() },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.HandleMethod("ping", func(_ context.Context, p json.RawMessage) (int, any) { return 200, p })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	if d := <-desired; !d.Full || d.Version != 5 {
		t.Errorf("desired = %+v; want full version 5", d)
	}
	if err := c.Send(ctx, Message{Body: []byte(`{"t":4}`), ContentType: "application/json", Properties: map[string]string{"a b": "c"}}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if v, err := c.UpdateReported(ctx, map[string]int{"telemetryDelay": 3}); err != nil || v != 2 {
		t.Errorf("UpdateReported = %d, %v; want 2", v, err)
	}
	if err := srv.Publish("$iothub/methods/POST/ping/?$rid=9", []byte(`{"x":1}`), false, 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the method reply", func() bool {
		hook.mu.Lock()
		defer hook.mu.Unlock()
		return len(hook.methodRes) == 1
	})
	// The broker closes the socket, as the hub does on takeover (docs/protocol.md B.7).
	cl, ok := srv.Clients.Get("sensor-thl-001")
	if !ok {
		t.Fatal("client not known to the broker")
	}
	cl.Stop(errors.New("kicked"))
	var lost StateChange
	for s := range states {
		if s.State == StateDisconnected {
			lost = s
			break
		}
	}
	if !errors.Is(lost.Err, ErrConnectionLost) {
		t.Errorf("disconnect = %v; want ErrConnectionLost", lost.Err)
	}
	for s := range states {
		if s.State == StateConnected {
			break
		}
	}
	if err := c.Send(ctx, Message{Body: []byte("again")}); err != nil {
		t.Fatalf("Send after reconnect: %v", err)
	}

	hook.mu.Lock()
	defer hook.mu.Unlock()
	wantUser := b.Addr + "/sensor-thl-001/?api-version=2021-04-12&DeviceClientType=reefer-tracker|sensor-thl-001|sensor-thl-001|clean=false"
	if len(hook.users) != 2 || hook.users[0] != wantUser || hook.users[1] != wantUser {
		t.Errorf("CONNECTs = %q; want twice %q", hook.users, wantUser)
	}
	wantTel := []string{
		`devices/sensor-thl-001/messages/events/$.ct=application%2Fjson&a%20b=c qos=1 {"t":4}`,
		`devices/sensor-thl-001/messages/events/ qos=1 again`,
	}
	if strings.Join(hook.telemetry, "\n") != strings.Join(wantTel, "\n") {
		t.Errorf("telemetry:\n%s\nwant:\n%s", strings.Join(hook.telemetry, "\n"), strings.Join(wantTel, "\n"))
	}
	if hook.methodRes[0] != `$iothub/methods/res/200/?$rid=9 {"x":1}` {
		t.Errorf("method reply = %q", hook.methodRes[0])
	}
}
