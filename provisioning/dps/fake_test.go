package dps

import (
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// The fake below stands in for paho so the registration state machine can be
// driven message by message. Wire-level behaviour (real TLS, a real broker)
// is covered by the emulator integration tests.

type doneToken struct {
	err error
	ch  chan struct{}
}

func newToken(err error) *doneToken {
	t := &doneToken{err: err, ch: make(chan struct{})}
	close(t.ch)
	return t
}

func (t *doneToken) Wait() bool                     { return true }
func (t *doneToken) WaitTimeout(time.Duration) bool { return true }
func (t *doneToken) Done() <-chan struct{}          { return t.ch }
func (t *doneToken) Error() error                   { return t.err }

// pendingToken never completes (a CONNECT still in progress).
type pendingToken struct{ ch chan struct{} }

func (t *pendingToken) Wait() bool                     { <-t.ch; return true }
func (t *pendingToken) WaitTimeout(time.Duration) bool { return false }
func (t *pendingToken) Done() <-chan struct{}          { return t.ch }
func (t *pendingToken) Error() error                   { return nil }

type fakeMsg struct {
	topic   string
	payload []byte
}

func (m fakeMsg) Duplicate() bool   { return false }
func (m fakeMsg) Qos() byte         { return 1 }
func (m fakeMsg) Retained() bool    { return false }
func (m fakeMsg) Topic() string     { return m.topic }
func (m fakeMsg) MessageID() uint16 { return 0 }
func (m fakeMsg) Payload() []byte   { return m.payload }
func (m fakeMsg) Ack()              {}

// event is what the fake records, in order, across sessions.
type event struct {
	session int
	kind    string // "connect", "subscribe", "publish", "disconnect"
	topic   string
	payload []byte
}

// reply is what the scripted server does after a publish.
type reply struct {
	msgs []fakeMsg
	lose error // drop the connection after sending msgs
}

type fakeDPS struct {
	mu         sync.Mutex
	events     []event
	opts       []*mqtt.ClientOptions
	sessions   int
	connectErr func(session int) error
	connectTok func(session int) mqtt.Token // overrides connectErr when set
	// respond is called for every publish, with the running publish index.
	respond func(n int, topic string, payload []byte) reply
	pubs    int
}

func (f *fakeDPS) newClient(o *mqtt.ClientOptions) mqtt.Client {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sessions++
	f.opts = append(f.opts, o)
	return &fakeClient{f: f, o: o, session: f.sessions}
}

func (f *fakeDPS) record(e event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, e)
}

func (f *fakeDPS) snapshot() []event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]event(nil), f.events...)
}

type fakeClient struct {
	mqtt.Client // unused methods panic
	f           *fakeDPS
	o           *mqtt.ClientOptions
	session     int
}

func (c *fakeClient) Connect() mqtt.Token {
	c.f.record(event{session: c.session, kind: "connect"})
	if c.f.connectTok != nil {
		return c.f.connectTok(c.session)
	}
	if c.f.connectErr != nil {
		if err := c.f.connectErr(c.session); err != nil {
			return newToken(err)
		}
	}
	return newToken(nil)
}

func (c *fakeClient) Subscribe(topic string, qos byte, cb mqtt.MessageHandler) mqtt.Token {
	c.f.record(event{session: c.session, kind: "subscribe", topic: topic})
	return newToken(nil)
}

func (c *fakeClient) Publish(topic string, qos byte, retained bool, payload any) mqtt.Token {
	var b []byte
	switch p := payload.(type) {
	case []byte:
		b = p
	case string:
		b = []byte(p)
	}
	c.f.record(event{session: c.session, kind: "publish", topic: topic, payload: b})
	c.f.mu.Lock()
	n := c.f.pubs
	c.f.pubs++
	respond := c.f.respond
	c.f.mu.Unlock()
	if respond != nil {
		r := respond(n, topic, b)
		go func() {
			for _, m := range r.msgs {
				c.o.DefaultPublishHandler(c, m)
			}
			if r.lose != nil {
				c.o.OnConnectionLost(c, r.lose)
			}
		}()
	}
	return newToken(nil)
}

func (c *fakeClient) Disconnect(uint) {
	c.f.record(event{session: c.session, kind: "disconnect"})
}
