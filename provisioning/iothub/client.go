// Package iothub is the device side of Azure IoT Hub over MQTT 3.1.1 with an
// X.509 client certificate (docs/protocol.md B of docs/protocol.md): telemetry with
// PUBACK, the device twin (desired patches in version order, reported
// updates), direct methods and cloud-to-device messages, with its own
// reconnect loop.
//
// The client owns reconnection instead of paho's AutoReconnect so that it
// can (a) use full-jitter back-off, so a fleet does not stampede the hub
// after an outage, (b) re-subscribe and re-read the twin on every connect,
// and (c) tell apart "not authorized" (CONNACK 5: device disabled, deleted
// or certificate mismatch; after NotAuthorizedLimit refusals in a row the
// client stops with ErrNotAuthorized so the caller can go back to DPS) and
// a suspected takeover.
//
// Takeover detection is a heuristic with a known limit. When a second client
// connects with the same device id the hub just closes the first socket
// (docs/protocol.md B.7); MQTT 3.1.1 carries no reason, so one such close looks exactly
// like any other server-side close (maintenance, idle timeout 404104, a
// device disabled while connected). What is observable is the pattern of two
// instances knocking each other off: connections accepted with CONNACK 0
// that end with a clean remote close (EOF) before StableAfter, several times
// in a row. After TakeoverThreshold such closes the disconnect event carries
// ErrTakenOver. Short-lived connections also grow the back-off, so two
// duelling instances slow down instead of spinning.
package iothub

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/reefer/tracker/internal/backoff"
	"github.com/reefer/tracker/internal/ctxtime"
)

// State is the connection state reported to Config.OnState.
type State int

const (
	StateDisconnected State = iota
	StateConnecting
	StateConnected
	// StateClosed is final: after Close, or with ErrNotAuthorized.
	StateClosed
)

func (s State) String() string {
	switch s {
	case StateDisconnected:
		return "disconnected"
	case StateConnecting:
		return "connecting"
	case StateConnected:
		return "connected"
	case StateClosed:
		return "closed"
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// StateChange is one connection-state transition.
type StateChange struct {
	State State
	// Err says why: the failed connect, the lost connection (wrapping
	// ErrConnectionLost, and ErrTakenOver when suspected), or ErrNotAuthorized
	// on the final StateClosed. Nil for StateConnecting/StateConnected and
	// for a Close.
	Err error
	At  time.Time
}

// MethodHandler answers a direct method. resp is marshalled to JSON (nil
// sends an empty body; json.RawMessage is sent as is). ctx ends when the
// client closes.
type MethodHandler func(ctx context.Context, payload json.RawMessage) (status int, resp any)

// Config configures a Client. Hub, DeviceID and TLS are required.
type Config struct {
	// Hub is the assigned hub host name, optionally with ":port" (emulator).
	// The user name carries it verbatim; the dial address defaults to port
	// 8883; TLS ServerName defaults to the host alone.
	Hub      string
	DeviceID string
	// TLS carries the client certificate chain and the roots to trust.
	TLS *tls.Config
	// KeepAlive defaults to 240 s (the C SDK's); at most 1177 s (docs/protocol.md B.2).
	KeepAlive time.Duration
	// CleanSession false (the SDK default) keeps the hub session, so C2D
	// messages queued while offline arrive on reconnect (docs/protocol.md B.2).
	CleanSession bool
	// DeviceClientType goes into the user name; default "reefer-tracker".
	DeviceClientType string
	// ModelID is an optional IoT Plug and Play DTMI (docs/protocol.md B.1).
	ModelID string
	Logger  *slog.Logger

	// OnDesired receives desired-property updates in increasing version
	// order, one at a time, from a single goroutine: each connection's full
	// twin first, and never a patch at or below a version already handed
	// over (desiredSeq). This is the only place that orders them; the
	// receiver applies what it gets.
	OnDesired func(Desired)
	// OnC2D receives cloud-to-device messages, each on its own goroutine.
	// The PUBACK, which completes the message at the hub (docs/protocol.md B.4), is
	// sent only when it returns nil: an error leaves the message
	// unacknowledged, and the hub delivers it again (on the next
	// connection, or once its lock expires). Without OnC2D no message is
	// acknowledged, so none is completed unseen.
	OnC2D func(Message) error
	// OnState receives connection-state changes, from the client's goroutines;
	// it must not block for long.
	OnState func(StateChange)

	// OperationTimeout bounds waits for PUBACK, SUBACK and twin responses.
	// Default 30 s.
	OperationTimeout time.Duration
	// ConnectTimeout bounds TCP+TLS+CONNECT. Default 30 s.
	ConnectTimeout time.Duration
	// BackoffBase and BackoffMax shape reconnect back-off. Defaults 1 s, 5 min.
	BackoffBase, BackoffMax time.Duration
	// ReconnectMax caps the back-off between connect attempts once the hub
	// has accepted this device (a connection that worked, or KnownHub): a
	// failure then means an outage, and its end should be noticed within
	// ReconnectMax rather than BackoffMax. The first retry after losing a
	// stable connection comes within BackoffBase; full jitter spreads a
	// fleet that lost the hub together over the whole window, about
	// N/ReconnectMax connects a second for N devices. Default 30 s, at most
	// BackoffMax.
	ReconnectMax time.Duration
	// KnownHub: the hub has accepted this device before (the caller's
	// cached assignment from an earlier run), so even the first Connect
	// retries on the ReconnectMax schedule: a tracker restarted during an
	// outage comes back as promptly as one that stayed up.
	KnownHub bool
	// StableAfter: a connection that lasted this long resets the back-off
	// and does not count towards takeover. Default 2 min.
	StableAfter time.Duration
	// NotAuthorizedLimit is how many CONNACK refusals in a row end the
	// client with ErrNotAuthorized (docs/protocol.md B.7: a new device may be refused
	// briefly). Default 3.
	NotAuthorizedLimit int
	// TakeoverThreshold is how many short remote closes in a row make a
	// disconnect report ErrTakenOver. Default 3.
	TakeoverThreshold int
	// GapWait is how long a desired patch that skips a version waits for
	// the missing one before the twin is read again. paho delivers each
	// message on its own goroutine, so the missing patch is usually already
	// in flight. Default 1 s.
	GapWait time.Duration

	// Sleep waits between connection attempts and before a resync; nil:
	// ctxtime.Sleep. Tests against a real broker cannot run in a
	// testing/synctest bubble (network I/O), so they shorten the waits here.
	Sleep func(ctx context.Context, d time.Duration) error
	// Rand is uniform in [0, 1), for jitter; nil: math/rand/v2.
	Rand      func() float64
	NewClient func(*mqtt.ClientOptions) mqtt.Client
}

// ValidateKeepAlive checks a keep-alive against docs/protocol.md B.2: the hub idles a
// client out after 1.5× its keep-alive capped at 1767 s, so anything above
// 1177 s is useless.
func ValidateKeepAlive(k time.Duration) error {
	switch {
	case k < time.Second:
		return fmt.Errorf("keep-alive %s: must be at least 1s", k)
	case k > MaxKeepAlive:
		return fmt.Errorf("keep-alive %s: above the useful maximum %s (docs/protocol.md B.2)", k, MaxKeepAlive)
	case k%time.Second != 0:
		return fmt.Errorf("keep-alive %s: MQTT counts whole seconds", k)
	}
	return nil
}

func (c Config) withDefaults() (Config, error) {
	if c.Hub == "" {
		return c, errors.New("hub is empty")
	}
	if err := validDeviceID(c.DeviceID); err != nil {
		return c, err
	}
	if c.TLS == nil {
		return c, errors.New("TLS config is nil")
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = 240 * time.Second
	}
	if err := ValidateKeepAlive(c.KeepAlive); err != nil {
		return c, err
	}
	if c.DeviceClientType == "" {
		c.DeviceClientType = "reefer-tracker"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.OperationTimeout, 30*time.Second)
	def(&c.ConnectTimeout, 30*time.Second)
	def(&c.BackoffBase, time.Second)
	def(&c.BackoffMax, 5*time.Minute)
	def(&c.ReconnectMax, 30*time.Second)
	c.ReconnectMax = min(c.ReconnectMax, c.BackoffMax)
	def(&c.StableAfter, 2*time.Minute)
	def(&c.GapWait, time.Second)
	if c.NotAuthorizedLimit <= 0 {
		c.NotAuthorizedLimit = 3
	}
	if c.TakeoverThreshold <= 0 {
		c.TakeoverThreshold = 3
	}
	if c.Sleep == nil {
		c.Sleep = ctxtime.Sleep
	}
	if c.Rand == nil {
		c.Rand = rand.Float64
	}
	if c.NewClient == nil {
		c.NewClient = mqtt.NewClient
	}
	if n := len(subscriptions(c.DeviceID)); n > maxSubscriptions {
		return c, fmt.Errorf("%d subscriptions exceed the hub's limit of %d (docs/protocol.md B.2)", n, maxSubscriptions)
	}
	return c, nil
}

// Client is an IoT Hub device connection. Create it with New, then Connect.
// Its methods are safe for concurrent use.
type Client struct {
	cfg        Config
	log        *slog.Logger
	host, addr string

	ctx    context.Context // ends at Close or at the terminal error
	cancel context.CancelFunc

	mu       sync.Mutex
	cur      *session
	state    State
	started  bool
	methods  map[string]MethodHandler
	pending  map[string]chan twinResponse
	finished bool
	err      error
	done     chan struct{}

	seqMu     sync.Mutex
	seq       desiredSeq
	desiredCh chan Desired
	resyncing atomic.Bool

	rid    atomic.Uint64
	streak int // short remote closes in a row; supervisor goroutine only
	wg     sync.WaitGroup
}

// New validates cfg and returns an unconnected Client.
func New(cfg Config) (*Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("iothub %s: config: %w", cfg.DeviceID, err)
	}
	host, port, err := net.SplitHostPort(cfg.Hub)
	if err != nil {
		host, port = cfg.Hub, "8883"
	}
	if host == "" || port == "" {
		return nil, fmt.Errorf("iothub %s: config: bad hub %q", cfg.DeviceID, cfg.Hub)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Client{
		cfg:       cfg,
		log:       cfg.Logger.With("device_id", cfg.DeviceID, "hub", cfg.Hub),
		host:      host,
		addr:      net.JoinHostPort(host, port),
		ctx:       ctx,
		cancel:    cancel,
		methods:   make(map[string]MethodHandler),
		pending:   make(map[string]chan twinResponse),
		done:      make(chan struct{}),
		desiredCh: make(chan Desired, 64),
	}, nil
}

// HandleMethod registers h for the direct method name (docs/protocol.md B.6). Unknown
// methods are answered 404. It panics on a name the hub cannot carry (docs/protocol.md F).
func (c *Client) HandleMethod(name string, h MethodHandler) {
	if err := validMethodName(name); err != nil {
		panic("iothub: HandleMethod: " + err.Error())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.methods[name] = h
}

// Done is closed when the client stops for good: after Close, or when the
// hub refused the device NotAuthorizedLimit times (then Err is
// ErrNotAuthorized).
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the client stopped; nil while running or after Close.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// State returns the current connection state.
func (c *Client) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Connect connects (retrying transient failures with back-off until ctx
// ends), subscribes, reads the twin (delivered to OnDesired) and starts the
// reconnect loop. It returns an error wrapping ErrNotAuthorized after
// NotAuthorizedLimit refusals in a row. A Client is connected at most once;
// after a failed Connect, Close it and make a new one.
func (c *Client) Connect(ctx context.Context) error {
	c.mu.Lock()
	if c.started || c.finished {
		c.mu.Unlock()
		return fmt.Errorf("iothub %s: Connect called twice or after Close", c.cfg.DeviceID)
	}
	c.started = true
	c.mu.Unlock()

	c.wg.Add(1)
	go c.deliverDesired()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(c.ctx, cancel)
	defer stop()

	ceil := c.cfg.BackoffMax
	if c.cfg.KnownHub {
		ceil = c.cfg.ReconnectMax
	}
	s, _, err := c.connectLoop(ctx, 0, ceil)
	if err != nil {
		err = fmt.Errorf("iothub connect %s: %w", c.cfg.DeviceID, err)
		c.finish(err)
		return err
	}
	c.wg.Add(1)
	go c.supervise(s)
	return nil
}

// Close disconnects and stops every goroutine. It is idempotent.
func (c *Client) Close() error {
	c.finish(nil)
	c.wg.Wait()
	return nil
}

// finish makes the client final with err (nil for Close).
func (c *Client) finish(err error) {
	c.mu.Lock()
	if c.finished {
		c.mu.Unlock()
		return
	}
	c.finished = true
	c.err = err
	s := c.cur
	c.cur = nil
	c.mu.Unlock()
	c.cancel()
	if s != nil {
		s.close()
	}
	c.setState(StateClosed, err)
	close(c.done)
}

func (c *Client) setState(st State, err error) {
	c.mu.Lock()
	c.state = st
	c.mu.Unlock()
	if err != nil {
		c.log.Info("iothub state", "state", st.String(), "err", err)
	} else {
		c.log.Info("iothub state", "state", st.String())
	}
	if c.cfg.OnState != nil {
		c.cfg.OnState(StateChange{State: st, Err: err, At: time.Now()})
	}
}

func (c *Client) current() *session {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

// session is one MQTT connection.
type session struct {
	cli      mqtt.Client
	up       time.Time
	lost     chan struct{}
	lostOnce sync.Once
	lostErr  error
}

var errClosedLocally = errors.New("closed locally")

func (s *session) markLost(err error) {
	s.lostOnce.Do(func() {
		s.lostErr = err
		close(s.lost)
	})
}

func (s *session) close() {
	s.markLost(errClosedLocally)
	s.cli.Disconnect(250)
}

// wait waits for tok, the loss of s, ctx, or timeout.
func (s *session) wait(ctx context.Context, tok mqtt.Token, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-s.lost:
		return fmt.Errorf("%w: %w", ErrConnectionLost, s.lostErr)
	case <-t.C:
		return fmt.Errorf("%w: no acknowledgement within %s", ErrTimeout, timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// connectLoop dials until it succeeds, ctx ends, or the hub refused us
// NotAuthorizedLimit times in a row, backing off from attempt up to ceil.
// refused reports whether any attempt was refused (it resets the takeover
// streak).
func (c *Client) connectLoop(ctx context.Context, attempt int, ceil time.Duration) (s *session, refused bool, err error) {
	notAuth := 0
	for {
		c.setState(StateConnecting, nil)
		s, err := c.dial(ctx)
		if err == nil {
			c.mu.Lock()
			if c.finished { // Close raced with the dial
				c.mu.Unlock()
				s.close()
				return nil, refused, ErrClosed
			}
			c.cur = s
			c.mu.Unlock()
			c.setState(StateConnected, nil)
			return s, refused, nil
		}
		if ctx.Err() != nil {
			return nil, refused, ctx.Err()
		}
		if errors.Is(err, ErrNotAuthorized) {
			refused = true
			notAuth++
			if notAuth >= c.cfg.NotAuthorizedLimit {
				return nil, refused, fmt.Errorf("refused %d times in a row: %w", notAuth, err)
			}
		} else {
			notAuth = 0
		}
		c.setState(StateDisconnected, err)
		d := backoff.Delay(attempt, c.cfg.BackoffBase, ceil, 0, c.cfg.Rand())
		attempt++
		c.log.Warn("iothub connect failed", "err", err, "retry_in", d)
		if err := c.cfg.Sleep(ctx, d); err != nil {
			return nil, refused, err
		}
	}
}

// dial makes one connection: CONNECT, subscriptions, twin GET.
func (c *Client) dial(ctx context.Context) (*session, error) {
	tlsCfg := c.cfg.TLS.Clone()
	if tlsCfg.ServerName == "" {
		tlsCfg.ServerName = c.host // SNI and verification use the host alone
	}
	s := &session{lost: make(chan struct{})}
	opts := mqtt.NewClientOptions().
		AddBroker("tls://" + c.addr).
		SetTLSConfig(tlsCfg).
		SetClientID(c.cfg.DeviceID). // docs/protocol.md B.1
		SetUsername(Username(c.cfg.Hub, c.cfg.DeviceID, c.cfg.DeviceClientType, c.cfg.ModelID)).
		SetProtocolVersion(4). // 3.1.1 only; no fallback to 3.1
		SetCleanSession(c.cfg.CleanSession).
		SetKeepAlive(c.cfg.KeepAlive).
		SetConnectTimeout(c.cfg.ConnectTimeout).
		SetAutoReconnect(false). // our own loop, see the package comment
		SetConnectRetry(false).
		SetResumeSubs(false).
		SetOrderMatters(false). // handlers may block; desiredSeq restores order
		// onMessage acknowledges: a C2D message only once its handler took it.
		SetAutoAckDisabled(true).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { c.onMessage(s, m) }).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) { s.markLost(err) })
	s.cli = c.cfg.NewClient(opts)

	if err := s.wait(ctx, s.cli.Connect(), c.cfg.ConnectTimeout); err != nil {
		s.markLost(err)
		// The CONNECT may still be in flight (ctx ended at Close or
		// HubGiveUp, or our timer beat paho's). Left alone, paho would finish
		// it in the background and keep a second connection with this device
		// id, which the hub plays off against the next one (docs/protocol.md B.7).
		// Disconnect waits for it and closes it; after a failed CONNECT it is
		// a no-op.
		s.cli.Disconnect(0)
		if kind := classifyConnect(err); kind != nil {
			return nil, fmt.Errorf("connect: %w: %w", kind, err)
		}
		return nil, fmt.Errorf("connect: %w", err)
	}
	s.up = time.Now()
	c.seqMu.Lock()
	c.seq.reset()
	c.seqMu.Unlock()

	// docs/protocol.md B.5: subscribe (desired first), then GET, on every connect.
	for _, sub := range subscriptions(c.cfg.DeviceID) {
		tok := s.cli.Subscribe(sub.filter, sub.qos, nil) // nil: route to the default handler
		if err := s.wait(ctx, tok, c.cfg.OperationTimeout); err != nil {
			s.close()
			return nil, fmt.Errorf("subscribe %s: %w", sub.filter, err)
		}
		if st, ok := tok.(*mqtt.SubscribeToken); ok && st.Result()[sub.filter] == 0x80 {
			s.close()
			return nil, fmt.Errorf("subscribe %s: refused by the hub", sub.filter)
		}
	}
	twin, err := c.getTwin(ctx, s)
	if err != nil {
		s.close()
		return nil, fmt.Errorf("initial twin get: %w", err)
	}
	c.log.Info("iothub twin read", "desired_version", twin.DesiredVersion, "reported_version", twin.ReportedVersion)
	c.applyFull(s, twin)
	return s, nil
}

// supervise waits for the loss of s and reconnects, until the client ends.
//
// Two counts shape the waits. Connections that end before StableAfter
// (the hub or a duplicate instance dropping us) grow the wait before the
// next attempt towards BackoffMax, so a duel or a flapping link slows
// down. Connect failures after a connection that worked are an outage:
// they back off only up to ReconnectMax, so the tracker notices the hub's
// return promptly however long it was away.
func (c *Client) supervise(s *session) {
	defer c.wg.Done()
	flaps := 0 // connections in a row that ended before StableAfter
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-s.lost:
		}
		if c.ctx.Err() != nil {
			return
		}
		c.mu.Lock()
		if c.cur == s {
			c.cur = nil
		}
		c.mu.Unlock()

		lifetime := time.Now().Sub(s.up)
		stable := lifetime >= c.cfg.StableAfter
		if errors.Is(s.lostErr, io.EOF) && !stable {
			c.streak++
		} else {
			c.streak = 0
		}
		ev := fmt.Errorf("%w after %s: %w", ErrConnectionLost, lifetime.Round(time.Second), s.lostErr)
		if c.streak >= c.cfg.TakeoverThreshold {
			ev = fmt.Errorf("%w: %w", ErrTakenOver, ev)
		}
		c.setState(StateDisconnected, ev)

		if stable {
			flaps = 0
		} else {
			flaps++ // a flapping connection backs off like a failing one
		}
		lost := time.Now()
		d := backoff.Delay(flaps, c.cfg.BackoffBase, c.cfg.BackoffMax, 0, c.cfg.Rand())
		if err := c.cfg.Sleep(c.ctx, d); err != nil {
			return
		}
		ns, refused, err := c.connectLoop(c.ctx, flaps+1, c.cfg.ReconnectMax)
		if refused {
			c.streak = 0
		}
		if err != nil {
			if c.ctx.Err() == nil {
				c.finish(fmt.Errorf("iothub %s: %w", c.cfg.DeviceID, err))
			}
			return
		}
		c.log.Info("iothub reconnected", "offline_for", time.Now().Sub(lost).Round(time.Millisecond))
		s = ns
	}
}

// onMessage routes every incoming PUBLISH (paho calls it per message on its
// own goroutine) and acknowledges it. Only C2D arrives at QoS 1 (docs/protocol.md B.2),
// and its PUBACK waits for OnC2D; twin and method traffic is QoS 0, where
// Ack sends nothing.
func (c *Client) onMessage(s *session, m mqtt.Message) {
	topic := m.Topic()
	if hasPrefix(topic, c2dPrefix(c.cfg.DeviceID)) {
		if c.onC2D(topic, m.Payload()) {
			m.Ack()
		}
		return
	}
	defer m.Ack()
	switch {
	case hasPrefix(topic, twinResPrefix):
		r, err := parseTwinResponseTopic(topic)
		if err != nil {
			c.log.Warn("iothub bad twin response", "err", err)
			return
		}
		r.Body = m.Payload()
		c.mu.Lock()
		ch := c.pending[r.RID]
		delete(c.pending, r.RID)
		c.mu.Unlock()
		if ch == nil {
			c.log.Debug("iothub twin response for no pending request", "rid", r.RID)
			return
		}
		ch <- r // buffered, one response per rid
	case hasPrefix(topic, desiredPrefix):
		c.onDesiredPatch(s, topic, m.Payload())
	case hasPrefix(topic, methodPostPrefix):
		c.onMethod(s, topic, m.Payload())
	default:
		c.log.Warn("iothub message on unexpected topic", "topic", topic)
	}
}

// onC2D hands a cloud-to-device message to OnC2D and says whether to
// acknowledge (complete) it.
func (c *Client) onC2D(topic string, payload []byte) bool {
	msg, err := parseC2D(c.cfg.DeviceID, topic, payload)
	if err != nil {
		// It would fail the same way at every redelivery, and MQTT cannot
		// reject (docs/protocol.md B.4): completing it is the only way out of the queue.
		c.log.Warn("iothub bad c2d message completed unread", "err", err)
		return true
	}
	if c.cfg.OnC2D == nil {
		c.log.Warn("iothub c2d message without handler left for redelivery", "mid", msg.MessageID)
		return false
	}
	if err := c.cfg.OnC2D(msg); err != nil {
		c.log.Warn("iothub c2d message not completed; the hub delivers it again", "mid", msg.MessageID, "err", err)
		return false
	}
	return true
}

func hasPrefix(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }

// twinRequest publishes a twin request and waits for its response.
func (c *Client) twinRequest(ctx context.Context, s *session, topicPrefix string, body []byte) (twinResponse, error) {
	rid := strconv.FormatUint(c.rid.Add(1), 10)
	ch := make(chan twinResponse, 1)
	c.mu.Lock()
	c.pending[rid] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, rid)
		c.mu.Unlock()
	}()
	// QoS 0 like the SDKs (docs/protocol.md B.2); the response is the acknowledgement.
	if err := s.wait(ctx, s.cli.Publish(topicPrefix+rid, 0, false, body), c.cfg.OperationTimeout); err != nil {
		return twinResponse{}, err
	}
	t := time.NewTimer(c.cfg.OperationTimeout)
	defer t.Stop()
	select {
	case r := <-ch:
		return r, nil
	case <-s.lost:
		return twinResponse{}, fmt.Errorf("%w: %w", ErrConnectionLost, s.lostErr)
	case <-t.C:
		return twinResponse{}, fmt.Errorf("%w: no twin response within %s", ErrTimeout, c.cfg.OperationTimeout)
	case <-ctx.Done():
		return twinResponse{}, ctx.Err()
	}
}

func (c *Client) getTwin(ctx context.Context, s *session) (*Twin, error) {
	r, err := c.twinRequest(ctx, s, twinGetPrefix, nil)
	if err != nil {
		return nil, err
	}
	if r.Status != 200 {
		return nil, statusError("twin get", r)
	}
	return parseTwin(r.Body)
}

// GetTwin reads the full twin (docs/protocol.md B.5). It does not feed OnDesired.
func (c *Client) GetTwin(ctx context.Context) (*Twin, error) {
	s := c.current()
	if s == nil {
		return nil, fmt.Errorf("iothub twin get %s: %w", c.cfg.DeviceID, ErrNotConnected)
	}
	t, err := c.getTwin(ctx, s)
	if err != nil {
		return nil, fmt.Errorf("iothub twin get %s: %w", c.cfg.DeviceID, err)
	}
	return t, nil
}

// UpdateReported merges patch into the reported properties and returns the
// new reported $version (docs/protocol.md B.5: 204 with $version in the topic). patch is
// a JSON object: a json.RawMessage, []byte, or anything json.Marshal takes;
// null members delete. Errors wrap ErrBadRequest, ErrThrottled, ErrServer,
// ErrTooLarge, ErrNotConnected, ErrConnectionLost or ErrTimeout.
func (c *Client) UpdateReported(ctx context.Context, patch any) (int64, error) {
	body, err := reportedPatch(patch)
	if err != nil {
		return 0, fmt.Errorf("iothub update reported %s: %w", c.cfg.DeviceID, err)
	}
	s := c.current()
	if s == nil {
		return 0, fmt.Errorf("iothub update reported %s: %w", c.cfg.DeviceID, ErrNotConnected)
	}
	r, err := c.twinRequest(ctx, s, reportedPrefix, body)
	if err != nil {
		return 0, fmt.Errorf("iothub update reported %s: %w", c.cfg.DeviceID, err)
	}
	if r.Status != 204 {
		return 0, fmt.Errorf("iothub update reported %s: %w", c.cfg.DeviceID, statusError("twin update reported", r))
	}
	return r.Version, nil
}

// Send publishes a telemetry message at QoS 1 and returns once the hub
// PUBACKed it (docs/protocol.md B.3). Errors wrap ErrTooLarge or ErrInvalidProperty
// (nothing sent), ErrNotConnected (nothing sent), ErrConnectionLost or
// ErrTimeout (outcome unknown: resend, the hub deduplicates nothing, so
// consumers should use MessageID).
func (c *Client) Send(ctx context.Context, m Message) error {
	wait, err := c.Publish(m)
	if err != nil {
		return err
	}
	return wait(ctx)
}

// Publish hands a telemetry message to the connection at QoS 1 without
// waiting for the hub, and returns a function that waits for its PUBACK
// (docs/protocol.md B.3), for at most OperationTimeout from its call. Messages
// published one after another go out in that order, so a sender can keep
// a whole batch in flight instead of paying a round trip per message. The
// errors are Send's: Publish's mean nothing was sent, wait's that the
// outcome is unknown.
func (c *Client) Publish(m Message) (wait func(context.Context) error, err error) {
	topic, err := telemetryTopic(c.cfg.DeviceID, &m)
	if err != nil {
		return nil, fmt.Errorf("iothub send %s: %w", c.cfg.DeviceID, err)
	}
	s := c.current()
	if s == nil {
		return nil, fmt.Errorf("iothub send %s: %w", c.cfg.DeviceID, ErrNotConnected)
	}
	tok := s.cli.Publish(topic, 1, false, m.Body)
	return func(ctx context.Context) error {
		if err := s.wait(ctx, tok, c.cfg.OperationTimeout); err != nil {
			return fmt.Errorf("iothub send %s: %w", c.cfg.DeviceID, err)
		}
		return nil
	}, nil
}

// applyFull feeds a GET result into the sequencer.
func (c *Client) applyFull(s *session, t *Twin) {
	c.seqMu.Lock()
	out, resync := c.seq.full(t.DesiredVersion, t.Desired)
	c.enqueueLocked(out)
	c.seqMu.Unlock()
	if resync {
		c.resync(s)
	}
}

func (c *Client) onDesiredPatch(s *session, topic string, body []byte) {
	v, ok, err := parseDesiredTopic(topic)
	if err == nil && !ok {
		v, err = sectionVersion(body) // fall back to the body's $version
	}
	if err != nil {
		c.log.Warn("iothub desired patch without usable $version; resyncing", "topic", topic, "err", err)
		c.resync(s)
		return
	}
	c.seqMu.Lock()
	out, gap := c.seq.patch(v, body)
	c.enqueueLocked(out)
	c.seqMu.Unlock()
	if gap {
		c.resyncAfter(s, c.cfg.GapWait)
	}
}

// enqueueLocked hands updates to the delivery goroutine in order; seqMu held.
func (c *Client) enqueueLocked(out []Desired) {
	for _, d := range out {
		select {
		case c.desiredCh <- d:
		case <-c.ctx.Done():
			return
		}
	}
}

// resync re-reads the twin once at a time after a version gap.
func (c *Client) resync(s *session) { c.resyncAfter(s, 0) }

// resyncAfter waits up to wait for a version gap to close by itself (the
// missing patch arriving), then re-reads the twin if it is still open.
func (c *Client) resyncAfter(s *session, wait time.Duration) {
	if !c.resyncing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer c.resyncing.Store(false)
		if wait > 0 {
			if err := c.cfg.Sleep(c.ctx, wait); err != nil {
				return
			}
			c.seqMu.Lock()
			open := len(c.seq.pendingVersions()) > 0
			c.seqMu.Unlock()
			if !open {
				return
			}
		}
		t, err := c.getTwin(c.ctx, s)
		if err != nil {
			c.log.Warn("iothub twin resync failed", "err", err)
			return
		}
		c.applyFull(s, t)
	}()
}

func (c *Client) deliverDesired() {
	defer c.wg.Done()
	for {
		select {
		case d := <-c.desiredCh:
			c.log.Info("iothub desired properties", "version", d.Version, "full", d.Full)
			if c.cfg.OnDesired != nil {
				d.Props = properties(d.Props)
				c.cfg.OnDesired(d)
			}
		case <-c.ctx.Done():
			return
		}
	}
}

// onMethod runs a direct method and publishes the reply on the connection
// the request came in on (docs/protocol.md B.6).
func (c *Client) onMethod(s *session, topic string, payload []byte) {
	name, rid, err := parseMethodTopic(topic)
	if err != nil {
		c.log.Warn("iothub bad method request", "err", err)
		return
	}
	c.mu.Lock()
	h := c.methods[name]
	c.mu.Unlock()
	status, body := c.runMethod(name, h, payload)
	tok := s.cli.Publish(methodResponseTopic(status, rid), 0, false, body)
	if err := s.wait(c.ctx, tok, c.cfg.OperationTimeout); err != nil {
		c.log.Warn("iothub method reply not sent", "method", name, "err", err)
		return
	}
	c.log.Info("iothub method", "method", name, "status", status)
}

func errorBody(msg string) []byte {
	b, _ := json.Marshal(map[string]string{"error": msg})
	return b
}

func (c *Client) runMethod(name string, h MethodHandler, payload []byte) (status int, body []byte) {
	if h == nil {
		return 404, errorBody(fmt.Sprintf("method %q is not implemented", name))
	}
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("iothub method handler panicked", "method", name, "panic", r)
			status, body = 500, errorBody(fmt.Sprintf("method %q failed", name))
		}
	}()
	var in json.RawMessage
	if len(payload) > 0 {
		in = payload
	}
	status, resp := h(c.ctx, in)
	if resp == nil {
		return status, nil
	}
	out, err := json.Marshal(resp)
	if err != nil {
		return 500, errorBody(fmt.Sprintf("method %q: response is not JSON: %v", name, err))
	}
	if len(out) > MaxMethodPayload {
		return 500, errorBody(fmt.Sprintf("method %q: response is %d bytes, limit %d", name, len(out), MaxMethodPayload))
	}
	return status, out
}

// Sender is what a telemetry producer needs.
type Sender interface {
	Send(ctx context.Context, m Message) error
}

// Reporter is what a twin consumer needs to report state back.
type Reporter interface {
	UpdateReported(ctx context.Context, patch any) (int64, error)
}

var (
	_ Sender   = (*Client)(nil)
	_ Reporter = (*Client)(nil)
)
