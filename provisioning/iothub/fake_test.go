package iothub

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/reefer/tracker/internal/faketime"
	"github.com/reefer/tracker/internal/waitfor"
)

// fakeHub scripts a paho client so the Client's logic can be driven without a
// broker. It answers twin GET and reported PATCH like docs/protocol.md B.5 unless a test
// overrides it. Wire behaviour is tested against the emulator.

type token struct {
	once sync.Once
	ch   chan struct{}
	err  error
}

func newPendingToken() *token { return &token{ch: make(chan struct{})} }

func doneToken(err error) *token {
	t := newPendingToken()
	t.complete(err)
	return t
}

func (t *token) complete(err error) {
	t.once.Do(func() { t.err = err; close(t.ch) })
}
func (t *token) Wait() bool                     { <-t.ch; return true }
func (t *token) WaitTimeout(time.Duration) bool { return true }
func (t *token) Done() <-chan struct{}          { return t.ch }
func (t *token) Error() error                   { <-t.ch; return t.err }

type msg struct {
	topic   string
	payload []byte
	acked   *atomic.Bool // nil: acknowledgements not watched
}

func (m msg) Duplicate() bool   { return false }
func (m msg) Qos() byte         { return 0 }
func (m msg) Retained() bool    { return false }
func (m msg) Topic() string     { return m.topic }
func (m msg) MessageID() uint16 { return 0 }
func (m msg) Payload() []byte   { return m.payload }
func (m msg) Ack() {
	if m.acked != nil {
		m.acked.Store(true)
	}
}

type pub struct {
	session int
	topic   string
	qos     byte
	payload []byte
}

type fakeHub struct {
	mu         sync.Mutex
	clients    []*fakeClient
	subs       map[int][]subscription // per session
	pubs       []pub
	connectErr func(n int) error // n counts connect attempts from 1
	// connectTok, when set, supplies the CONNECT token (e.g. one that never
	// completes, for a connect abandoned half-way).
	connectTok func(n int) mqtt.Token
	connects   int
	twin       string // GET body
	twinStatus int
	reportedV  int64
	// override handles a publish instead of the defaults when it returns true.
	override func(c *fakeClient, topic string, payload []byte) (mqtt.Token, bool)
}

func newFakeHub() *fakeHub {
	return &fakeHub{
		subs:       make(map[int][]subscription),
		twin:       `{"desired":{"telemetryDelay":1,"$version":12},"reported":{"$version":3}}`,
		twinStatus: 200,
		reportedV:  3,
	}
}

func (h *fakeHub) newClient(o *mqtt.ClientOptions) mqtt.Client {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := &fakeClient{h: h, o: o, session: len(h.clients) + 1}
	h.clients = append(h.clients, c)
	return c
}

func (h *fakeHub) last() *fakeClient {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.clients[len(h.clients)-1]
}

func (h *fakeHub) sessions() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients)
}

func (h *fakeHub) published(prefix string) []pub {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []pub
	for _, p := range h.pubs {
		if strings.HasPrefix(p.topic, prefix) {
			out = append(out, p)
		}
	}
	return out
}

type fakeClient struct {
	mqtt.Client
	h       *fakeHub
	o       *mqtt.ClientOptions
	session int
	mu      sync.Mutex
	down    bool
}

func (c *fakeClient) Connect() mqtt.Token {
	c.h.mu.Lock()
	c.h.connects++
	n := c.h.connects
	f := c.h.connectErr
	tokf := c.h.connectTok
	c.h.mu.Unlock()
	if tokf != nil {
		return tokf(n)
	}
	if f != nil {
		if err := f(n); err != nil {
			return doneToken(err)
		}
	}
	return doneToken(nil)
}

func (c *fakeClient) Subscribe(topic string, qos byte, cb mqtt.MessageHandler) mqtt.Token {
	if cb != nil {
		panic("the client routes everything through the default handler")
	}
	c.h.mu.Lock()
	c.h.subs[c.session] = append(c.h.subs[c.session], subscription{topic, qos})
	c.h.mu.Unlock()
	return doneToken(nil)
}

func (c *fakeClient) Publish(topic string, qos byte, retained bool, payload any) mqtt.Token {
	var b []byte
	switch p := payload.(type) {
	case []byte:
		b = p
	case nil:
	default:
		panic(fmt.Sprintf("payload type %T", payload))
	}
	c.h.mu.Lock()
	c.h.pubs = append(c.h.pubs, pub{c.session, topic, qos, b})
	override := c.h.override
	c.h.mu.Unlock()
	if override != nil {
		if tok, ok := override(c, topic, b); ok {
			return tok
		}
	}
	switch {
	case strings.HasPrefix(topic, twinGetPrefix):
		rid := strings.TrimPrefix(topic, twinGetPrefix)
		c.h.mu.Lock()
		body, st := c.h.twin, c.h.twinStatus
		c.h.mu.Unlock()
		go c.deliver(fmt.Sprintf("$iothub/twin/res/%d/?$rid=%s", st, rid), []byte(body))
	case strings.HasPrefix(topic, reportedPrefix):
		rid := strings.TrimPrefix(topic, reportedPrefix)
		c.h.mu.Lock()
		c.h.reportedV++
		v := c.h.reportedV
		c.h.mu.Unlock()
		go c.deliver(fmt.Sprintf("$iothub/twin/res/204/?$rid=%s&$version=%d", rid, v), nil)
	}
	return doneToken(nil)
}

func (c *fakeClient) Disconnect(uint) {
	c.mu.Lock()
	c.down = true
	c.mu.Unlock()
}

// deliver hands an incoming PUBLISH to the client like paho with
// SetOrderMatters(false) does.
func (c *fakeClient) deliver(topic string, payload []byte) {
	c.o.DefaultPublishHandler(c, msg{topic: topic, payload: payload})
}

// deliverAcked delivers like deliver and says whether the client
// acknowledged the message (a PUBACK for QoS 1) by the time the handler
// returned.
func (c *fakeClient) deliverAcked(topic string, payload []byte) bool {
	var acked atomic.Bool
	c.o.DefaultPublishHandler(c, msg{topic: topic, payload: payload, acked: &acked})
	return acked.Load()
}

// drop simulates the network connection ending.
func (c *fakeClient) drop(err error) {
	c.o.OnConnectionLost(c, err)
}

// harness bundles a Client with its fakes and event channels.
type harness struct {
	c       *Client
	hub     *fakeHub
	sleeps  *faketime.Sleeps
	states  chan StateChange
	desired chan Desired
	c2d     chan Message
}

func newHarness(t *testing.T, mod func(*Config)) *harness {
	t.Helper()
	h := &harness{
		hub:     newFakeHub(),
		sleeps:  &faketime.Sleeps{},
		states:  make(chan StateChange, 100),
		desired: make(chan Desired, 100),
		c2d:     make(chan Message, 10),
	}
	cfg := Config{
		Hub:              "hub-x.azure-devices.net",
		DeviceID:         "sensor-thl-001",
		TLS:              nil,
		OperationTimeout: 5 * time.Second,
		OnDesired:        func(d Desired) { h.desired <- d },
		OnC2D:            func(m Message) error { h.c2d <- m; return nil },
		OnState:          func(s StateChange) { h.states <- s },
		Sleep:            h.sleeps.Sleep,
		Rand:             func() float64 { return 0.5 },
		NewClient:        h.hub.newClient,
	}
	cfg.TLS = testTLS()
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h.c = c
	t.Cleanup(func() { c.Close() })
	return h
}

func (h *harness) waitState(t *testing.T, want State) StateChange {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case s := <-h.states:
			if s.State == want {
				return s
			}
		case <-timeout:
			t.Fatalf("no %s state change within 5s", want)
		}
	}
}

func (h *harness) nextDesired(t *testing.T) Desired {
	t.Helper()
	select {
	case d := <-h.desired:
		return d
	case <-time.After(5 * time.Second):
		t.Fatal("no desired update within 5s")
	}
	return Desired{}
}

// eventually polls cond for up to 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitfor.Until(t, what, 5*time.Second, time.Millisecond, cond)
}
