package emulator

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/reefer/tracker/deploy/emulator/pki"
	"github.com/reefer/tracker/deploy/emulator/store"
	"github.com/reefer/tracker/internal/waitfor"
)

// These tests replay, with paho clients over TLS, every way one client's
// bytes could reach another through the broker: Will messages, retained
// messages, shared subscriptions, wildcard subscriptions to other
// devices' topics, QoS and retain flags, and MQTT 5 features. Two victims
// listen the whole time: a hub device subscribed as devices subscribe,
// and a DPS client waiting for its registration response.

type victims struct {
	e         *Emulator
	id, dpsID string
	hub       *client // hub device id
	dps       *client // DPS client dpsID
}

func newVictims(t *testing.T, e *Emulator) victims {
	return newVictimsNamed(t, e, "victim", "dps-victim")
}

func newVictimsNamed(t *testing.T, e *Emulator, hubID, dpsID string) victims {
	t.Helper()
	cert := hubDevice(t, e, hubID)
	hc := mustHubDial(t, e, 0, hubID, cert.TLS())
	subscribeAll(t, hc, hubID)
	dcert, err := pki.NewSelfSigned(dpsID, pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return victims{e: e, id: hubID, dpsID: dpsID, hub: hc, dps: dpsDial(t, e, dpsID, dcert.TLS())}
}

// subscribeAll subscribes as devices do, with all five filters a device
// may hold, including the C2D wildcard form of the embedded C SDK.
func subscribeAll(t *testing.T, c *client, id string) {
	t.Helper()
	for _, f := range []string{"$iothub/twin/PATCH/properties/desired/#", "$iothub/methods/POST/#", "$iothub/twin/res/#",
		"devices/" + id + "/messages/devicebound/#", "devices/+/messages/devicebound/#"} {
		c.subscribe(t, f)
	}
}

// nothingReached gives each victim one genuine message and fails for
// anything else it received before it or receives soon after.
func (v victims) nothingReached(t *testing.T, why string) {
	t.Helper()
	ver, err := v.e.UpdateDesired(v.e.HubHost(0), v.id, map[string]any{"control": why})
	if err != nil {
		t.Fatal(err)
	}
	control := fmt.Sprintf(desiredFmt, ver)
	onlyBefore(t, v.hub, why, func(m paho.Message) bool { return m.Topic() == control })
	if err := v.dps.publish(t, registerTopic("ctl"), 1, []byte(`{"registrationId":"`+v.dpsID+`"}`)); err != nil {
		t.Fatal(err)
	}
	// Unenrolled: DPS answers 401 (docs/protocol.md G.2); a forgery would say 200.
	onlyBefore(t, v.dps, why, func(m paho.Message) bool { return m.Topic() == "$dps/registrations/res/401/?$rid=ctl" })
	select {
	case m := <-v.hub.msgs:
		t.Errorf("%s: hub victim received %s %q", why, m.Topic(), m.Payload())
	case m := <-v.dps.msgs:
		t.Errorf("%s: DPS victim received %s %q", why, m.Topic(), m.Payload())
	case <-time.After(100 * time.Millisecond):
	}
}

func onlyBefore(t *testing.T, c *client, why string, control func(paho.Message) bool) {
	t.Helper()
	for {
		m := c.next(t)
		if control(m) {
			return
		}
		t.Errorf("%s: victim received %s %q", why, m.Topic(), m.Payload())
	}
}

func hubUser(e *Emulator, id string) string {
	return e.HubHost(0) + "/" + id + "/?api-version=2021-04-12"
}

func TestWillCannotReachOtherClients(t *testing.T) {
	t.Parallel()
	e := StartForTest(t)
	v := newVictims(t, e)
	attacker := hubDevice(t, e, "attacker")
	stranger, err := pki.NewSelfSigned("stranger", pki.Options{}) // no enrollment anywhere
	if err != nil {
		t.Fatal(err)
	}
	forged := []will{
		{topic: "$iothub/twin/PATCH/properties/desired/?$version=99", payload: []byte(`{"telemetryDelay":86400}`)},
		{topic: "$iothub/methods/POST/sendNow/?$rid=1", payload: []byte(`{}`)},
		{topic: "devices/victim/messages/devicebound/%24.mid=evil", payload: []byte("evil"), qos: 1},
		{topic: "devices/OTHER/messages/devicebound/%24.mid=evil", payload: []byte("evil"), qos: 1},
		{topic: "$iothub/twin/res/200/?$rid=1", payload: []byte(`{"desired":{"telemetryDelay":86400}}`)},
		{topic: "$dps/registrations/res/200/?$rid=ctl", payload: []byte(`{"status":"assigned","registrationState":{"assignedHub":"evil.example.com","deviceId":"victim"}}`)},
		{topic: "devices/victim/messages/events/", payload: []byte(`{"temperature":99}`)},
		{topic: "#", payload: []byte("x")},
	}
	attackers := []struct {
		name string
		addr string
		o    dialOpts
	}{
		{"hub device", e.Info().Hubs[0].MQTTAddress, dialOpts{clientID: "attacker", username: hubUser(e, "attacker"), cert: attacker.TLS(), clean: true}},
		{"unenrolled DPS client", e.DPSEndpoint(), dialOpts{clientID: "stranger", username: e.IDScope() + "/registrations/stranger/api-version=2019-03-31", cert: stranger.TLS(), clean: true}},
	}
	for _, a := range attackers {
		for _, w := range forged {
			why := a.name + " with a Will on " + w.topic
			o := a.o
			o.will = &w
			c, err := dial(t, e, a.addr, o)
			switch {
			case err == nil:
				t.Errorf("%s: CONNECT accepted; want CONNACK 5", why)
				c.drop()
				time.Sleep(300 * time.Millisecond) // only when already failing: let the Will fire
			case !isNotAuthorized(err):
				t.Errorf("%s: connect = %v; want CONNACK 5 (not authorized)", why, err)
			}
			v.nothingReached(t, why)
		}
	}
	if m := e.Telemetry(e.HubHost(0), "victim"); len(m) != 0 {
		t.Errorf("telemetry recorded as the victim: %+v", m)
	}
	// The refusal is CONNACK 5 and a closed connection, nothing more.
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: "attacker",
			UsernameFlag: true, Username: []byte(hubUser(e, "attacker")),
			WillFlag: true, WillTopic: forged[0].topic, WillPayload: forged[0].payload}}
	if ack, err := rawConnectAnswer(t, e.Info().Hubs[0].MQTTAddress, e.ClientTLSConfig(attacker.TLS()), pk); !bytes.Equal(ack, []byte{0x20, 2, 0, 5}) {
		t.Errorf("CONNECT with a forged Will answered %x (%v); want CONNACK 5 and close", ack, err)
	}
	if e.IsConnected(e.HubHost(0), "attacker") {
		t.Error("refused attacker registered as connected")
	}
	// The attacker's identity still works without a Will.
	c := mustHubDial(t, e, 0, "attacker", attacker.TLS())
	if err := c.publish(t, "devices/attacker/messages/events/", 1, []byte("ok")); err != nil {
		t.Errorf("attacker without Will: %v", err)
	}
}

// A Will on the device's own telemetry topic is what Azure allows: on an
// ungraceful close it is recorded as telemetry with iothub-MessageType
// Will and reaches no client; after a DISCONNECT it is discarded.
func TestWillOnOwnTelemetry(t *testing.T) {
	t.Parallel()
	e := StartForTest(t)
	hub := e.HubHost(0)
	v := newVictims(t, e)
	dev := hubDevice(t, e, "dev-1")
	w := &will{topic: "devices/dev-1/messages/events/$.ct=text%2Fplain&reason=lost", payload: []byte("gone"), qos: 1}
	o := dialOpts{clientID: "dev-1", username: hubUser(e, "dev-1"), cert: dev.TLS(), clean: true, will: w}

	c, err := dial(t, e, e.Info().Hubs[0].MQTTAddress, o)
	if err != nil {
		t.Fatalf("connect with a Will on the own telemetry topic: %v", err)
	}
	c.close() // DISCONNECT: the Will is discarded
	waitfor.Until(t, "dev-1 disconnected", waitTime, 10*time.Millisecond, func() bool { return !e.IsConnected(hub, "dev-1") })
	if m := e.Telemetry(hub, "dev-1"); len(m) != 0 {
		t.Fatalf("Will recorded after a clean DISCONNECT: %+v", m)
	}

	c, err = dial(t, e, e.Info().Hubs[0].MQTTAddress, o)
	if err != nil {
		t.Fatal(err)
	}
	c.drop()
	waitfor.Until(t, "the Will as telemetry", waitTime, 10*time.Millisecond, func() bool { return len(e.Telemetry(hub, "dev-1")) > 0 })
	m := e.Telemetry(hub, "dev-1")[0]
	if !bytes.Equal(m.Body, w.payload) || m.Properties["iothub-MessageType"] != "Will" || m.Properties["reason"] != "lost" || m.SystemProperties["content-type"] != "text/plain" {
		t.Errorf("Will telemetry = body %q properties %v system %v", m.Body, m.Properties, m.SystemProperties)
	}
	v.nothingReached(t, "Will on the own telemetry topic")

	// A retained Will is forwarded like retained telemetry (docs/protocol.md B.2).
	rw := *w
	rw.retain = true
	o.will = &rw
	c, err = dial(t, e, e.Info().Hubs[0].MQTTAddress, o)
	if err != nil {
		t.Fatalf("connect with a retained Will: %v", err)
	}
	c.drop()
	waitfor.Until(t, "the retained Will as telemetry", waitTime, 10*time.Millisecond, func() bool { return len(e.Telemetry(hub, "dev-1")) > 1 })
	if m := e.Telemetry(hub, "dev-1")[1]; m.Properties["mqtt-retain"] != "true" || m.Properties["iothub-MessageType"] != "Will" {
		t.Errorf("retained Will properties = %v", m.Properties)
	}
	v.nothingReached(t, "retained Will on the own telemetry topic")

	// QoS 2 is not supported (docs/protocol.md B.2): such a Will is refused.
	qw := *w
	qw.qos = 2
	o.will = &qw
	if _, err := dial(t, e, e.Info().Hubs[0].MQTTAddress, o); !isNotAuthorized(err) {
		t.Errorf("connect with a QoS 2 Will = %v; want CONNACK 5", err)
	}
}

// Every other way one client's bytes could reach another client.
func TestNoOtherPathBetweenClients(t *testing.T) {
	t.Parallel()
	e := StartForTest(t)
	hub := e.HubHost(0)
	v := newVictims(t, e)
	attacker := hubDevice(t, e, "attacker")
	stranger, err := pki.NewSelfSigned("stranger", pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	hubAttacker := func(t *testing.T) *client { return mustHubDial(t, e, 0, "attacker", attacker.TLS()) }
	dpsAttacker := func(t *testing.T) *client {
		c, err := dial(t, e, e.DPSEndpoint(), dialOpts{clientID: "stranger", username: e.IDScope() + "/registrations/stranger/api-version=2019-03-31", cert: stranger.TLS(), clean: true})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	// Refused outright: the connection closes (docs/protocol.md G.4).
	closes := []struct {
		name string
		open func(*testing.T) *client
		act  func(*client)
	}{
		{"shared subscription to methods", hubAttacker, func(c *client) { c.c.Subscribe("$share/g/$iothub/methods/POST/#", 1, nil) }},
		{"shared subscription to C2D", hubAttacker, func(c *client) { c.c.Subscribe("$share/g/devices/+/messages/devicebound/#", 1, nil) }},
		{"shared subscription to DPS responses", dpsAttacker, func(c *client) { c.c.Subscribe("$share/g/$dps/registrations/res/#", 1, nil) }},
		{"subscribe to another device's C2D", hubAttacker, func(c *client) { c.c.Subscribe("devices/victim/messages/devicebound/#", 1, nil) }},
		{"subscribe to everything", hubAttacker, func(c *client) { c.c.Subscribe("#", 1, nil) }},
		{"subscribe to $SYS", hubAttacker, func(c *client) { c.c.Subscribe("$SYS/#", 1, nil) }},
		{"DPS client subscribing to methods", dpsAttacker, func(c *client) { c.c.Subscribe("$iothub/methods/POST/#", 1, nil) }},
		{"DPS client subscribing to C2D", dpsAttacker, func(c *client) { c.c.Subscribe("devices/+/messages/devicebound/#", 1, nil) }},
		{"retained desired patch", hubAttacker, func(c *client) {
			c.c.Publish("$iothub/twin/PATCH/properties/desired/?$version=99", 1, true, []byte(`{"telemetryDelay":86400}`))
		}},
		{"retained method call", hubAttacker, func(c *client) { c.c.Publish("$iothub/methods/POST/sendNow/?$rid=1", 1, true, []byte(`{}`)) }},
		{"retained C2D", hubAttacker, func(c *client) { c.c.Publish("devices/victim/messages/devicebound/x", 1, true, []byte(`evil`)) }},
		{"QoS 0 forged DPS response", hubAttacker, func(c *client) { c.c.Publish("$dps/registrations/res/200/?$rid=ctl", 0, false, []byte(`{}`)) }},
		{"DPS client publishing a reported patch", dpsAttacker, func(c *client) {
			c.c.Publish("$iothub/twin/PATCH/properties/reported/?$rid=1", 1, false, []byte(`{}`))
		}},
		{"DPS client publishing telemetry as the victim", dpsAttacker, func(c *client) { c.c.Publish("devices/victim/messages/events/", 1, true, []byte(`{}`)) }},
	}
	for _, tc := range closes {
		c := tc.open(t)
		tc.act(c)
		c.expectLost(t, tc.name)
		v.nothingReached(t, tc.name)
	}

	// Allowed, and still private: the attacker holds every filter a
	// device may hold, including devices/+/messages/devicebound/#, and
	// publishes retained telemetry, while the service talks to the victim.
	c := hubAttacker(t)
	subscribeAll(t, c, "attacker")
	tok := c.c.Publish("devices/attacker/messages/events/", 1, true, []byte(`{"retained":true}`))
	if !tok.WaitTimeout(waitTime) || tok.Error() != nil {
		t.Fatalf("retained telemetry: %v", tok.Error())
	}
	if _, err := e.SendC2D(hub, "victim", []byte("for the victim"), nil); err != nil {
		t.Fatal(err)
	}
	if m := v.hub.next(t); !strings.HasPrefix(m.Topic(), "devices/victim/messages/devicebound/") || string(m.Payload()) != "for the victim" {
		t.Errorf("victim C2D = %s %q", m.Topic(), m.Payload())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, _ = e.InvokeMethod(ctx, hub, "victim", store.MethodRequest{MethodName: "sendNow"}) // unanswered: times out
	cancel()
	if m := v.hub.next(t); !strings.HasPrefix(m.Topic(), "$iothub/methods/POST/sendNow/") {
		t.Errorf("victim method = %s", m.Topic())
	}
	v.nothingReached(t, "service traffic to the victim")
	select {
	case m := <-c.msgs:
		t.Errorf("attacker received %s %q", m.Topic(), m.Payload())
	default:
	}
	if m := e.Telemetry(hub, "attacker"); len(m) != 1 || m[0].Properties["mqtt-retain"] != "true" {
		t.Errorf("attacker telemetry = %+v; want one message with mqtt-retain", m)
	}

	// A device that subscribes after all that gets no retained message.
	late := newVictimsNamed(t, e, "late", "dps-late")
	late.nothingReached(t, "late subscriber")
	if m := e.Telemetry(hub, "victim"); len(m) != 0 {
		t.Errorf("telemetry recorded as the victim: %+v", m)
	}
}

// MQTT 5 (topic aliases, subscription identifiers, user properties, Will
// delay) is refused at CONNECT: a standard hub and DPS speak 3.1.1.
func TestMQTT5Refused(t *testing.T) {
	t.Parallel()
	e := StartForTest(t)
	dev := hubDevice(t, e, "dev-1")
	for _, addr := range []string{e.Info().Hubs[0].MQTTAddress, e.DPSEndpoint()} {
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 5,
			Properties: packets.Properties{TopicAliasMaximum: 10},
			Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 60, ClientIdentifier: "dev-1",
				UsernameFlag: true, Username: []byte(hubUser(e, "dev-1"))}}
		ack, err := rawConnectAnswer(t, addr, e.ClientTLSConfig(dev.TLS()), pk)
		if len(ack) < 4 || ack[0] != 0x20 || ack[3] != packets.ErrUnsupportedProtocolVersion.Code {
			t.Errorf("%s: MQTT 5 CONNECT answered %x (%v); want CONNACK 0x84 and close", addr, ack, err)
		}
	}
	if e.IsConnected(e.HubHost(0), "dev-1") {
		t.Error("MQTT 5 client registered as connected")
	}
}

// rawConnectAnswer sends pk as the first packet and returns everything the
// server writes until it closes the connection (a read error after
// waitTime means it did not close).
func rawConnectAnswer(t *testing.T, addr string, cfg *tls.Config, pk packets.Packet) ([]byte, error) {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(waitTime))
	return io.ReadAll(conn)
}

// Whatever reaches mochi's delivery path is refused: the emulator writes
// every message to its one recipient itself.
func TestBrokerDeliversNothing(t *testing.T) {
	t.Parallel()
	h := &brokerHook{}
	cl := &mqtt.Client{}
	h.sessions.Store(cl, &session{kind: kindHub, deviceID: "dev-1"})
	for _, topic := range []string{"$iothub/twin/PATCH/properties/desired/?$version=1", "$iothub/methods/POST/m/?$rid=1",
		"devices/dev-1/messages/devicebound/x", "$dps/registrations/res/200/?$rid=1"} {
		if h.OnACLCheck(cl, topic, false) {
			t.Errorf("delivery of %s allowed", topic)
		}
	}
	if !h.OnACLCheck(cl, "$iothub/twin/res/#", false) || !h.OnACLCheck(cl, "devices/dev-1/messages/devicebound/#", false) {
		t.Error("a device's own subscription filters refused")
	}
	if h.OnACLCheck(cl, "devices/dev-2/messages/devicebound/#", false) || h.OnACLCheck(&mqtt.Client{}, "$iothub/twin/res/#", false) {
		t.Error("another device's filter, or a client without session, allowed")
	}
}
