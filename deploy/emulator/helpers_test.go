package emulator

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	pahopk "github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/reefer/tracker/deploy/emulator/pki"
)

const waitTime = 5 * time.Second

// connectTime bounds a test client's TLS handshake and CONNECT: 16 of them
// at once under the race detector and the full make test load took over
// waitTime (TestDPSConcurrentRegistrationsAcrossHubs failed on a connect
// timeout). Only ever waited for success, so a longer bound costs nothing.
const connectTime = 20 * time.Second

// fleet is a root → intermediate CA pair issuing device leaves.
type fleet struct {
	root, inter *pki.Cert
}

func newFleet(t *testing.T) *fleet {
	t.Helper()
	root, err := pki.NewRootCA("Test Fleet Root", pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediateCA("Test Fleet Intermediate", pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &fleet{root: root, inter: inter}
}

func (f *fleet) leaf(t *testing.T, cn string) *pki.Cert {
	t.Helper()
	c, err := f.inter.NewClient(cn, pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// client wraps a paho client and collects what it receives.
type client struct {
	c    paho.Client
	msgs chan paho.Message
	lost chan error

	mu   sync.Mutex
	conn net.Conn // the socket paho dialled, for drop
}

func (c *client) close() { c.c.Disconnect(50) }

// drop closes the socket without an MQTT DISCONNECT, as a crash or a
// network cut would, so the server treats the close as ungraceful.
func (c *client) drop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		_ = c.conn.Close()
	}
}

// will is an MQTT Will set in CONNECT.
type will struct {
	topic   string
	payload []byte
	qos     byte
	retain  bool
}

type dialOpts struct {
	clientID, username, password string
	cert                         tls.Certificate
	clean                        bool
	keepAlive                    time.Duration
	will                         *will
}

func dial(t *testing.T, e *Emulator, addr string, o dialOpts) (*client, error) {
	t.Helper()
	cl := &client{msgs: make(chan paho.Message, 100), lost: make(chan error, 1)}
	opts := paho.NewClientOptions().
		AddBroker("ssl://" + addr).
		SetClientID(o.clientID).
		SetUsername(o.username).
		SetPassword(o.password).
		SetTLSConfig(e.ClientTLSConfig(o.cert)).
		SetProtocolVersion(4).
		SetCleanSession(o.clean).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(connectTime).
		SetOrderMatters(false).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { cl.msgs <- m }).
		SetConnectionLostHandler(func(_ paho.Client, err error) { cl.lost <- err }).
		SetCustomOpenConnectionFn(func(u *url.URL, po paho.ClientOptions) (net.Conn, error) {
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: connectTime}, "tcp", u.Host, po.TLSConfig)
			if err != nil {
				return nil, err
			}
			cl.mu.Lock()
			cl.conn = conn
			cl.mu.Unlock()
			return conn, nil
		})
	if o.will != nil {
		opts.SetBinaryWill(o.will.topic, o.will.payload, o.will.qos, o.will.retain)
	}
	if o.keepAlive > 0 {
		opts.SetKeepAlive(o.keepAlive)
	}
	cl.c = paho.NewClient(opts)
	tok := cl.c.Connect()
	if !tok.WaitTimeout(connectTime) {
		return nil, errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(cl.close)
	return cl, nil
}

func (c *client) subscribe(t *testing.T, filter string) {
	t.Helper()
	tok := c.c.Subscribe(filter, 1, nil)
	if !tok.WaitTimeout(waitTime) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
}

func (c *client) publish(t *testing.T, topic string, qos byte, body []byte) error {
	t.Helper()
	tok := c.c.Publish(topic, qos, false, body)
	if !tok.WaitTimeout(waitTime) {
		return errors.New("publish timed out")
	}
	return tok.Error()
}

func (c *client) next(t *testing.T) paho.Message {
	t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(waitTime):
		t.Fatal("no message received")
		return nil
	}
}

func (c *client) expectLost(t *testing.T, why string) {
	t.Helper()
	select {
	case <-c.lost:
	case <-time.After(waitTime):
		t.Fatalf("%s: connection not closed", why)
	}
}

func isNotAuthorized(err error) bool { return errors.Is(err, pahopk.ErrorRefusedNotAuthorised) }

// ---- DPS helpers ----

func dpsDial(t *testing.T, e *Emulator, rid string, cert tls.Certificate) *client {
	t.Helper()
	return dpsDialVersion(t, e, rid, cert, "2019-03-31")
}

// dpsDialVersion connects to DPS with the given api-version in the user
// name (docs/protocol.md A.1; A.5 needs 2025-07-01-preview for a csr).
func dpsDialVersion(t *testing.T, e *Emulator, rid string, cert tls.Certificate, apiVersion string) *client {
	t.Helper()
	c, err := dial(t, e, e.DPSEndpoint(), dialOpts{clientID: rid, username: e.IDScope() + "/registrations/" + rid + "/api-version=" + apiVersion, cert: cert, clean: true})
	if err != nil {
		t.Fatalf("dps connect %s: %v", rid, err)
	}
	c.subscribe(t, "$dps/registrations/res/#")
	return c
}

type dpsResponse struct {
	status     int
	rid        string
	retryAfter int
	hasRetry   bool
	body       map[string]any
	raw        string
}

func parseDPSResponse(t *testing.T, m paho.Message) dpsResponse {
	t.Helper()
	topic := m.Topic()
	rest, ok := strings.CutPrefix(topic, "$dps/registrations/res/")
	if !ok {
		t.Fatalf("unexpected topic %q", topic)
	}
	st, query, _ := strings.Cut(rest, "/?")
	r := dpsResponse{raw: string(m.Payload())}
	r.status, _ = strconv.Atoi(st)
	for _, kv := range strings.Split(query, "&") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "$rid":
			r.rid = v
		case "retry-after":
			r.retryAfter, _ = strconv.Atoi(v)
			r.hasRetry = true
		}
	}
	if len(m.Payload()) > 0 {
		if err := json.Unmarshal(m.Payload(), &r.body); err != nil {
			t.Fatalf("response body %q: %v", m.Payload(), err)
		}
	}
	return r
}

func (c *client) dpsRequest(t *testing.T, topic string, body []byte) dpsResponse {
	t.Helper()
	if err := c.publish(t, topic, 1, body); err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
	return parseDPSResponse(t, c.next(t))
}

func registerTopic(rid string) string { return "$dps/registrations/PUT/iotdps-register/?$rid=" + rid }
func pollTopic(rid, op string) string {
	return fmt.Sprintf("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=%s&operationId=%s", rid, op)
}

// provision runs register → poll until terminal and returns the 200 body.
func provision(t *testing.T, c *client, regID string) map[string]any {
	t.Helper()
	r := c.dpsRequest(t, registerTopic("1"), []byte(`{"registrationId":"`+regID+`"}`))
	if r.status != 202 {
		t.Fatalf("register %s: status %d body %s; want 202", regID, r.status, r.raw)
	}
	op, _ := r.body["operationId"].(string)
	for i := 0; i < 5; i++ {
		p := c.dpsRequest(t, pollTopic("2", op), nil)
		if p.status == 200 {
			return p.body
		}
		if p.status != 202 {
			t.Fatalf("poll %s: status %d body %s", regID, p.status, p.raw)
		}
		time.Sleep(time.Duration(p.retryAfter) * time.Second)
	}
	t.Fatalf("poll %s: not terminal", regID)
	return nil
}

// ---- hub helpers ----

func hubDial(t *testing.T, e *Emulator, hubIdx int, id string, cert tls.Certificate) (*client, error) {
	t.Helper()
	host := e.HubHost(hubIdx)
	return dial(t, e, e.Info().Hubs[hubIdx].MQTTAddress, dialOpts{clientID: id, username: host + "/" + id + "/?api-version=2021-04-12", cert: cert, clean: true})
}

func mustHubDial(t *testing.T, e *Emulator, hubIdx int, id string, cert tls.Certificate) *client {
	t.Helper()
	c, err := hubDial(t, e, hubIdx, id, cert)
	if err != nil {
		t.Fatalf("hub connect %s: %v", id, err)
	}
	return c
}

// StartForTest is emulatortest.Start for this package's own tests, which
// cannot import it (it imports this package).
func StartForTest(t testing.TB, mod ...func(*Config)) *Emulator {
	t.Helper()
	e, err := StartLocal(t.TempDir(), mod...)
	if err != nil {
		t.Fatalf("start emulator: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func testLogger() *slog.Logger { return logFromEnv() }
