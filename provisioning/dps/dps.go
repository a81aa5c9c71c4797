// Package dps registers a device with Azure IoT Hub Device Provisioning
// Service over MQTT with an X.509 client certificate and returns the IoT Hub
// it is assigned to (docs/protocol.md A and C of docs/protocol.md).
//
// Register is one blocking call: connect, subscribe, register, poll until a
// terminal status, disconnect. Throttling (429), server errors (5xx) and
// network failures are retried inside it with capped exponential back-off
// and full jitter; every other outcome is returned as a typed error (ErrDisabled,
// ErrUnauthorized, ...) for the caller to act on.
package dps

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/reefer/tracker/internal/backoff"
	"github.com/reefer/tracker/internal/ctxtime"
)

// DefaultEndpoint is the global device endpoint (docs/protocol.md A.1).
const DefaultEndpoint = "global.azure-devices-provisioning.net:8883"

const (
	// docs/protocol.md A.4: DPS allows 5 polls per 10 s per device; never poll faster than every 2 s.
	minPollInterval = 2 * time.Second
	// Clamp retry-after like the C SDK does, so a bogus value cannot park the device.
	maxRetryAfter = 300 * time.Second
)

// Config describes one registration. IDScope, RegistrationID and TLS are
// required; the zero value of everything else picks a sensible default.
type Config struct {
	// Endpoint is host[:port]; DefaultEndpoint when empty, port 8883 when absent.
	Endpoint string
	IDScope  string
	// RegistrationID must equal the leaf certificate's subject CN (docs/protocol.md A.1, C).
	RegistrationID string
	// TLS carries the client certificate chain (leaf + intermediates) and the
	// roots to trust. ServerName defaults to the endpoint host when empty.
	TLS *tls.Config
	// Payload is optional JSON handed to a custom-allocation webhook (docs/protocol.md A.3).
	Payload json.RawMessage
	// CSR, when set, is a PKCS#10 request (DER) asking DPS to issue the
	// hub certificate (docs/protocol.md A.5): it raises the api-version
	// to APIVersionCSR and the assigned result must carry the chain.
	CSR    []byte
	Logger *slog.Logger

	// MaxWait bounds the whole call, retries included. Default 5 min.
	MaxWait time.Duration
	// ResponseTimeout bounds the wait for each DPS response. Default 30 s.
	ResponseTimeout time.Duration
	// ConnectTimeout bounds TCP+TLS+CONNECT. Default 30 s.
	ConnectTimeout time.Duration
	// MaxAttempts bounds the connections Register makes for retriable
	// failures. Default 6.
	MaxAttempts int
	// BackoffBase and BackoffMax shape the retry back-off. Defaults 2 s and 2 min.
	BackoffBase, BackoffMax time.Duration
	// KeepAlive is the MQTT keep-alive. Default 60 s.
	KeepAlive time.Duration

	// Sleep waits d or until ctx ends; tests replace it. Default: a timer.
	Sleep func(ctx context.Context, d time.Duration) error
	// Rand returns a uniform sample in [0, 1) for jitter. Default math/rand/v2.
	Rand func() float64
	// NewClient builds the MQTT client; tests replace it. Default mqtt.NewClient.
	NewClient func(*mqtt.ClientOptions) mqtt.Client
}

// Result is a terminal "assigned" registration.
type Result struct {
	// AssignedHub is the IoT Hub host name; it may carry ":port" (emulators).
	AssignedHub string
	DeviceID    string
	Status      string // "assigned"
	// Substatus is initialAssignment, deviceDataMigrated, deviceDataReset or
	// reprovisionedToInitialAssignment (docs/protocol.md A.4).
	Substatus   string
	OperationID string
	// RegistrationState is the raw registrationState object, for logging.
	RegistrationState json.RawMessage
	// IssuedCertificateChain is the certificate DPS issued for
	// Config.CSR, DER, leaf first then each issuer (docs/protocol.md
	// A.5); empty without a CSR.
	IssuedCertificateChain [][]byte
}

func (c *Config) withDefaults() (Config, error) {
	cfg := *c
	if cfg.IDScope == "" {
		return cfg, errors.New("IDScope is empty")
	}
	if err := validRegistrationID(cfg.RegistrationID); err != nil {
		return cfg, err
	}
	if cfg.TLS == nil {
		return cfg, errors.New("TLS config is nil")
	}
	if len(cfg.Payload) > 0 && !json.Valid(cfg.Payload) {
		return cfg, errors.New("payload is not valid JSON")
	}
	if cfg.Endpoint == "" {
		cfg.Endpoint = DefaultEndpoint
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.MaxWait, 5*time.Minute)
	def(&cfg.ResponseTimeout, 30*time.Second)
	def(&cfg.ConnectTimeout, 30*time.Second)
	def(&cfg.BackoffBase, 2*time.Second)
	def(&cfg.BackoffMax, 2*time.Minute)
	def(&cfg.KeepAlive, 60*time.Second)
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 6
	}
	if cfg.Sleep == nil {
		cfg.Sleep = ctxtime.Sleep
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	if cfg.NewClient == nil {
		cfg.NewClient = mqtt.NewClient
	}
	return cfg, nil
}

// username is the CONNECT user name: the api-version follows the CSR.
func (c *Config) username() string {
	if len(c.CSR) > 0 {
		return UsernameCSR(c.IDScope, c.RegistrationID)
	}
	return Username(c.IDScope, c.RegistrationID)
}

// validRegistrationID applies docs/protocol.md C: alphanumeric plus "- . _ :", the last
// character alphanumeric or "-", at most 128 characters (64 for X.509, which
// the certificate's CN limit already enforces). It also keeps "/", "+" and
// "#" out of the MQTT user name and topics.
func validRegistrationID(id string) error {
	if id == "" {
		return errors.New("registration id is empty")
	}
	if len(id) > 128 {
		return fmt.Errorf("registration id %q is longer than 128 characters", id)
	}
	alnum := func(c byte) bool {
		return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !alnum(c) && c != '-' && c != '.' && c != '_' && c != ':' {
			return fmt.Errorf("registration id %q: character %q not allowed", id, c)
		}
	}
	if last := id[len(id)-1]; !alnum(last) && last != '-' {
		return fmt.Errorf("registration id %q must end with a letter, digit or '-'", id)
	}
	return nil
}

// splitEndpoint returns host and port of "host[:port]", defaulting the port.
func splitEndpoint(ep, defPort string) (host, port string, err error) {
	if h, p, err := net.SplitHostPort(ep); err == nil {
		if h == "" || p == "" {
			return "", "", fmt.Errorf("endpoint %q: empty host or port", ep)
		}
		return h, p, nil
	}
	if ep == "" {
		return "", "", errors.New("endpoint is empty")
	}
	return ep, defPort, nil
}

// maxThrottledPolls bounds how often a throttled poll is repeated on one
// connection before the whole registration backs off and starts over.
const maxThrottledPolls = 3

// errMaxWait is the cause when Config.MaxWait runs out.
var errMaxWait = errors.New("registration did not finish within MaxWait")

// Register provisions the device and returns its hub assignment. Errors wrap
// an *Error and one of the Err* sentinels: "dps register sensor-thl-001: ...".
// If ctx is cancelled Register returns ctx's error (wrapped).
func Register(ctx context.Context, c Config) (*Result, error) {
	cfg, err := c.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("dps register %s: config: %w", c.RegistrationID, err)
	}
	res, err := register(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("dps register %s: %w", cfg.RegistrationID, err)
	}
	return res, nil
}

func register(parent context.Context, cfg Config) (*Result, error) {
	host, port, err := splitEndpoint(cfg.Endpoint, "8883")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeoutCause(parent, cfg.MaxWait, errMaxWait)
	defer cancel()
	log := cfg.Logger.With("registration_id", cfg.RegistrationID, "endpoint", cfg.Endpoint)

	for attempt := 0; ; attempt++ {
		res, err := session(ctx, cfg, host, port, log)
		if err == nil {
			log.Info("dps assigned", "hub", res.AssignedHub, "device_id", res.DeviceID,
				"substatus", res.Substatus, "attempts", attempt+1)
			return res, nil
		}
		if parent.Err() != nil {
			return nil, context.Cause(parent)
		}
		if ctx.Err() != nil {
			// Our own MaxWait: a clean, typed timeout.
			return nil, maxWaitError(err)
		}
		if !retriable(err) || attempt+1 >= cfg.MaxAttempts {
			return nil, err
		}
		var floor time.Duration
		var de *Error
		if errors.As(err, &de) {
			floor = min(de.RetryAfter, maxRetryAfter)
		}
		d := backoff.Delay(attempt, cfg.BackoffBase, cfg.BackoffMax, floor, cfg.Rand())
		log.Warn("dps attempt failed; retrying", "attempt", attempt+1, "delay", d, "err", err)
		if serr := cfg.Sleep(ctx, d); serr != nil {
			if parent.Err() != nil {
				return nil, context.Cause(parent)
			}
			return nil, maxWaitError(err)
		}
	}
}

// maxWaitError is the error when MaxWait runs out after the failure last.
// A throttled last attempt stays ErrThrottled with its retry-after (spec
// A.4: honour retry-after), so that the caller's next attempt still waits
// for it instead of treating the timeout as a short transient failure.
func maxWaitError(last error) error {
	if errors.Is(last, ErrThrottled) {
		return fmt.Errorf("%w (%w)", last, errMaxWait)
	}
	return &Error{Kind: ErrTransient, Op: "register", Err: errMaxWait, Message: last.Error()}
}

// conn is one MQTT connection to DPS: its responses and its loss.
type conn struct {
	cli       mqtt.Client
	responses chan mqtt.Message
	lost      chan struct{}
	lostOnce  sync.Once
	lostErr   error
}

func (cn *conn) markLost(err error) {
	cn.lostOnce.Do(func() {
		cn.lostErr = err
		close(cn.lost)
	})
}

// wait waits for a paho token, the connection's loss, or ctx.
func (cn *conn) wait(ctx context.Context, tok mqtt.Token, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-cn.lost:
		return fmt.Errorf("connection lost: %w", cn.lostErr)
	case <-t.C:
		return fmt.Errorf("no acknowledgement within %s", timeout)
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// session runs one connection from CONNECT to a terminal answer.
func session(ctx context.Context, cfg Config, host, port string, log *slog.Logger) (*Result, error) {
	tlsCfg := cfg.TLS.Clone()
	if tlsCfg.ServerName == "" {
		tlsCfg.ServerName = host // SNI and verification (docs/protocol.md A.1)
	}
	cn := &conn{responses: make(chan mqtt.Message, 8), lost: make(chan struct{})}
	opts := mqtt.NewClientOptions().
		AddBroker("tls://" + net.JoinHostPort(host, port)).
		SetTLSConfig(tlsCfg).
		SetClientID(cfg.RegistrationID). // docs/protocol.md A.1
		SetUsername(cfg.username()).     // no password for X.509
		SetProtocolVersion(4).           // 3.1.1 only; stops paho falling back to 3.1
		SetCleanSession(true).           // DPS keeps no session (docs/protocol.md A.1)
		SetKeepAlive(cfg.KeepAlive).
		SetConnectTimeout(cfg.ConnectTimeout).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetOrderMatters(false).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
			select {
			case cn.responses <- m:
			case <-cn.lost:
			}
		}).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) { cn.markLost(err) })
	cn.cli = cfg.NewClient(opts)

	if err := cn.wait(ctx, cn.cli.Connect(), cfg.ConnectTimeout); err != nil {
		// The CONNECT may still be in flight (ctx ended, or our timer beat
		// paho's): paho would finish it in the background and keep the
		// connection. Disconnect waits for it and closes it; on a client
		// that never connected it is a no-op.
		cn.cli.Disconnect(0)
		if ctx.Err() != nil {
			return nil, err
		}
		return nil, &Error{Kind: classifyConnect(err), Op: "connect", Err: err}
	}
	defer func() {
		cn.markLost(errors.New("closed"))
		cn.cli.Disconnect(250)
	}()
	log.Debug("dps connected")

	// docs/protocol.md A.2: subscribe before publishing. A nil callback routes to the
	// default handler above.
	stok := cn.cli.Subscribe(responseFilter, 1, nil)
	if err := cn.wait(ctx, stok, cfg.ResponseTimeout); err != nil {
		return nil, &Error{Kind: ErrTransient, Op: "subscribe", Err: err}
	}
	if st, ok := stok.(*mqtt.SubscribeToken); ok {
		if code := st.Result()[responseFilter]; code == 0x80 {
			return nil, &Error{Kind: ErrTransient, Op: "subscribe", Message: "SUBACK refused " + responseFilter}
		}
	}

	body, err := registerBody(cfg.RegistrationID, cfg.Payload, cfg.CSR)
	if err != nil {
		return nil, &Error{Kind: ErrBadRequest, Op: "register", Err: err}
	}
	rid := 1
	op := "register"
	topic := RegisterTopic(strconv.Itoa(rid))
	var payload []byte = body
	var opID string
	throttledPolls := 0
	for {
		if err := cn.wait(ctx, cn.cli.Publish(topic, 1, false, payload), cfg.ResponseTimeout); err != nil {
			return nil, &Error{Kind: ErrTransient, Op: op, Err: err}
		}
		r, err := cn.await(ctx, strconv.Itoa(rid), cfg.ResponseTimeout, log)
		if err != nil {
			var de *Error
			if errors.As(err, &de) {
				de.Op = op
				return nil, de
			}
			return nil, &Error{Kind: ErrTransient, Op: op, Err: err}
		}
		if r.Status == 429 && op == "poll" && throttledPolls < maxThrottledPolls {
			// A throttled status poll: poll the same operation again rather
			// than registering anew. Registrations are billable and have
			// their own rate limit; status polls are neither (docs/protocol.md F).
			throttledPolls++
			wait := min(max(r.RetryAfter, minPollInterval*time.Duration(1<<throttledPolls)), maxRetryAfter)
			log.Warn("dps poll throttled; polling the operation again", "operation_id", opID, "wait", wait)
			if err := cfg.Sleep(ctx, wait); err != nil {
				return nil, &Error{Kind: ErrTransient, Op: op, Err: err}
			}
			rid++
			topic = PollTopic(strconv.Itoa(rid), opID)
			continue
		}
		if r.Status != 200 && r.Status != 202 {
			return nil, classifyStatus(op, r)
		}
		out, err := interpretOperation(op, r)
		if err != nil {
			return nil, err
		}
		if out.Done {
			if len(cfg.CSR) > 0 && len(out.Result.IssuedCertificateChain) == 0 {
				// Assigned, but the hub would refuse the onboarding
				// certificate: without the chain the device cannot go on.
				return nil, &Error{Kind: ErrMalformed, Op: op, Status: r.Status,
					Message: "assigned without issuedCertificateChain although the request carried a csr (docs/protocol.md A.5)"}
			}
			return out.Result, nil
		}
		// docs/protocol.md A.4: wait retry-after (but never less than 2 s), then poll.
		wait := min(max(r.RetryAfter, minPollInterval), maxRetryAfter)
		log.Debug("dps assigning", "operation_id", out.OperationID, "wait", wait)
		if err := cfg.Sleep(ctx, wait); err != nil {
			return nil, &Error{Kind: ErrTransient, Op: op, Err: err}
		}
		rid++
		op = "poll"
		opID = out.OperationID
		topic = PollTopic(strconv.Itoa(rid), opID)
		payload = nil // docs/protocol.md A.2: the poll body is empty
	}
}

// await returns the next response carrying rid, skipping strays.
func (cn *conn) await(ctx context.Context, rid string, timeout time.Duration, log *slog.Logger) (response, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case m := <-cn.responses:
			r, err := parseResponseTopic(m.Topic())
			if err != nil {
				return r, &Error{Kind: ErrMalformed, Err: err}
			}
			if r.RID != rid {
				log.Debug("dps ignoring response for another request", "topic", m.Topic(), "want_rid", rid)
				continue
			}
			r.Body = m.Payload()
			return r, nil
		case <-cn.lost:
			return response{}, fmt.Errorf("connection lost: %w", cn.lostErr)
		case <-t.C:
			return response{}, fmt.Errorf("no response within %s", timeout)
		case <-ctx.Done():
			return response{}, context.Cause(ctx)
		}
	}
}
