package integration

import (
	"context"
	"crypto/tls"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/reefer/tracker/deploy/emulator"
	"github.com/reefer/tracker/deploy/emulator/store"
	"github.com/reefer/tracker/internal/faketime"
	"github.com/reefer/tracker/internal/waitfor"
	"github.com/reefer/tracker/provisioning/certs/certstest"
	"github.com/reefer/tracker/provisioning/dps"
	"github.com/reefer/tracker/provisioning/iothub"
)

// fleet is an operator PKI: a root verified in DPS and an intermediate
// that signs the devices, as deploy/certs makes it.
type fleet struct {
	root, inter *certstest.Cert
}

func newFleet(t *testing.T) *fleet {
	t.Helper()
	root := certstest.Root(t, "Fleet Root CA", certstest.Options{})
	return &fleet{root: root, inter: root.Intermediate(t, "Fleet Intermediate CA", certstest.Options{})}
}

// device issues a device certificate signed by the intermediate.
func (f *fleet) device(t *testing.T, cn string) *certstest.Cert {
	t.Helper()
	return f.inter.Leaf(t, cn, certstest.Options{})
}

// chain is what the device presents: leaf, then the intermediate (docs/protocol.md C).
func (f *fleet) chain(leaf *certstest.Cert) tls.Certificate {
	return tlsCert(leaf, f.inter)
}

func tlsCert(leaf *certstest.Cert, issuers ...*certstest.Cert) tls.Certificate {
	c := tls.Certificate{Certificate: [][]byte{leaf.Cert.Raw}, PrivateKey: leaf.Key, Leaf: leaf.Cert}
	for _, i := range issuers {
		c.Certificate = append(c.Certificate, i.Cert.Raw)
	}
	return c
}

// enrollFleet makes the root a verified CA with an enrollment group.
func enrollFleet(t *testing.T, e *emulator.Emulator, f *fleet, mod func(*store.EnrollmentGroup)) {
	t.Helper()
	if _, err := e.EnrollGroup("fleet", f.root.Cert, mod); err != nil {
		t.Fatalf("EnrollGroup: %v", err)
	}
}

// dpsConfig registers regID with cert against e.
func dpsConfig(e *emulator.Emulator, regID string, cert tls.Certificate, s *faketime.Sleeps) dps.Config {
	return dps.Config{
		Endpoint:        e.DPSEndpoint(),
		IDScope:         e.IDScope(),
		RegistrationID:  regID,
		TLS:             e.ClientTLSConfig(cert),
		Sleep:           s.Sleep,
		MaxWait:         30 * time.Second,
		ResponseTimeout: 10 * time.Second,
		ConnectTimeout:  10 * time.Second,
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// provision registers a device of f with e and returns its assignment.
func provision(t *testing.T, e *emulator.Emulator, regID string, cert tls.Certificate) *dps.Result {
	t.Helper()
	res, err := dps.Register(testCtx(t), dpsConfig(e, regID, cert, &faketime.Sleeps{}))
	if err != nil {
		t.Fatalf("dps.Register(%s): %v", regID, err)
	}
	return res
}

// gate is an iothub Sleep that returns at once (after a short real pause,
// so a reconnect loop cannot spin) unless the test closed it: then the
// client waits in its back-off until the test opens it again. It lets a
// test hold a device offline between a disconnect and the reconnect.
type gate struct {
	mu     sync.Mutex
	closed bool
	open   chan struct{}
	held   chan struct{} // signalled when a sleep starts waiting
}

func newGate() *gate { return &gate{open: make(chan struct{}), held: make(chan struct{}, 16)} }

func (g *gate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.closed {
		g.closed = true
		g.open = make(chan struct{})
	}
}

func (g *gate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		g.closed = false
		close(g.open)
	}
}

// waitHeld waits until a client sleep is held by the closed gate.
func (g *gate) waitHeld(t *testing.T) {
	t.Helper()
	select {
	case <-g.held:
	case <-time.After(20 * time.Second):
		t.Fatal("the client never reached its back-off")
	}
}

func (g *gate) sleep(ctx context.Context, d time.Duration) error {
	g.mu.Lock()
	closed, open := g.closed, g.open
	g.mu.Unlock()
	if closed {
		select {
		case g.held <- struct{}{}:
		default:
		}
		select {
		case <-open:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	t := time.NewTimer(min(d, 20*time.Millisecond))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// device is a connected iothub client with its events.
type device struct {
	c       *iothub.Client
	states  chan iothub.StateChange
	desired chan iothub.Desired
	c2d     chan iothub.Message
	gate    *gate
}

// connect makes and connects an iothub client for res with cert.
func connect(t *testing.T, e *emulator.Emulator, res *dps.Result, cert tls.Certificate, mod func(*iothub.Config)) *device {
	t.Helper()
	d, err := tryConnect(t, e, res, cert, mod)
	if err != nil {
		t.Fatalf("iothub Connect %s: %v", res.DeviceID, err)
	}
	return d
}

func tryConnect(t *testing.T, e *emulator.Emulator, res *dps.Result, cert tls.Certificate, mod func(*iothub.Config)) (*device, error) {
	t.Helper()
	d := &device{
		states:  make(chan iothub.StateChange, 256),
		desired: make(chan iothub.Desired, 64),
		c2d:     make(chan iothub.Message, 16),
		gate:    newGate(),
	}
	cfg := iothub.Config{
		Hub:      res.AssignedHub,
		DeviceID: res.DeviceID,
		TLS:      e.ClientTLSConfig(cert),
		// Never block the client: a duel can produce many events.
		OnState: func(s iothub.StateChange) {
			select {
			case d.states <- s:
			default:
			}
		},
		OnDesired:        func(x iothub.Desired) { d.desired <- x },
		OnC2D:            func(m iothub.Message) error { d.c2d <- m; return nil },
		Sleep:            d.gate.sleep,
		OperationTimeout: 10 * time.Second,
		ConnectTimeout:   10 * time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := iothub.New(cfg)
	if err != nil {
		t.Fatalf("iothub.New: %v", err)
	}
	d.c = c
	t.Cleanup(func() { c.Close() })
	if err := c.Connect(testCtx(t)); err != nil {
		return d, err
	}
	return d, nil
}

// waitState returns the next state change matching ok.
func (d *device) waitState(t *testing.T, what string, ok func(iothub.StateChange) bool) iothub.StateChange {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case s := <-d.states:
			if ok(s) {
				return s
			}
		case <-timeout:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func (d *device) nextDesired(t *testing.T) iothub.Desired {
	t.Helper()
	select {
	case x := <-d.desired:
		return x
	case <-time.After(20 * time.Second):
		t.Fatal("timed out waiting for a desired-properties update")
	}
	return iothub.Desired{}
}

// eventually polls cond until it holds or 20 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitfor.Until(t, what, 20*time.Second, 5*time.Millisecond, cond)
}

func isErr(err, target error) bool { return errors.Is(err, target) }
