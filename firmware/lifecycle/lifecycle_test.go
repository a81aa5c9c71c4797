package lifecycle

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/reefer/tracker/internal/syncbuf"
	"github.com/reefer/tracker/provisioning/cache"
	"github.com/reefer/tracker/provisioning/certs"
	"github.com/reefer/tracker/provisioning/dps"
	"github.com/reefer/tracker/provisioning/iothub"
)

var t0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

const (
	regID = "sensor-thl-001"
	fp    = "aa11bb22"
	hubA  = "hub-a.azure-devices.net"
	hubB  = "hub-b.azure-devices.net"
)

// regStep is one scripted DPS answer.
type regStep struct {
	hub string // assigned hub when err is nil
	err error
}

// connStep is one scripted hub connect: refused/failing with err, or a
// session that ends with end (or stays up until the test stops when hold).
type connStep struct {
	err     error
	timeout bool // block until the connect context ends

	end  error
	hold bool
}

type fakeSession struct {
	done   chan struct{}
	err    error
	closed chan struct{}
	once   sync.Once
}

func (s *fakeSession) Done() <-chan struct{} { return s.done }
func (s *fakeSession) Err() error            { return s.err }
func (s *fakeSession) Close() error {
	s.once.Do(func() { close(s.closed) })
	return nil
}

// harness runs a Provisioner against scripted fakes. Build it inside a
// testing/synctest bubble, whose fake clock runs the waits at once. When a
// script runs out, or stop says so, it cancels the run.
type harness struct {
	t      *testing.T
	dir    string
	ctx    context.Context
	cancel context.CancelFunc
	p      *Provisioner
	logs   *syncbuf.Buffer

	start      time.Time // the bubble's time at newHarness: the wall clock reads t0 then
	mu         sync.Mutex
	regs       []regStep
	regCfgs    []dps.Config
	conns      []connStep
	connected  []cache.Assignment
	sessions   []*fakeSession
	sleeps     []time.Duration // waits announced by a status
	wakeAt     time.Time       // the next attempt after the last wait
	statuses   []Status
	stop       func(Status) bool
	randValues []float64
}

func newHarness(t *testing.T, regs []regStep, conns []connStep) *harness {
	t.Helper()
	h := &harness{t: t, dir: t.TempDir(), start: time.Now(), regs: regs, conns: conns, logs: &syncbuf.Buffer{}}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	t.Cleanup(h.cancel)
	p, err := New(Config{
		Identity:    &certs.Identity{RegistrationID: regID, FingerprintSHA256: fp},
		TLS:         &tls.Config{},
		DPS:         dps.Config{IDScope: "0ne00000A0A", Endpoint: "dps.example:8883"},
		StateDir:    h.dir,
		RetryMin:    5 * time.Minute,
		RetryMax:    60 * time.Minute,
		BackoffBase: 10 * time.Second,
		BackoffMax:  10 * time.Minute,
		HubGiveUp:   20 * time.Millisecond,
		Logger:      slog.New(slog.NewTextHandler(h.logs, nil)),
		Now:         h.clock,
		Rand:        h.rand,
		Register:    h.register,
		OnStatus:    h.onStatus,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.p = p
	return h
}

// clock is the wall clock: t0 plus the time the bubble has moved on.
func (h *harness) clock() time.Time { return t0.Add(time.Since(h.start)) }

func (h *harness) rand() float64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.randValues) > 0 {
		r := h.randValues[0]
		h.randValues = h.randValues[1:]
		return r
	}
	return 0.5
}

// attemptLocked checks that an attempt after a wait comes when the wait
// said it would: the Provisioner slept what it announced.
func (h *harness) attemptLocked() {
	if !h.wakeAt.IsZero() {
		if now := h.clock(); !now.Equal(h.wakeAt) {
			h.t.Errorf("attempt at %v; the wait before it announced %v", now, h.wakeAt)
		}
		h.wakeAt = time.Time{}
	}
}

func (h *harness) register(ctx context.Context, cfg dps.Config) (*dps.Result, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.attemptLocked()
	h.regCfgs = append(h.regCfgs, cfg)
	if len(h.regs) == 0 {
		h.cancel()
		return nil, fmt.Errorf("dps register %s: %w", cfg.RegistrationID, context.Canceled)
	}
	s := h.regs[0]
	h.regs = h.regs[1:]
	if s.err != nil {
		return nil, fmt.Errorf("dps register %s: %w", cfg.RegistrationID, s.err)
	}
	return &dps.Result{AssignedHub: s.hub, DeviceID: cfg.RegistrationID, Status: "assigned", Substatus: "initialAssignment"}, nil
}

func (h *harness) Connect(ctx context.Context, a cache.Assignment) (Session, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.attemptLocked()
	h.connected = append(h.connected, a)
	if len(h.conns) == 0 {
		h.cancel()
		return nil, context.Canceled
	}
	s := h.conns[0]
	h.conns = h.conns[1:]
	if s.timeout {
		h.mu.Unlock()
		<-ctx.Done()
		h.mu.Lock()
		return nil, fmt.Errorf("iothub connect %s: %w", a.DeviceID, ctx.Err())
	}
	if s.err != nil {
		return nil, fmt.Errorf("iothub connect %s: %w", a.DeviceID, s.err)
	}
	sess := &fakeSession{done: make(chan struct{}), closed: make(chan struct{}), err: s.end}
	if !s.hold {
		close(sess.done)
	}
	h.sessions = append(h.sessions, sess)
	return sess, nil
}

// onStatus records s, and a wait that starts now (a next attempt after
// now: the Provisioner reports it just before it sleeps).
func (h *harness) onStatus(s Status) {
	h.mu.Lock()
	h.statuses = append(h.statuses, s)
	if d := s.NextAttempt.Sub(h.clock()); d > 0 {
		h.sleeps = append(h.sleeps, d)
		h.wakeAt = s.NextAttempt
	}
	stop := h.stop
	h.mu.Unlock()
	if stop != nil && stop(s) {
		h.cancel()
	}
}

// run runs the provisioner to its end and checks it stops with the cancel.
func (h *harness) run() {
	h.t.Helper()
	done := make(chan error, 1)
	go func() { done <- h.p.Run(h.ctx, h) }()
	if err := <-done; !errors.Is(err, context.Canceled) {
		h.t.Errorf("Run = %v; want context.Canceled", err)
	}
}

// phases lists the phases reported, consecutive duplicates folded.
func (h *harness) phases() []Phase {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []Phase
	for _, s := range h.statuses {
		if len(out) == 0 || out[len(out)-1] != s.Phase {
			out = append(out, s.Phase)
		}
	}
	return out
}

func (h *harness) saveCache(hub, fingerprint string) {
	h.t.Helper()
	err := cache.Save(h.dir, &cache.Assignment{Hub: hub, DeviceID: regID, CertFingerprintSHA256: fingerprint, AssignedAt: t0.Add(-24 * time.Hour)})
	if err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) cachedHub() string {
	h.t.Helper()
	a, err := cache.Load(h.dir)
	if errors.Is(err, cache.ErrNoCache) {
		return ""
	}
	if err != nil {
		h.t.Fatal(err)
	}
	return a.Hub
}

func stopOnConnected(n int) func(Status) bool {
	seen := 0
	last := Phase("")
	return func(s Status) bool {
		if s.Phase == PhaseConnected && last != PhaseConnected {
			seen++
		}
		last = s.Phase
		return seen >= n
	}
}

func dpsErr(kind error, retryAfter time.Duration) error {
	return &dps.Error{Kind: kind, Op: "register", RetryAfter: retryAfter}
}

func notAuthorized() error {
	return fmt.Errorf("refused 3 times in a row: %w", iothub.ErrNotAuthorized)
}

func TestRunTransitions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		cache      string // fingerprint of a pre-saved assignment to hubA; "" none
		regs       []regStep
		conns      []connStep
		stopAfter  int // connected phases before stopping; 0: run out of script
		wantPhases []Phase
		wantRegs   int
		wantHubs   []string // hubs connected to, in order
		wantSleeps []time.Duration
		wantCache  string
	}{
		{
			name:       "no cache: DPS then hub",
			regs:       []regStep{{hub: hubA}},
			conns:      []connStep{{hold: true}},
			stopAfter:  1,
			wantPhases: []Phase{PhaseProvisioning, PhaseAssigned, PhaseConnected},
			wantRegs:   1, wantHubs: []string{hubA}, wantCache: hubA,
		},
		{
			name:       "cached assignment skips DPS",
			cache:      fp,
			conns:      []connStep{{hold: true}},
			stopAfter:  1,
			wantPhases: []Phase{PhaseAssigned, PhaseConnected},
			wantRegs:   0, wantHubs: []string{hubA}, wantCache: hubA,
		},
		{
			name:       "certificate changed: DPS again",
			cache:      "ffff0000",
			regs:       []regStep{{hub: hubB}},
			conns:      []connStep{{hold: true}},
			stopAfter:  1,
			wantPhases: []Phase{PhaseProvisioning, PhaseAssigned, PhaseConnected},
			wantRegs:   1, wantHubs: []string{hubB}, wantCache: hubB,
		},
		{
			name:       "hub refuses cached assignment: straight back to DPS",
			cache:      fp,
			regs:       []regStep{{hub: hubB}},
			conns:      []connStep{{err: notAuthorized()}, {hold: true}},
			stopAfter:  1,
			wantPhases: []Phase{PhaseAssigned, PhaseProvisioning, PhaseAssigned, PhaseConnected},
			wantRegs:   1, wantHubs: []string{hubA, hubB}, wantCache: hubB,
		},
		{
			name:       "identity deleted while connected: back to DPS, fresh identity",
			regs:       []regStep{{hub: hubA}, {hub: hubA}},
			conns:      []connStep{{end: notAuthorized()}, {hold: true}},
			stopAfter:  2,
			wantPhases: []Phase{PhaseProvisioning, PhaseAssigned, PhaseConnected, PhaseProvisioning, PhaseAssigned, PhaseConnected},
			wantRegs:   2, wantHubs: []string{hubA, hubA}, wantCache: hubA,
		},
		{
			name:      "hub refuses a fresh assignment: long schedule, then DPS again",
			regs:      []regStep{{hub: hubA}, {hub: hubA}},
			conns:     []connStep{{err: notAuthorized()}, {hold: true}},
			stopAfter: 1,
			wantPhases: []Phase{PhaseProvisioning, PhaseAssigned, PhaseRefusedUnauthorized,
				PhaseProvisioning, PhaseAssigned, PhaseConnected},
			wantRegs: 2, wantHubs: []string{hubA, hubA}, wantCache: hubA,
			wantSleeps: []time.Duration{7*time.Minute + 30*time.Second},
		},
		{
			name: "enrollment disabled: long growing schedule until re-enabled",
			regs: []regStep{{err: dpsErr(dps.ErrDisabled, 0)}, {err: dpsErr(dps.ErrDisabled, 0)},
				{err: dpsErr(dps.ErrDisabled, 0)}, {err: dpsErr(dps.ErrDisabled, 0)}, {err: dpsErr(dps.ErrDisabled, 0)}, {hub: hubA}},
			conns:     []connStep{{hold: true}},
			stopAfter: 1,
			wantPhases: []Phase{PhaseProvisioning, PhaseRefusedDisabled, PhaseProvisioning, PhaseRefusedDisabled,
				PhaseProvisioning, PhaseRefusedDisabled, PhaseProvisioning, PhaseRefusedDisabled,
				PhaseProvisioning, PhaseRefusedDisabled, PhaseProvisioning, PhaseAssigned, PhaseConnected},
			wantRegs: 6, wantHubs: []string{hubA}, wantCache: hubA,
			// rand 0.5: 3/4 of a ceiling doubling from 10 min, capped at 60 min.
			wantSleeps: []time.Duration{7*time.Minute + 30*time.Second, 15 * time.Minute, 30 * time.Minute, 45 * time.Minute, 45 * time.Minute},
		},
		{
			name:       "certificate unauthorized (group deleted): long schedule",
			regs:       []regStep{{err: dpsErr(dps.ErrUnauthorized, 0)}, {hub: hubA}},
			conns:      []connStep{{hold: true}},
			stopAfter:  1,
			wantPhases: []Phase{PhaseProvisioning, PhaseRefusedUnauthorized, PhaseProvisioning, PhaseAssigned, PhaseConnected},
			wantRegs:   2, wantHubs: []string{hubA}, wantCache: hubA,
			wantSleeps: []time.Duration{7*time.Minute + 30*time.Second},
		},
		{
			name:       "throttled: retry-after honoured over the jitter",
			regs:       []regStep{{err: dpsErr(dps.ErrThrottled, 40*time.Second)}, {hub: hubA}},
			conns:      []connStep{{hold: true}},
			stopAfter:  1,
			wantPhases: []Phase{PhaseProvisioning, PhaseBackingOff, PhaseProvisioning, PhaseAssigned, PhaseConnected},
			wantRegs:   1 + 1, wantHubs: []string{hubA}, wantCache: hubA,
			wantSleeps: []time.Duration{40 * time.Second},
		},
		{
			name: "network failures: full jitter, doubling, capped",
			regs: []regStep{{err: dpsErr(dps.ErrTransient, 0)}, {err: dpsErr(dps.ErrTransient, 0)},
				{err: dpsErr(dps.ErrTransient, 0)}, {err: errors.New("dial tcp: no route to host")},
				{err: dpsErr(dps.ErrTransient, 0)}, {err: dpsErr(dps.ErrTransient, 0)}, {err: dpsErr(dps.ErrTransient, 0)}, {hub: hubA}},
			conns:     []connStep{{hold: true}},
			stopAfter: 1,
			wantRegs:  8, wantHubs: []string{hubA}, wantCache: hubA,
			wantSleeps: []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 300 * time.Second},
		},
		{
			name:       "failed registration (custom allocation): long schedule",
			regs:       []regStep{{err: dpsErr(dps.ErrFailed, 0)}, {hub: hubA}},
			conns:      []connStep{{hold: true}},
			stopAfter:  1,
			wantPhases: []Phase{PhaseProvisioning, PhaseBackingOff, PhaseProvisioning, PhaseAssigned, PhaseConnected},
			wantRegs:   2, wantHubs: []string{hubA}, wantCache: hubA,
			wantSleeps: []time.Duration{7*time.Minute + 30*time.Second},
		},
		{
			name:       "hub unreachable: back off, keep the assignment",
			cache:      fp,
			conns:      []connStep{{err: errors.New("dial tcp: i/o timeout")}, {hold: true}},
			stopAfter:  1,
			wantPhases: []Phase{PhaseAssigned, PhaseBackingOff, PhaseAssigned, PhaseConnected},
			wantRegs:   0, wantHubs: []string{hubA, hubA}, wantCache: hubA,
			wantSleeps: []time.Duration{5 * time.Second},
		},
		{
			name:       "cached hub unreachable past the give-up time: DPS again",
			cache:      fp,
			regs:       []regStep{{hub: hubB}},
			conns:      []connStep{{timeout: true}, {hold: true}},
			stopAfter:  1,
			wantPhases: []Phase{PhaseAssigned, PhaseProvisioning, PhaseAssigned, PhaseConnected},
			wantRegs:   1, wantHubs: []string{hubA, hubB}, wantCache: hubB,
		},
		{
			name:       "session ends for another reason: reconnect without DPS",
			cache:      fp,
			conns:      []connStep{{end: nil}, {hold: true}},
			stopAfter:  2,
			wantPhases: []Phase{PhaseAssigned, PhaseConnected, PhaseBackingOff, PhaseAssigned, PhaseConnected},
			wantRegs:   0, wantHubs: []string{hubA, hubA}, wantCache: hubA,
			wantSleeps: []time.Duration{5 * time.Second},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, bubbled(func(t *testing.T) {
			h := newHarness(t, tt.regs, tt.conns)
			if tt.cache != "" {
				h.saveCache(hubA, tt.cache)
			}
			if tt.stopAfter > 0 {
				h.stop = stopOnConnected(tt.stopAfter)
			}
			h.run()
			if tt.wantPhases != nil {
				if got := h.phases(); !slices.Equal(got, tt.wantPhases) {
					t.Errorf("phases = %v; want %v", got, tt.wantPhases)
				}
			}
			if len(h.regCfgs) != tt.wantRegs {
				t.Errorf("DPS registrations = %d; want %d", len(h.regCfgs), tt.wantRegs)
			}
			for _, c := range h.regCfgs {
				if c.RegistrationID != regID || c.IDScope != "0ne00000A0A" || c.TLS == nil || c.Endpoint != "dps.example:8883" {
					t.Errorf("dps.Config = %+v; want registration id, scope, endpoint and TLS filled in", c)
				}
			}
			var hubs []string
			for _, a := range h.connected {
				hubs = append(hubs, a.Hub)
				if a.DeviceID != regID {
					t.Errorf("connected as %q; want %q", a.DeviceID, regID)
				}
			}
			if !slices.Equal(hubs, tt.wantHubs) {
				t.Errorf("connected to %v; want %v", hubs, tt.wantHubs)
			}
			if !slices.Equal(h.sleeps, tt.wantSleeps) {
				t.Errorf("sleeps = %v; want %v", h.sleeps, tt.wantSleeps)
			}
			if got := h.cachedHub(); got != tt.wantCache {
				t.Errorf("cached hub = %q; want %q", got, tt.wantCache)
			}
			for i, s := range h.sessions {
				select {
				case <-s.closed:
				default:
					t.Errorf("session %d not closed", i)
				}
			}
		}))
	}
}

// bubbled runs a parallel subtest in a testing/synctest bubble.
func bubbled(f func(t *testing.T)) func(t *testing.T) {
	return func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, f)
	}
}

func TestRunDisabledStatusAndLog(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, []regStep{{err: dpsErr(dps.ErrDisabled, 0)}}, nil)
		var refused Status
		h.stop = func(s Status) bool {
			if s.Phase == PhaseRefusedDisabled {
				refused = s
				return true
			}
			return false
		}
		h.run()
		if !errors.Is(refused.Err, dps.ErrDisabled) {
			t.Errorf("status err = %v; want ErrDisabled", refused.Err)
		}
		if refused.Advice != AdviceDisabled {
			t.Errorf("advice = %q; want %q", refused.Advice, AdviceDisabled)
		}
		if want := t0.Add(7*time.Minute + 30*time.Second); !refused.NextAttempt.Equal(want) {
			t.Errorf("next attempt = %v; want %v", refused.NextAttempt, want)
		}
		line := refused.String()
		for _, want := range []string{"refused-disabled", "enrollment disabled: re-enable it or delete the disabling individual enrollment", "next attempt 2026-06-01T12:07:30Z"} {
			if !strings.Contains(line, want) {
				t.Errorf("Status.String() = %q; want it to contain %q", line, want)
			}
		}
		if logs := h.logs.String(); !strings.Contains(logs, "level=ERROR") || !strings.Contains(logs, "enrollment disabled: re-enable it or delete the disabling individual enrollment") {
			t.Errorf("log lacks an error line with the operator advice:\n%s", logs)
		}
	})
}

func TestRunStatusAfterRecovery(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, []regStep{{err: dpsErr(dps.ErrTransient, 0)}, {hub: hubA}}, []connStep{{hold: true}})
		h.stop = stopOnConnected(1)
		h.run()
		s := h.p.Status()
		if s.Phase != PhaseConnected || s.Hub != hubA || s.DeviceID != regID || s.FromCache {
			t.Errorf("status = %+v; want connected to %s as %s, not from cache", s, hubA, regID)
		}
		if !s.LastProvisioned.Equal(t0.Add(5 * time.Second)) {
			t.Errorf("last provisioned = %v; want %v", s.LastProvisioned, t0.Add(5*time.Second))
		}
		if !strings.Contains(s.LastError, "transient") || !s.NextAttempt.IsZero() {
			t.Errorf("status = %+v; want the last error kept and no next attempt", s)
		}
		if got, want := s.String(), "connected to "+hubA+" as "+regID; got != want {
			t.Errorf("String() = %q; want %q", got, want)
		}
	})
}

// A refused device must wait, and cancelling the context then ends Run at
// once: in the bubble, without the clock moving.
func TestRunCancelDuringLongWait(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		p, err := New(Config{
			Identity: &certs.Identity{RegistrationID: regID, FingerprintSHA256: fp},
			TLS:      &tls.Config{},
			DPS:      dps.Config{IDScope: "0ne00000A0A"},
			StateDir: t.TempDir(),
			Register: func(context.Context, dps.Config) (*dps.Result, error) {
				return nil, dpsErr(dps.ErrDisabled, 0)
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			done <- p.Run(ctx, ConnectorFunc(func(context.Context, cache.Assignment) (Session, error) {
				t.Error("connected although DPS refused")
				return nil, errors.New("unreachable")
			}))
		}()
		synctest.Wait() // Run is asleep
		start := time.Now()
		if d := p.Status().NextAttempt.Sub(start); d < 5*time.Minute || d > 10*time.Minute {
			t.Errorf("first wait after disabled = %v; want 5..10 min (default reprovisionRetry)", d)
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v; want context.Canceled", err)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("Run returned %v after the cancel; want at once", d)
		}
	})
}

func TestAssignment(t *testing.T) {
	t.Parallel()
	t.Run("force ignores a valid cache", bubbled(func(t *testing.T) {
		h := newHarness(t, []regStep{{hub: hubB}}, nil)
		h.saveCache(hubA, fp)
		a, err := h.p.Assignment(context.Background(), true)
		if err != nil || a.Hub != hubB || a.CertFingerprintSHA256 != fp || !a.AssignedAt.Equal(t0) {
			t.Errorf("Assignment(force) = %+v, %v; want %s bound to %s at %v", a, err, hubB, fp, t0)
		}
		if got := h.cachedHub(); got != hubB {
			t.Errorf("cached hub = %q; want %q", got, hubB)
		}
	}))
	t.Run("corrupt cache", bubbled(func(t *testing.T) {
		h := newHarness(t, []regStep{{hub: hubB}}, nil)
		if err := os.WriteFile(cache.Path(h.dir), []byte("{garbage"), 0o600); err != nil {
			t.Fatal(err)
		}
		if a, err := h.p.Assignment(context.Background(), false); err != nil || a.Hub != hubB {
			t.Errorf("Assignment = %+v, %v; want %s from DPS", a, err, hubB)
		}
	}))
	t.Run("DPS error returned typed", bubbled(func(t *testing.T) {
		h := newHarness(t, []regStep{{err: dpsErr(dps.ErrDisabled, 0)}}, nil)
		if _, err := h.p.Assignment(context.Background(), false); !errors.Is(err, dps.ErrDisabled) {
			t.Errorf("Assignment = %v; want ErrDisabled", err)
		}
		if s := h.p.Status(); s.Advice != AdviceDisabled || !errors.Is(s.Err, dps.ErrDisabled) {
			t.Errorf("status = %+v; want the disabled advice", s)
		}
	}))
	t.Run("cache save failure does not block", bubbled(func(t *testing.T) {
		h := newHarness(t, []regStep{{hub: hubA}, {hub: hubA}}, nil)
		// A state "directory" that is a file: every save fails.
		blocker := filepath.Join(h.dir, "file")
		if err := os.WriteFile(blocker, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		h.p.cfg.StateDir = blocker
		if a, err := h.p.Assignment(context.Background(), false); err != nil || a.Hub != hubA {
			t.Errorf("Assignment = %+v, %v; want %s despite the failed save", a, err, hubA)
		}
		if out, err := h.p.Provision(context.Background()); !errors.Is(err, ErrCacheSave) || out == nil || out.Assignment.Hub != hubA {
			t.Errorf("Provision = %+v, %v; want the assignment and ErrCacheSave", out, err)
		}
	}))
	t.Run("invalidate", bubbled(func(t *testing.T) {
		h := newHarness(t, nil, nil)
		h.saveCache(hubA, fp)
		if err := h.p.Invalidate(); err != nil {
			t.Fatal(err)
		}
		if got := h.cachedHub(); got != "" {
			t.Errorf("cache after Invalidate = %q; want none", got)
		}
		if err := h.p.Invalidate(); err != nil {
			t.Errorf("second Invalidate = %v; want nil", err)
		}
	}))
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	id := &certs.Identity{RegistrationID: regID, FingerprintSHA256: fp}
	ok := Config{Identity: id, TLS: &tls.Config{}, DPS: dps.Config{IDScope: "s"}, StateDir: "/x"}
	tests := []struct {
		name string
		mod  func(*Config)
	}{
		{"no identity", func(c *Config) { c.Identity = nil }},
		{"empty identity", func(c *Config) { c.Identity = &certs.Identity{} }},
		{"no TLS", func(c *Config) { c.TLS = nil }},
		{"no scope", func(c *Config) { c.DPS.IDScope = "" }},
		{"no state dir", func(c *Config) { c.StateDir = "" }},
	}
	for _, tt := range tests {
		c := ok
		tt.mod(&c)
		if _, err := New(c); err == nil {
			t.Errorf("New(%s) = nil error; want one", tt.name)
		}
	}
	if _, err := New(ok); err != nil {
		t.Errorf("New(valid) = %v", err)
	}
}

func TestSchedules(t *testing.T) {
	t.Parallel()
	p, err := New(Config{
		Identity: &certs.Identity{RegistrationID: regID, FingerprintSHA256: fp},
		TLS:      &tls.Config{}, DPS: dps.Config{IDScope: "s"}, StateDir: "/x",
		RetryMin: 5 * time.Minute, RetryMax: 60 * time.Minute,
		BackoffBase: 10 * time.Second, BackoffMax: 10 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	var r float64
	p.cfg.Rand = func() float64 { return r }
	longs := []struct {
		n    int
		rand float64
		want time.Duration
	}{
		{0, 0, 5 * time.Minute},
		{0, 0.999999, 10 * time.Minute},
		{1, 0, 10 * time.Minute},
		{2, 0, 20 * time.Minute},
		{3, 0, 30 * time.Minute},
		{3, 0.999999, 60 * time.Minute},
		{50, 0, 30 * time.Minute},
		{50, 0.999999, 60 * time.Minute},
	}
	for _, tt := range longs {
		r = tt.rand
		if got := p.long(tt.n); got.Round(time.Second) != tt.want {
			t.Errorf("long(%d) with rand %v = %v; want %v", tt.n, tt.rand, got, tt.want)
		}
	}
	backoffs := []struct {
		n     int
		rand  float64
		floor time.Duration
		want  time.Duration
	}{
		{0, 0, 0, 0},
		{0, 0.5, 0, 5 * time.Second},
		{3, 0.5, 0, 40 * time.Second},
		{30, 0.5, 0, 5 * time.Minute},
		{0, 0.1, 30 * time.Second, 30 * time.Second},
		{0, 0.1, time.Hour, 10 * time.Minute}, // retry-after capped
	}
	for _, tt := range backoffs {
		r = tt.rand
		if got := p.backoff(tt.n, tt.floor); got != tt.want {
			t.Errorf("backoff(%d, %v) with rand %v = %v; want %v", tt.n, tt.floor, tt.rand, got, tt.want)
		}
	}
}

func TestExplain(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want string
	}{
		{nil, ""},
		{fmt.Errorf("dps register x: %w", dpsErr(dps.ErrDisabled, 0)), AdviceDisabled},
		{fmt.Errorf("dps register x: %w", dpsErr(dps.ErrUnauthorized, 0)), AdviceUnauthorized},
		{fmt.Errorf("%w: %w", ErrHubRefused, notAuthorized()), AdviceHubRefused},
		{notAuthorized(), "registering with DPS again"},
		{dpsErr(dps.ErrNotFound, 0), "ID scope"},
		{dpsErr(dps.ErrFailed, 0), AdviceFailed},
		{dpsErr(dps.ErrBadRequest, 0), "credentialPolicyName"},
		{dpsErr(dps.ErrTransient, 0), ""},
	}
	for _, tt := range tests {
		got := Explain(tt.err)
		if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
			t.Errorf("Explain(%v) = %q; want %q", tt.err, got, tt.want)
		}
	}
}
