package emulator

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/reefer/tracker/deploy/emulator/pki"
	"github.com/reefer/tracker/deploy/emulator/store"
	"github.com/reefer/tracker/internal/waitfor"
)

// hubDevice creates a selfSigned identity on hub 0 and returns its cert.
func hubDevice(t *testing.T, e *Emulator, id string) *pki.Cert {
	t.Helper()
	c, err := pki.NewSelfSigned(id, pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.CreateDevice(e.HubHost(0), id, c.Cert); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestHubConnectRefusals(t *testing.T) {
	t.Parallel()
	e := StartForTest(t)
	hub := e.HubHost(0)
	dev := hubDevice(t, e, "dev-1")
	stranger, _ := pki.NewSelfSigned("dev-1", pki.Options{})
	disabled := hubDevice(t, e, "dev-off")
	if err := e.SetDeviceStatus(hub, "dev-off", store.StatusDisabled); err != nil {
		t.Fatal(err)
	}
	deleted := hubDevice(t, e, "dev-gone")
	if err := e.Store().DeleteDevice(hub, "dev-gone", "*"); err != nil {
		t.Fatal(err)
	}
	user := func(id string) string { return hub + "/" + id + "/?api-version=2021-04-12" }
	cases := []struct {
		name string
		o    dialOpts
	}{
		{"unknown device", dialOpts{clientID: "nobody", username: user("nobody"), cert: dev.TLS()}},
		{"disabled device", dialOpts{clientID: "dev-off", username: user("dev-off"), cert: disabled.TLS()}},
		{"deleted device", dialOpts{clientID: "dev-gone", username: user("dev-gone"), cert: deleted.TLS()}},
		{"thumbprint mismatch", dialOpts{clientID: "dev-1", username: user("dev-1"), cert: stranger.TLS()}},
		{"client id mismatch", dialOpts{clientID: "dev-2", username: user("dev-1"), cert: dev.TLS()}},
		{"wrong host", dialOpts{clientID: "dev-1", username: "other.azure-devices.net/dev-1/?api-version=2021-04-12", cert: dev.TLS()}},
		{"no api-version", dialOpts{clientID: "dev-1", username: hub + "/dev-1/?DeviceClientType=x", cert: dev.TLS()}},
		{"module", dialOpts{clientID: "dev-1/m", username: hub + "/dev-1/m/?api-version=2021-04-12", cert: dev.TLS()}},
		{"password", dialOpts{clientID: "dev-1", username: user("dev-1"), password: "SharedAccessSignature x", cert: dev.TLS()}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.o.clean = true
			if _, err := dial(t, e, e.Info().Hubs[0].MQTTAddress, c.o); !isNotAuthorized(err) {
				t.Errorf("connect(%s) = %v; want CONNACK 5", c.name, err)
			}
		})
	}
	// The good device connects, also with extra user-name parameters.
	o := dialOpts{clientID: "dev-1", username: hub + "/dev-1/?DeviceClientType=c%2F1.0&api-version=2020-09-30&model-id=dtmi%3Acom%3Ax%3B1", cert: dev.TLS(), clean: true}
	if _, err := dial(t, e, e.Info().Hubs[0].MQTTAddress, o); err != nil {
		t.Fatalf("connect good device: %v", err)
	}
	if !e.IsConnected(hub, "dev-1") {
		t.Error("IsConnected = false after connect")
	}
	if tw, _ := e.Store().GetTwin(hub, "dev-1"); tw.ModelID != "dtmi:com:x;1" || tw.ConnectionState != store.Connected {
		t.Errorf("twin modelId %q state %q; want dtmi:com:x;1 Connected", tw.ModelID, tw.ConnectionState)
	}
}

// The model id a Plug and Play device announces at CONNECT (docs/protocol.md B.1
// model-id) is the twin's modelId, query-encoded as the tracker sends it or
// written as is, the way Learn's samples do (the ";" is the value's).
func TestHubTwinShowsModelID(t *testing.T) {
	t.Parallel()
	e := StartForTest(t)
	hub := e.HubHost(0)
	svc := newSvcClient(t, e)
	h := e.Info().Hubs[0]
	for dev, user := range map[string]string{
		"dev-enc":   "/?api-version=2021-04-12&DeviceClientType=reefer-tracker&model-id=dtmi%3Areefer%3Atracker%3B1",
		"dev-plain": "/?api-version=2020-09-30&model-id=dtmi:reefer:tracker;1",
	} {
		cert := hubDevice(t, e, dev).TLS()
		c, err := dial(t, e, h.MQTTAddress, dialOpts{clientID: dev, username: hub + "/" + dev + user, cert: cert, clean: true})
		if err != nil {
			t.Fatalf("%s: connect: %v", dev, err)
		}
		c.close()
		code, b := svc.do("GET", "/twins/"+dev+"?api-version=2021-04-12", h.HostName, h.SharedAccessKeyName, h.SharedAccessKey, nil)
		var tw struct {
			ModelID string `json:"modelId"`
		}
		if code != http.StatusOK || json.Unmarshal(b, &tw) != nil || tw.ModelID != "dtmi:reefer:tracker;1" {
			t.Errorf("%s: GET twin = %d %s; want modelId dtmi:reefer:tracker;1", dev, code, b)
		}
	}
}

func TestHubTelemetry(t *testing.T) {
	t.Parallel()
	e := StartForTest(t)
	hub := e.HubHost(0)
	dev := hubDevice(t, e, "dev-1")
	c := mustHubDial(t, e, 0, "dev-1", dev.TLS())
	topics := []string{
		"devices/dev-1/messages/events/$.mid=m1&$.ct=application%2Fjson&%24.ce=utf-8&$.ctime=2025-01-01T00:00:00Z&temp%20unit=deg%20C&flag&a%2Bb=1%2B2",
		"devices/dev-1/messages/events/",
		"devices/dev-1/messages/events",
	}
	for i, tp := range topics {
		if err := c.publish(t, tp, 1, []byte(fmt.Sprintf(`{"n":%d}`, i))); err != nil {
			t.Fatalf("publish %q: %v", tp, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	msgs, err := e.WaitTelemetry(ctx, hub, "dev-1", 3)
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[0]
	wantSys := map[string]string{"message-id": "m1", "content-type": "application/json", "content-encoding": "utf-8",
		"iothub-creation-time-utc": "2025-01-01T00:00:00Z", "iothub-connection-device-id": "dev-1"}
	for k, v := range wantSys {
		if m.SystemProperties[k] != v {
			t.Errorf("system property %s = %q; want %q", k, m.SystemProperties[k], v)
		}
	}
	if m.SystemProperties["iothub-connection-auth-generation-id"] == "" || m.SystemProperties["iothub-enqueuedtime"] == "" {
		t.Errorf("hub stamps missing: %v", m.SystemProperties)
	}
	wantApp := map[string]string{"temp unit": "deg C", "flag": "", "a+b": "1+2"}
	if fmt.Sprint(m.Properties) != fmt.Sprint(wantApp) {
		t.Errorf("application properties = %v; want %v", m.Properties, wantApp)
	}
	if m.MessageID != "m1" || string(m.Body) != `{"n":0}` || m.EnqueuedTime.IsZero() || time.Since(m.EnqueuedTime.Time) > time.Minute {
		t.Errorf("message = id %q body %s enqueued %v", m.MessageID, m.Body, m.EnqueuedTime)
	}
	if string(msgs[2].Body) != `{"n":2}` || len(msgs[1].Properties) != 0 {
		t.Errorf("bag-less messages = %+v", msgs[1:])
	}
	d, _ := e.Store().GetDevice(hub, "dev-1")
	if d.LastActivityTime.IsZero() {
		t.Error("lastActivityTime not updated by telemetry")
	}
}

func TestHubTwin(t *testing.T) {
	t.Parallel()
	e := StartForTest(t)
	hub := e.HubHost(0)
	dev := hubDevice(t, e, "dev-1")
	c := mustHubDial(t, e, 0, "dev-1", dev.TLS())
	c.subscribe(t, "$iothub/twin/res/#")
	c.subscribe(t, "$iothub/twin/PATCH/properties/desired/#")

	if err := c.publish(t, "$iothub/twin/PATCH/properties/reported/?$rid=r1", 0, []byte(`{"fw":"1.2","battery":55}`)); err != nil {
		t.Fatal(err)
	}
	m := c.next(t)
	if m.Topic() != "$iothub/twin/res/204/?$rid=r1&$version=2" || len(m.Payload()) != 0 {
		t.Errorf("reported PATCH response = %s %q; want 204 $version=2, empty", m.Topic(), m.Payload())
	}
	bad := []struct{ name, body string }{
		{"malformed JSON", `{"fw":`},
		{"not an object", `[1]`},
		{"dollar key", `{"$x":1}`},
		{"oversized", `{"big":"` + strings.Repeat("x", 5000) + `"}`},
	}
	for i, b := range bad {
		rid := fmt.Sprintf("b%d", i)
		if err := c.publish(t, "$iothub/twin/PATCH/properties/reported/?$rid="+rid, 0, []byte(b.body)); err != nil {
			t.Fatal(err)
		}
		m := c.next(t)
		if m.Topic() != "$iothub/twin/res/400/?$rid="+rid {
			t.Errorf("reported PATCH (%s) = %s %s; want 400", b.name, m.Topic(), m.Payload())
		}
	}
	v, err := e.UpdateDesired(hub, "dev-1", map[string]any{"interval": 60, "mode": map[string]any{"eco": true}})
	if err != nil {
		t.Fatal(err)
	}
	m = c.next(t)
	if m.Topic() != fmt.Sprintf("$iothub/twin/PATCH/properties/desired/?$version=%d", v) {
		t.Errorf("desired notification topic = %s; want $version=%d", m.Topic(), v)
	}
	var patch map[string]any
	_ = json.Unmarshal(m.Payload(), &patch)
	if patch["interval"] != float64(60) || patch["$version"] != float64(v) {
		t.Errorf("desired notification body = %s", m.Payload())
	}
	if err := c.publish(t, "$iothub/twin/GET/?$rid=g", 0, nil); err != nil {
		t.Fatal(err)
	}
	m = c.next(t)
	want := `{"desired":{"$version":2,"interval":60,"mode":{"eco":true}},"reported":{"$version":2,"battery":55,"fw":"1.2"}}`
	if m.Topic() != "$iothub/twin/res/200/?$rid=g" || string(m.Payload()) != want {
		t.Errorf("twin GET = %s %s; want 200 %s", m.Topic(), m.Payload(), want)
	}
	// The service view has the reported values with $metadata.
	tw, _ := e.Store().GetTwin(hub, "dev-1")
	if tw.Properties.Reported.Props["fw"] != "1.2" || tw.Properties.Reported.Metadata["fw"] == nil {
		t.Errorf("service twin reported = %v / %v", tw.Properties.Reported.Props, tw.Properties.Reported.Metadata)
	}
}

func TestHubConnectionViolationsClose(t *testing.T) {
	t.Parallel()
	e := StartForTest(t)
	dev := hubDevice(t, e, "dev-1")
	hubDevice(t, e, "dev-2")
	cases := []struct {
		name string
		act  func(t *testing.T, c *client)
	}{
		{"publish to another device", func(t *testing.T, c *client) { _ = c.publish(t, "devices/dev-2/messages/events/", 0, []byte("x")) }},
		{"publish to unknown topic", func(t *testing.T, c *client) { _ = c.publish(t, "hello/world", 0, []byte("x")) }},
		{"publish QoS 2", func(t *testing.T, c *client) {
			c.c.Publish("devices/dev-1/messages/events/", 2, false, []byte("x"))
		}},
		{"subscribe everything", func(t *testing.T, c *client) { c.c.Subscribe("#", 0, nil) }},
		{"subscribe another device", func(t *testing.T, c *client) { c.c.Subscribe("devices/dev-2/messages/devicebound/#", 0, nil) }},
		{"six subscriptions", func(t *testing.T, c *client) {
			c.c.SubscribeMultiple(map[string]byte{
				"devices/dev-1/messages/devicebound/#": 1, "devices/+/messages/devicebound/#": 1, "$iothub/twin/res/#": 0,
				"$iothub/twin/PATCH/properties/desired/#": 0, "$iothub/methods/POST/#": 0,
			}, nil).WaitTimeout(waitTime)
			c.c.Subscribe("$iothub/twin/res/+", 0, nil)
		}},
		{"oversized telemetry", func(t *testing.T, c *client) {
			c.c.Publish("devices/dev-1/messages/events/", 1, false, bytes.Repeat([]byte("x"), 256*1024+1))
		}},
		{"bad property bag", func(t *testing.T, c *client) {
			c.c.Publish("devices/dev-1/messages/events/a=%zz", 1, false, []byte("x"))
		}},
		{"twin GET without rid", func(t *testing.T, c *client) {
			if err := c.publish(t, "$iothub/twin/GET/?", 0, nil); err != nil {
				t.Log(err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := mustHubDial(t, e, 0, "dev-1", dev.TLS())
			tc.act(t, c)
			c.expectLost(t, tc.name)
		})
	}
	// After all that the emulator still serves the device.
	c := mustHubDial(t, e, 0, "dev-1", dev.TLS())
	if err := c.publish(t, "devices/dev-1/messages/events/", 1, []byte("ok")); err != nil {
		t.Fatalf("telemetry after violations: %v", err)
	}
	// A QoS 2 subscription is granted QoS 1 (docs/protocol.md B.2).
	tok := c.c.Subscribe("$iothub/twin/res/#", 2, nil)
	tok.WaitTimeout(waitTime)
	if st := tok.(interface{ Result() map[string]byte }).Result(); st["$iothub/twin/res/#"] != 1 {
		t.Errorf("QoS 2 subscription granted %v; want 1", st)
	}
}

func TestHubDisableAndDeleteDisconnect(t *testing.T) {
	t.Parallel()
	e := StartForTest(t)
	hub := e.HubHost(0)
	for _, action := range []string{"disable", "delete", "re-key"} {
		t.Run(action, func(t *testing.T) {
			id := "dev-" + action
			dev := hubDevice(t, e, id)
			c := mustHubDial(t, e, 0, id, dev.TLS())
			var err error
			switch action {
			case "disable":
				err = e.SetDeviceStatus(hub, id, store.StatusDisabled)
			case "delete":
				err = e.Store().DeleteDevice(hub, id, "*")
			case "re-key":
				other, _ := pki.NewSelfSigned(id, pki.Options{})
				d, _ := e.Store().GetDevice(hub, id)
				tp := store.ThumbprintSHA1(other.Cert)
				d.Authentication.X509Thumbprint.PrimaryThumbprint = &tp
				_, err = e.Store().PutDevice(hub, d, "*")
			}
			if err != nil {
				t.Fatal(err)
			}
			c.expectLost(t, action)
			if _, err := hubDial(t, e, 0, id, dev.TLS()); !isNotAuthorized(err) {
				t.Errorf("reconnect after %s = %v; want CONNACK 5", action, err)
			}
		})
	}
}

func TestHubSecondConnectionWins(t *testing.T) {
	t.Parallel()
	e := StartForTest(t)
	dev := hubDevice(t, e, "dev-1")
	first := mustHubDial(t, e, 0, "dev-1", dev.TLS())
	second := mustHubDial(t, e, 0, "dev-1", dev.TLS())
	first.expectLost(t, "first connection after the second connected")
	if err := second.publish(t, "devices/dev-1/messages/events/", 1, []byte("x")); err != nil {
		t.Errorf("second connection telemetry: %v", err)
	}
	if !e.IsConnected(e.HubHost(0), "dev-1") {
		t.Error("device not connected after takeover")
	}
}

// rawConnect dials the hub with TLS and sends a hand-made CONNECT.
func rawConnect(t *testing.T, e *Emulator, cert tls.Certificate, id string, keepalive uint16) *tls.Conn {
	t.Helper()
	conn, err := tls.Dial("tcp", e.Info().Hubs[0].MQTTAddress, e.ClientTLSConfig(cert))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: keepalive, ClientIdentifier: id,
			UsernameFlag: true, Username: []byte(e.HubHost(0) + "/" + id + "/?api-version=2021-04-12")}}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, 4)
	_ = conn.SetReadDeadline(time.Now().Add(waitTime))
	if _, err := conn.Read(ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("CONNACK = %x, %v; want accepted", ack, err)
	}
	return conn
}

func TestHubKeepAliveEnforced(t *testing.T) {
	t.Parallel()
	e := StartForTest(t)
	dev := hubDevice(t, e, "dev-1")
	conn := rawConnect(t, e, dev.TLS(), "dev-1", 1)
	start := time.Now()
	_ = conn.SetReadDeadline(time.Now().Add(waitTime))
	_, err := conn.Read(make([]byte, 1))
	if err == nil || time.Since(start) > 3*time.Second {
		t.Errorf("silent client with keep-alive 1 s: read = %v after %v; want close after ~1.5 s", err, time.Since(start))
	}
}

func TestMalformedPacketsDoNotHurt(t *testing.T) {
	t.Parallel()
	e := StartForTest(t)
	dev := hubDevice(t, e, "dev-1")
	conn := rawConnect(t, e, dev.TLS(), "dev-1", 60)
	// A PUBLISH whose remaining length promises more than the topic
	// length field allows, then garbage.
	_, _ = conn.Write([]byte{0x30, 0x03, 0xff, 0xff, 0x00, 0xde, 0xad, 0xbe, 0xef})
	_ = conn.SetReadDeadline(time.Now().Add(waitTime))
	if _, err := conn.Read(make([]byte, 16)); err == nil {
		t.Error("connection survived a malformed packet")
	}
	// Garbage instead of CONNECT.
	raw, err := tls.Dial("tcp", e.Info().Hubs[0].MQTTAddress, e.ClientTLSConfig(dev.TLS()))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = raw.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	_ = raw.SetReadDeadline(time.Now().Add(waitTime))
	if _, err := raw.Read(make([]byte, 16)); err == nil {
		t.Error("connection survived an HTTP request")
	}
	raw.Close()
	c := mustHubDial(t, e, 0, "dev-1", dev.TLS())
	if err := c.publish(t, "devices/dev-1/messages/events/", 1, []byte("still alive")); err != nil {
		t.Fatal(err)
	}
}

func TestHubCertificateAuthorityIdentity(t *testing.T) {
	t.Parallel()
	e := StartForTest(t)
	hub := e.HubHost(0)
	f := newFleet(t)
	if _, err := e.Store().PutCACertificate(hub, "fleet-root", f.root.PEM(), false, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Store().PutDevice(hub, store.Device{DeviceID: "ca-dev", Authentication: store.AuthenticationMechanism{Type: store.AuthCertificateAuthority}}, ""); err != nil {
		t.Fatal(err)
	}
	dev := f.leaf(t, "ca-dev")
	if _, err := hubDial(t, e, 0, "ca-dev", dev.TLS()); !isNotAuthorized(err) {
		t.Errorf("connect with unverified hub CA = %v; want CONNACK 5", err)
	}
	c, err := e.Store().GenerateVerificationCode(hub, "fleet-root", "")
	if err != nil {
		t.Fatal(err)
	}
	proof, _ := f.root.NewVerification(c.Properties.VerificationCode)
	if _, err := e.Store().VerifyCACertificate(hub, "fleet-root", proof.PEM(), ""); err != nil {
		t.Fatal(err)
	}
	if _, err := hubDial(t, e, 0, "ca-dev", dev.TLSWith()); !isNotAuthorized(err) {
		t.Errorf("connect without the intermediate = %v; want CONNACK 5", err)
	}
	wrongCN := f.leaf(t, "someone-else")
	if _, err := hubDial(t, e, 0, "ca-dev", wrongCN.TLS()); !isNotAuthorized(err) {
		t.Errorf("connect with CN != device id = %v; want CONNACK 5", err)
	}
	if _, err := hubDial(t, e, 0, "ca-dev", dev.TLS()); err != nil {
		t.Errorf("connect with chain to verified hub CA: %v", err)
	}
}

// A connection mochi is done with is forgotten even when mochi never
// called OnDisconnect (CONNACK could not be written): the listener says so.
func TestConnectionEndForgetsSession(t *testing.T) {
	t.Parallel()
	e := StartForTest(t)
	dev := hubDevice(t, e, "dev-1")
	mustHubDial(t, e, 0, "dev-1", dev.TLS())
	var conn net.Conn
	e.hook.sessions.Range(func(k, _ any) bool { conn = k.(*mqtt.Client).Net.Conn; return false })
	if conn == nil || !e.IsConnected(e.HubHost(0), "dev-1") {
		t.Fatal("no live session")
	}
	e.hook.connEnded(conn)
	if e.IsConnected(e.HubHost(0), "dev-1") {
		t.Error("session still listed after its connection ended")
	}
	e.hook.connEnded(conn) // twice is harmless
}

// A hub user name carries at most maxUserParams parameters; empty ones
// ("&&") do not count.
func TestHubUsernameParameterBound(t *testing.T) {
	params := func(n int) string {
		p := []string{"api-version=2021-04-12"}
		for i := 1; i < n; i++ {
			p = append(p, fmt.Sprintf("p%d=%d", i, i))
		}
		return strings.Join(p, "&&")
	}
	if _, _, _, q, err := parseHubUsername("hub/d/?" + params(maxUserParams)); err != nil || len(q) != maxUserParams {
		t.Fatalf("%d parameters: %v, %d parsed", maxUserParams, err, len(q))
	}
	_, _, _, _, err := parseHubUsername("hub/d/?" + params(maxUserParams+1))
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("more than %d parameters", maxUserParams)) {
		t.Fatalf("%d parameters: err %v, want more than %d", maxUserParams+1, err, maxUserParams)
	}
}

// mochi's topic index keeps no device subscription, and a SUBSCRIBE does
// not search it for retained messages: the emulator writes each message to
// its one recipient itself, so the index would only cost memory per
// connected device and its lock. The device still gets what it subscribed
// to.
//
// A persistent session (CleanSession false) taken over by the device's
// next connection brings its subscriptions back; they stay out of the
// index too.
func TestSubscriptionsStayOutOfTheTopicIndex(t *testing.T) {
	t.Parallel()
	e := StartForTest(t)
	dev := hubDevice(t, e, "dev-1")
	o := dialOpts{clientID: "dev-1", username: e.HubHost(0) + "/dev-1/?api-version=2021-04-12", cert: dev.TLS()}
	first, err := dial(t, e, e.Info().Hubs[0].MQTTAddress, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"$iothub/twin/res/#", "$iothub/methods/POST/#", "devices/dev-1/messages/devicebound/#"} {
		first.subscribe(t, f)
	}
	indexed := func() []string {
		var held []string
		for _, topic := range []string{"$iothub/twin/res/200/?$rid=1", "$iothub/methods/POST/m/?$rid=1", "devices/dev-1/messages/devicebound/x"} {
			if s := e.server.Topics.Subscribers(topic); len(s.Subscriptions)+len(s.Shared) > 0 {
				held = append(held, topic)
			}
		}
		return held
	}
	// OnSubscribed runs before SUBACK.
	if held := indexed(); len(held) > 0 {
		t.Errorf("after SUBACK the topic index holds subscribers of %v", held)
	}
	first.close()
	waitfor.Until(t, "dev-1 disconnected", waitTime, 10*time.Millisecond, func() bool { return !e.IsConnected(e.HubHost(0), "dev-1") })
	c, err := dial(t, e, e.Info().Hubs[0].MQTTAddress, o)
	if err != nil {
		t.Fatal(err)
	}
	var cl *mqtt.Client
	e.hook.sessions.Range(func(k, _ any) bool { cl = k.(*mqtt.Client); return false })
	if n := len(cl.State.Subscriptions.GetAll()); n != 3 {
		t.Fatalf("the persistent session came back with %d subscriptions, want 3", n)
	}
	// OnSessionEstablished runs just after CONNACK.
	waitfor.Until(t, "the taken-over subscriptions to leave the topic index", waitTime, time.Millisecond, func() bool { return len(indexed()) == 0 })
	for f, sub := range cl.State.Subscriptions.GetAll() {
		if sub.RetainHandling != 2 {
			t.Errorf("%s: retain handling %d, want 2 (send no retained messages)", f, sub.RetainHandling)
		}
	}
	if err := c.publish(t, "$iothub/twin/GET/?$rid=g", 0, nil); err != nil {
		t.Fatal(err)
	}
	if m := c.next(t); !strings.HasPrefix(m.Topic(), "$iothub/twin/res/200/?$rid=g") {
		t.Errorf("twin GET answered on %s", m.Topic())
	}
}
