package dps

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/reefer/tracker/internal/faketime"
	"github.com/reefer/tracker/provisioning/internal/brokertest"
)

// This test runs Register through real paho, real TLS with a client
// certificate and a real MQTT broker (mochi) on 127.0.0.1, with a tiny hook
// that answers like DPS. It checks the wire-level assumptions the unit tests
// make about paho (nil-callback subscriptions reach the default handler,
// CONNACK refusals surface as ErrUnauthorized). The full emulator tests
// live with deploy/emulator.

// dpsHook answers register and poll requests.
type dpsHook struct {
	mqtt.HookBase
	srv      *mqtt.Server
	allow    bool
	mu       sync.Mutex
	users    []string
	certCNs  []string
	payloads []string
}

func (h *dpsHook) ID() string { return "dps" }
func (h *dpsHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublish}, []byte{b})
}

func (h *dpsHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.users = append(h.users, string(pk.Connect.Username)+"|"+cl.ID+"|"+string(pk.Connect.Password))
	if cn := brokertest.PeerCN(cl); cn != "" {
		h.certCNs = append(h.certCNs, cn)
	}
	return h.allow
}

func (h *dpsHook) OnACLCheck(*mqtt.Client, string, bool) bool { return true }

func (h *dpsHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil // our own responses
	}
	topic := pk.TopicName
	h.mu.Lock()
	h.payloads = append(h.payloads, topic+" "+string(pk.Payload))
	h.mu.Unlock()
	var resTopic, body string
	switch {
	case strings.HasPrefix(topic, "$dps/registrations/PUT/iotdps-register/?$rid="):
		rid := strings.TrimPrefix(topic, "$dps/registrations/PUT/iotdps-register/?$rid=")
		resTopic = "$dps/registrations/res/202/?$rid=" + rid + "&retry-after=1"
		body = `{"operationId":"4.op","status":"assigning"}`
	case strings.HasPrefix(topic, "$dps/registrations/GET/iotdps-get-operationstatus/?$rid="):
		rid, _, _ := strings.Cut(strings.TrimPrefix(topic, "$dps/registrations/GET/iotdps-get-operationstatus/?$rid="), "&")
		resTopic = "$dps/registrations/res/200/?$rid=" + rid
		body = `{"operationId":"4.op","status":"assigned","registrationState":{"registrationId":"sensor-thl-001","assignedHub":"127.0.0.1:40002","deviceId":"sensor-thl-001","status":"assigned","substatus":"initialAssignment"}}`
	default:
		return pk, nil
	}
	go h.srv.Publish(resTopic, []byte(body), false, 0)
	return pk, nil
}

func startBroker(t *testing.T, pki *brokertest.PKI, allow bool) (addr string, hook *dpsHook) {
	t.Helper()
	b := brokertest.New(t, pki)
	hook = &dpsHook{srv: b.Server, allow: allow}
	b.Start(t, hook)
	return b.Addr, hook
}

func TestRegisterAgainstBroker(t *testing.T) {
	t.Parallel()
	pki := brokertest.NewPKI(t, testRID)
	addr, hook := startBroker(t, pki, true)
	s := &faketime.Sleeps{}
	res, err := Register(context.Background(), Config{
		Endpoint:       addr,
		IDScope:        testScope,
		RegistrationID: testRID,
		TLS:            pki.ClientTLS(),
		Sleep:          s.Sleep,
		MaxWait:        10 * time.Second,
	})
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	if res.AssignedHub != "127.0.0.1:40002" || res.DeviceID != testRID || res.Substatus != "initialAssignment" {
		t.Errorf("Register = %+v", res)
	}
	hook.mu.Lock()
	defer hook.mu.Unlock()
	if want := testScope + "/registrations/" + testRID + "/api-version=2019-03-31|" + testRID + "|"; len(hook.users) != 1 || hook.users[0] != want {
		t.Errorf("CONNECT user|client|password = %v; want %q", hook.users, want)
	}
	if len(hook.certCNs) != 1 || hook.certCNs[0] != testRID {
		t.Errorf("client certificate CNs = %v", hook.certCNs)
	}
	want := []string{
		`$dps/registrations/PUT/iotdps-register/?$rid=1 {"registrationId":"sensor-thl-001"}`,
		`$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=4.op `,
	}
	if strings.Join(hook.payloads, "\n") != strings.Join(want, "\n") {
		t.Errorf("publishes:\n%s\nwant:\n%s", strings.Join(hook.payloads, "\n"), strings.Join(want, "\n"))
	}
}

func TestRegisterAgainstBrokerRefused(t *testing.T) {
	t.Parallel()
	pki := brokertest.NewPKI(t, testRID)
	addr, _ := startBroker(t, pki, false)
	_, err := Register(context.Background(), Config{
		Endpoint:       addr,
		IDScope:        testScope,
		RegistrationID: testRID,
		TLS:            pki.ClientTLS(),
		Sleep:          (&faketime.Sleeps{}).Sleep,
	})
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("Register = %v; want ErrUnauthorized from CONNACK 5", err)
	}
}

func TestRegisterAgainstBrokerWithoutClientCert(t *testing.T) {
	t.Parallel()
	pki := brokertest.NewPKI(t, testRID)
	addr, _ := startBroker(t, pki, true)
	_, err := Register(context.Background(), Config{
		Endpoint:       addr,
		IDScope:        testScope,
		RegistrationID: testRID,
		TLS:            &tls.Config{RootCAs: pki.Roots},
		Sleep:          (&faketime.Sleeps{}).Sleep,
	})
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("Register = %v; want ErrUnauthorized from the server's TLS alert", err)
	}
	if !strings.Contains(err.Error(), "remote error") {
		t.Errorf("Register = %v; want the TLS alert as cause", err)
	}
}
