package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/reefer/tracker/deploy/emulator"
	"github.com/reefer/tracker/deploy/fleetctl/cli"
	"github.com/reefer/tracker/deploy/fleetctl/fleet"
	"github.com/reefer/tracker/firmware/lifecycle"
	"github.com/reefer/tracker/provisioning/certs"
	"github.com/reefer/tracker/provisioning/dps"
	"github.com/reefer/tracker/provisioning/iothub"
)

// PortCallOptions shape a port call: Containers trackers leave service
// (disenrolled in one bulk run) while as many arrive (re-enrolled in one
// bulk run), all of them running the tracker's lifecycle.
type PortCallOptions struct {
	// Containers on each side (default 500).
	Containers int
	// RetryMin and RetryMax are the trackers' reprovisionRetry (default
	// 5 s and 30 s: the production 5-60 min scaled down so a run takes a
	// minute or two).
	RetryMin, RetryMax time.Duration
	// RegistrationsPerMinute is the emulator's DPS limit (default: the
	// production 1,000/min scaled by 5 min / RetryMin, the factor the
	// retry schedule was shrunk by, so the refused trackers' background
	// load stays the same share of the limit).
	RegistrationsPerMinute int
	// Interval between telemetry messages of a connected tracker
	// (default 5 s).
	Interval time.Duration
	// Timeout bounds the wait for the fleet to settle, before and after
	// the bulk operations (default 5 min each).
	Timeout time.Duration
	// TempDir holds the emulator's state and the trackers' caches
	// (default /dev/shm when there is one: the bench measures the fleet
	// and the operator's calls, not a shared machine's disk).
	TempDir string
	// Progress receives a line every second while waiting (nil: none).
	Progress io.Writer
	Logger   *slog.Logger // emulator log (default: discard)
}

// PortCallReport is what a port call measured, from the moment both bulk
// operations started (T0).
type PortCallReport struct {
	Containers         int           `json:"containers"`
	RetryMin, RetryMax time.Duration `json:"-"`
	RatePerMinute      int           `json:"registrationsPerMinute"`
	// Setup is how long the fleet took to settle before T0: the outgoing
	// trackers sending, the incoming ones refused.
	Setup time.Duration `json:"setupNs"`
	// DisenrollOp and ReenrollOp are the operator's bulk runs (DPS bulk
	// operations of 10, and for disenrolling the hub identity deletes).
	DisenrollOp, ReenrollOp time.Duration
	DisenrollOps            int `json:"dpsBulkOperations"`
	// Stopped: per disenrolled tracker, from T0 until DPS refused it
	// (after its hub identity was deleted and it stopped sending).
	Stopped Latency `json:"stopped"`
	// LastMessage: per disenrolled tracker, from T0 to its last message
	// the hub acknowledged (0 when none after T0).
	LastMessage Latency `json:"lastMessage"`
	// Sending: per re-enrolled tracker, from T0 until its first message
	// after re-enrollment was acknowledged by the hub.
	Sending Latency `json:"sending"`
	// Assigned and Connected are the steps on the way there: DPS assigned
	// it, the hub accepted its connection.
	Assigned, Connected Latency
	// DPSConns, HubConns: connections the re-enrolled trackers opened
	// after T0 (each retry inside the DPS and hub clients is one), and
	// HubTimeouts of those hub connects that timed out.
	DPSConns, HubConns, HubTimeouts int
	// LateMessages counts messages acknowledged from disenrolled trackers
	// after DPS refused them (must be 0).
	LateMessages int `json:"lateMessages"`
	Wall         time.Duration
}

// Latency is a distribution over devices.
type Latency struct {
	N                  int
	P50, P90, P99, Max time.Duration
}

func latency(ds []time.Duration) Latency {
	slices.Sort(ds)
	return Latency{N: len(ds), P50: percentile(ds, 50), P90: percentile(ds, 90), P99: percentile(ds, 99), Max: percentile(ds, 100)}
}

// tracker is one simulated tracker: the firmware's lifecycle (DPS, hub,
// refusal-aware retries) with a telemetry loop while connected.
type tracker struct {
	id string
	mu sync.Mutex
	s  trackerState
}

// trackerState is what the bench watches of a tracker.
type trackerState struct {
	phase     lifecycle.Phase
	lastAck   time.Time // last message the hub acknowledged
	firstAck  time.Time // first acknowledged message after mark
	refusedAt time.Time // first refusal after mark
	mark      time.Time // T0, zero before
	lateAcks  int       // acknowledged after refusedAt
	// assignedAt, connectedAt: DPS assigned it, the hub accepted it (first
	// time after mark).
	assignedAt, connectedAt time.Time
	// dpsConns and hubConns count the connections made after mark: DPS
	// registrations (one per attempt inside dps.Register) and hub
	// connects (one per attempt inside iothub's connect loop);
	// hubTimeouts those of the hub connects that timed out.
	dpsConns, hubConns, hubTimeouts int
	// wasRefused: DPS refused it at least once (its phase flips back to
	// provisioning at every retry).
	wasRefused bool
}

func (t *tracker) onStatus(st lifecycle.Status) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := &t.s
	s.phase = st.Phase
	s.wasRefused = s.wasRefused || refused(st.Phase)
	if !s.mark.IsZero() {
		now := time.Now()
		if st.Phase == lifecycle.PhaseAssigned && s.assignedAt.IsZero() {
			s.assignedAt = now
		}
		if st.Phase == lifecycle.PhaseConnected && s.connectedAt.IsZero() {
			s.connectedAt = now
		}
	}
	if !s.mark.IsZero() && s.refusedAt.IsZero() && refused(st.Phase) {
		s.refusedAt = time.Now()
	}
}

func (t *tracker) acked(at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := &t.s
	s.lastAck = at
	if !s.mark.IsZero() && s.firstAck.IsZero() {
		s.firstAck = at
	}
	if !s.refusedAt.IsZero() {
		s.lateAcks++
	}
}

// count adds to one of the counters, after mark only.
func (t *tracker) count(f func(s *trackerState)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.s.mark.IsZero() {
		f(&t.s)
	}
}

func (t *tracker) setMark(t0 time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.s.mark = t0
}

func (t *tracker) snapshot() trackerState {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.s
}

func refused(p lifecycle.Phase) bool {
	return p == lifecycle.PhaseRefusedDisabled || p == lifecycle.PhaseRefusedUnauthorized
}

// PortCall runs a port call against an in-process emulator: 2×Containers
// trackers of f (the first half outgoing, enrolled; the second half
// incoming, disenrolled beforehand), then at T0 fleetctl's bulk disenroll of
// the outgoing half and bulk re-enroll of the incoming half, at once, and
// measures until every outgoing tracker is refused and every incoming one
// sends again.
func PortCall(ctx context.Context, f *Fleet, o PortCallOptions) (*PortCallReport, error) {
	if o.Containers <= 0 {
		o.Containers = 500
	}
	if len(f.Certs) < 2*o.Containers {
		return nil, fmt.Errorf("a port call of %d containers needs %d device certificates, the fleet has %d", o.Containers, 2*o.Containers, len(f.Certs))
	}
	if o.RetryMin <= 0 {
		o.RetryMin = 5 * time.Second
	}
	if o.RetryMax <= 0 {
		o.RetryMax = 30 * time.Second
	}
	o.RetryMax = max(o.RetryMax, o.RetryMin)
	if o.RegistrationsPerMinute <= 0 {
		o.RegistrationsPerMinute = int(1000 * (5 * time.Minute) / o.RetryMin)
	}
	if o.Interval <= 0 {
		o.Interval = 5 * time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	n := 2 * o.Containers
	if lim, need := fdLimit(), FDsNeeded(n, true, false); lim != 0 && lim < need {
		return nil, fmt.Errorf("%d trackers need about %d file descriptors in one process, limit is %d: raise ulimit -Hn or use fewer containers", n, need, lim)
	}
	if o.TempDir == "" {
		if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
			o.TempDir = "/dev/shm"
		}
	}
	dir, err := os.MkdirTemp(o.TempDir, "portcall-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	e, err := startEmulator(ctx, emulator.Config{DataDir: filepath.Join(dir, "azemu"), MQTTAddr: "127.0.0.1:0", HTTPSAddr: "127.0.0.1:0",
		NoSync: true, Logger: o.Logger, RegistrationsPerMinute: o.RegistrationsPerMinute, RetryAfter: -1})
	if err != nil {
		return nil, err
	}
	defer e.Close()
	if _, err := e.EnrollGroup("port-fleet", f.Root.Cert, nil); err != nil {
		return nil, fmt.Errorf("enroll group: %w", err)
	}
	// The operator's side is fleetctl's, as `fleetctl --emulator` runs it.
	op, err := cli.EmulatorFleet(filepath.Join(dir, "azemu", "emulator.json"))
	if err != nil {
		return nil, err
	}
	op.Parallel = 8
	outgoing, incoming := f.IDs[:o.Containers], f.IDs[o.Containers:n]
	// The arriving containers were taken out of service on their last
	// trip: disenrolled, no hub identity.
	if _, _, err := op.BulkDisenroll(ctx, incoming); err != nil {
		return nil, fmt.Errorf("disenroll the incoming containers: %w", err)
	}

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	trackers := make([]*tracker, n)
	var wg sync.WaitGroup
	for i := range n {
		t := &tracker{id: f.IDs[i]}
		trackers[i] = t
		p, conn, err := newTracker(e, f.Certs[i], filepath.Join(dir, "trackers", t.id), o, t)
		if err != nil {
			return nil, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = p.Run(runCtx, conn)
		}()
	}
	defer func() { stop(); wg.Wait() }()
	out, in := trackers[:o.Containers], trackers[o.Containers:]

	start := time.Now()
	say := func(format string, args ...any) {
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "%6.1fs  "+format+"\n", append([]any{time.Since(start).Seconds()}, args...)...)
		}
	}
	count := func(ts []*tracker, ok func(trackerState) bool) int {
		c := 0
		for _, t := range ts {
			if ok(t.snapshot()) {
				c++
			}
		}
		return c
	}
	sending := func(t trackerState) bool { return !t.lastAck.IsZero() && t.phase == lifecycle.PhaseConnected }
	isRefused := func(t trackerState) bool { return t.wasRefused }
	if err := waitUntil(ctx, o.Timeout, func() (bool, string) {
		s, r := count(out, sending), count(in, isRefused)
		return s == len(out) && r == len(in), fmt.Sprintf("before the port call: outgoing sending %d/%d, incoming refused %d/%d", s, len(out), r, len(in))
	}, say); err != nil {
		return nil, err
	}
	rep := &PortCallReport{Containers: o.Containers, RetryMin: o.RetryMin, RetryMax: o.RetryMax, RatePerMinute: o.RegistrationsPerMinute,
		Setup: time.Since(start), DisenrollOps: (o.Containers + 9) / 10 * 2}

	t0 := time.Now()
	for _, t := range trackers {
		t.setMark(t0)
	}
	say("T0: bulk disenroll %d outgoing and bulk re-enroll %d incoming, at once", len(outgoing), len(incoming))
	var opWG sync.WaitGroup
	var disErr, reErr error
	opWG.Add(2)
	go func() {
		defer opWG.Done()
		var d, h fleet.Summary
		d, h, disErr = op.BulkDisenroll(ctx, outgoing)
		disErr = errors.Join(disErr, d.Err(), h.Err())
		rep.DisenrollOp = time.Since(t0)
	}()
	go func() {
		defer opWG.Done()
		var s fleet.Summary
		s, reErr = op.BulkReenroll(ctx, incoming)
		reErr = errors.Join(reErr, s.Err())
		rep.ReenrollOp = time.Since(t0)
	}()
	opWG.Wait()
	if err := errors.Join(disErr, reErr); err != nil {
		return nil, err
	}
	say("bulk disenroll done in %s, bulk re-enroll in %s", rep.DisenrollOp.Round(time.Millisecond), rep.ReenrollOp.Round(time.Millisecond))
	resumed := func(t trackerState) bool { return !t.firstAck.IsZero() }
	stopped := func(t trackerState) bool { return !t.refusedAt.IsZero() }
	if err := waitUntil(ctx, o.Timeout, func() (bool, string) {
		r, s := count(in, resumed), count(out, stopped)
		return r == len(in) && s == len(out), fmt.Sprintf("re-enrolled sending %d/%d, disenrolled stopped %d/%d", r, len(in), s, len(out))
	}, say); err != nil {
		return nil, err
	}
	rep.Wall = time.Since(t0)
	var st, lm, se []time.Duration
	for _, t := range out {
		s := t.snapshot()
		st = append(st, s.refusedAt.Sub(t0))
		if s.lastAck.After(t0) {
			lm = append(lm, s.lastAck.Sub(t0))
		} else {
			lm = append(lm, 0)
		}
		rep.LateMessages += s.lateAcks
	}
	var as, co []time.Duration
	for _, t := range in {
		s := t.snapshot()
		rep.DPSConns += s.dpsConns
		rep.HubConns += s.hubConns
		rep.HubTimeouts += s.hubTimeouts
		se = append(se, s.firstAck.Sub(t0))
		as = append(as, s.assignedAt.Sub(t0))
		co = append(co, s.connectedAt.Sub(t0))
	}
	rep.Stopped, rep.LastMessage, rep.Sending = latency(st), latency(lm), latency(se)
	rep.Assigned, rep.Connected = latency(as), latency(co)
	return rep, nil
}

// newTracker wires one simulated tracker: lifecycle.Provisioner with the
// port call's retry schedule and a connector that starts the telemetry
// loop on every connected client.
func newTracker(e *emulator.Emulator, cert tls.Certificate, state string, o PortCallOptions, t *tracker) (*lifecycle.Provisioner, lifecycle.Connector, error) {
	sum := sha256.Sum256(cert.Leaf.Raw)
	id := &certs.Identity{Cert: cert, Leaf: cert.Leaf, RegistrationID: t.id, FingerprintSHA256: hex.EncodeToString(sum[:])}
	tlsCfg := &tls.Config{RootCAs: e.CACertPool(), Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	p, err := lifecycle.New(lifecycle.Config{Identity: id, TLS: tlsCfg, StateDir: state,
		DPS:      dpsConfig(e, t),
		RetryMin: o.RetryMin, RetryMax: o.RetryMax, BackoffBase: time.Second, BackoffMax: o.RetryMax,
		OnStatus: t.onStatus})
	if err != nil {
		return nil, nil, err
	}
	onState := func(sc iothub.StateChange) {
		t.count(func(s *trackerState) {
			switch {
			case sc.State == iothub.StateConnecting:
				s.hubConns++
			case sc.Err != nil && (errors.Is(sc.Err, context.DeadlineExceeded) || errors.Is(sc.Err, os.ErrDeadlineExceeded)):
				s.hubTimeouts++
			}
		})
	}
	conn := &lifecycle.IoTHub{Base: iothub.Config{TLS: tlsCfg, OnState: onState}, OnConnected: func(c *iothub.Client) {
		go sendLoop(c, o.Interval, t)
	}}
	return p, conn, nil
}

// sendLoop sends a message every interval until the client's session
// ends, recording each acknowledged one.
func sendLoop(c *iothub.Client, every time.Duration, t *tracker) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for seq := 0; ; seq++ {
		ctx, cancel := context.WithTimeout(context.Background(), every)
		err := c.Send(ctx, iothub.Message{Body: fmt.Appendf(nil, `{"seq":%d}`, seq), ContentType: "application/json", ContentEncoding: "utf-8"})
		cancel()
		if err == nil {
			t.acked(time.Now())
		}
		select {
		case <-tick.C:
		case <-c.Done():
			return
		}
	}
}

// waitUntil polls done every second, reporting its status line, until it
// holds, ctx ends or timeout passes.
func waitUntil(ctx context.Context, timeout time.Duration, done func() (bool, string), say func(string, ...any)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, line := done()
		say("%s", line)
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not settled within %s: %s", timeout, line)
		}
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func printPortCall(w io.Writer, r *PortCallReport) {
	ms := func(d time.Duration) string { return d.Round(10 * time.Millisecond).String() }
	lat := func(l Latency) string {
		return fmt.Sprintf("p50 %s p90 %s p99 %s max %s (n=%d)", ms(l.P50), ms(l.P90), ms(l.P99), ms(l.Max), l.N)
	}
	fmt.Fprintf(w, "port call: %d containers out, %d in; trackers' reprovisionRetry %s..%s; DPS limit %d registrations/min\n",
		r.Containers, r.Containers, r.RetryMin, r.RetryMax, r.RatePerMinute)
	fmt.Fprintf(w, "  fleet settled in %s (outgoing sending, incoming refused)\n", ms(r.Setup))
	fmt.Fprintf(w, "  bulk disenroll (DPS bulk operations of 10 + hub identity deletes) %s; bulk re-enroll %s; %d DPS bulk operations\n",
		r.DisenrollOp.Round(time.Millisecond), r.ReenrollOp.Round(time.Millisecond), r.DisenrollOps)
	fmt.Fprintf(w, "  re-enrolled trackers assigned by DPS: %s\n", lat(r.Assigned))
	fmt.Fprintf(w, "      their hub connection accepted:    %s\n", lat(r.Connected))
	fmt.Fprintf(w, "      sending again (first ack):        %s\n", lat(r.Sending))
	fmt.Fprintf(w, "      connections they opened after T0: DPS %d, hub %d (%d hub connects timed out)\n", r.DPSConns, r.HubConns, r.HubTimeouts)
	fmt.Fprintf(w, "  disenrolled trackers refused by DPS: %s\n", lat(r.Stopped))
	fmt.Fprintf(w, "  their last acknowledged message:     %s\n", lat(r.LastMessage))
	fmt.Fprintf(w, "  messages acknowledged after refusal: %d\n", r.LateMessages)
	fmt.Fprintf(w, "  settled %s after T0\n", ms(r.Wall))
}

// dpsConfig is the DPS client configuration of the emulator's DPS,
// counting t's connections; the lifecycle fills in the registration id and
// TLS.
func dpsConfig(e *emulator.Emulator, t *tracker) dps.Config {
	return dps.Config{Endpoint: e.DPSEndpoint(), IDScope: e.IDScope(), NewClient: func(o *mqtt.ClientOptions) mqtt.Client {
		t.count(func(s *trackerState) { s.dpsConns++ })
		return mqtt.NewClient(o)
	}}
}
