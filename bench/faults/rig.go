package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/reefer/tracker/deploy/emulator/pki"
	"github.com/reefer/tracker/deploy/fleetctl/cli"
	"github.com/reefer/tracker/deploy/fleetctl/fleet"
	"github.com/reefer/tracker/drivers"
	"github.com/reefer/tracker/firmware/queue"
	"github.com/reefer/tracker/firmware/telemetry"
)

// rig is one emulator, one enrolled device and its tracker, and the
// ledger of what the hub received.
type rig struct {
	o     options
	dir   string // this scenario's directory
	id    string
	state string // the tracker's state directory
	cfg   string // tracker.json

	emu     *exec.Cmd
	emuDone chan struct{}
	hub     string
	fleet   *fleet.Fleet
	info    string // emulator.json

	tr     *exec.Cmd
	trDone chan struct{}
	starts int

	led *ledger
	mon context.CancelFunc
	wg  sync.WaitGroup
}

// newRig starts the emulator, enrolls a group with an initial twin
// telemetryDelay of delay seconds and writes the tracker's files.
func newRig(ctx context.Context, o options, name, stateDir string, delay int) (*rig, error) {
	r := &rig{o: o, dir: filepath.Join(o.work, name), id: "reefer-faults-001", led: newLedger()}
	r.state = stateDir
	if r.state == "" {
		r.state = filepath.Join(r.dir, "state")
	}
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return nil, err
	}
	if err := r.startEmu(ctx); err != nil {
		return nil, err
	}
	root, err := pki.NewRootCA("Faults Root CA", pki.Options{})
	if err != nil {
		return nil, err
	}
	inter, err := root.NewIntermediateCA("Faults Intermediate CA", pki.Options{})
	if err != nil {
		return nil, err
	}
	leaf, err := inter.NewClient(r.id, pki.Options{})
	if err != nil {
		return nil, err
	}
	certFile, keyFile := filepath.Join(r.dir, r.id+"-chain.pem"), filepath.Join(r.dir, r.id+".key")
	if err := leaf.WriteFiles(certFile, keyFile); err != nil {
		return nil, err
	}
	// The operator's side: the root CA uploaded with proof of possession.
	if _, err := r.fleet.DPS.UploadCA(ctx, "faults-root", root.PEM(), false); err != nil {
		return nil, err
	}
	code, err := r.fleet.DPS.VerificationCode(ctx, "faults-root")
	if err != nil {
		return nil, err
	}
	proof, err := root.NewVerification(code.Properties.VerificationCode)
	if err != nil {
		return nil, err
	}
	if _, err := r.fleet.DPS.VerifyCA(ctx, "faults-root", proof.PEM()); err != nil {
		return nil, err
	}
	if _, err := r.fleet.CreateGroup(ctx, fleet.GroupSpec{ID: "faults", CAName: "faults-root", Common: fleet.Common{Hubs: []string{r.hub},
		InitialDesired: map[string]any{"telemetryDelay": delay}}}); err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	var info struct {
		DPS struct {
			IDScope, DeviceEndpoint string
		} `json:"dps"`
		CACertPath string `json:"caCertPath"`
	}
	b, err := os.ReadFile(r.info)
	if err == nil {
		err = json.Unmarshal(b, &info)
	}
	if err != nil {
		return nil, err
	}
	cfg, err := json.MarshalIndent(map[string]any{
		"version": 1, "idScope": info.DPS.IDScope, "dpsEndpoint": info.DPS.DeviceEndpoint,
		"certFile": certFile, "keyFile": keyFile, "caFile": info.CACertPath, "stateDir": r.state,
		"sensors":        map[string]any{"env": map[string]any{"mode": "simulated"}, "gps": map[string]any{"mode": "simulated"}},
		"telemetryDelay": delay, "logLevel": "info",
	}, "", "  ")
	if err != nil {
		return nil, err
	}
	r.cfg = filepath.Join(r.dir, "tracker.json")
	if err := os.WriteFile(r.cfg, cfg, 0o644); err != nil {
		return nil, err
	}
	r.monitor(ctx)
	return r, nil
}

// startEmu starts azemu on the scenario's data directory (the same ports
// on every start after the first) and waits until it serves.
func (r *rig) startEmu(ctx context.Context) error {
	data := filepath.Join(r.dir, "azemu")
	cmd := exec.Command(r.o.azemu, "--data", data, "--mqtt", "127.0.0.1:0", "--https", "127.0.0.1:0", "--log-level", "info")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(r.dir, "azemu.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start azemu: %w", err)
	}
	ready := make(chan struct{})
	go func() {
		defer logf.Close()
		sc := bufio.NewScanner(stderr)
		var once sync.Once
		for sc.Scan() {
			fmt.Fprintln(logf, sc.Text())
			if strings.Contains(sc.Text(), "msg=ready") {
				once.Do(func() { close(ready) })
			}
		}
	}()
	r.emu, r.emuDone = cmd, make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); close(done) }(r.emuDone)
	select {
	case <-ready:
	case <-r.emuDone:
		return errors.New("azemu exited at start (see azemu.log)")
	case <-time.After(20 * time.Second):
		return errors.New("azemu not ready within 20 s")
	case <-ctx.Done():
		return ctx.Err()
	}
	if r.fleet == nil {
		r.info = filepath.Join(data, "emulator.json")
		f, err := cli.EmulatorFleet(r.info)
		if err != nil {
			return err
		}
		r.fleet, r.hub = f, f.Hub.HostName()
	}
	return nil
}

// stopEmu stops the emulator (SIGTERM: it flushes its state).
func (r *rig) stopEmu() {
	if r.emu == nil {
		return
	}
	r.emu.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.emuDone:
	case <-time.After(10 * time.Second):
		r.emu.Process.Kill()
		<-r.emuDone
	}
	r.emu = nil
}

// monitor keeps a telemetry stream open, reconnecting from the last
// message seen whenever the emulator went away.
func (r *rig) monitor(ctx context.Context) {
	mctx, cancel := context.WithCancel(ctx)
	r.mon = cancel
	r.wg.Go(func() {
		for mctx.Err() == nil {
			_ = r.fleet.Hub.MonitorSince(mctx, r.id, r.led.last(), func(e eventMsg) bool {
				r.led.add(e)
				return true
			})
			select {
			case <-mctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
}

// startTracker runs `tracker run` with the rig's config; its log is kept.
func (r *rig) startTracker() error {
	r.starts++
	logf, err := os.OpenFile(filepath.Join(r.dir, "tracker.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "=== start %d at %s\n", r.starts, time.Now().UTC().Format(time.RFC3339Nano))
	cmd := exec.Command(r.o.tracker, "run", "--config", r.cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start tracker: %w", err)
	}
	r.tr, r.trDone = cmd, make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); logf.Close(); close(done) }(r.trDone)
	return nil
}

// stopTracker ends the tracker with sig (SIGKILL or SIGTERM) and waits.
func (r *rig) stopTracker(sig syscall.Signal) {
	if r.tr == nil {
		return
	}
	r.tr.Process.Signal(sig)
	select {
	case <-r.trDone:
	case <-time.After(30 * time.Second):
		r.tr.Process.Kill()
		<-r.trDone
	}
	r.tr = nil
}

func (r *rig) close() {
	r.stopTracker(syscall.SIGTERM)
	if r.mon != nil {
		r.mon()
	}
	r.wg.Wait()
	r.stopEmu()
}

// queueOptions are the tracker's queue bounds (config defaults).
var queueOptions = queue.Options{MaxCount: 100_000, MaxBytes: 64 << 20}

// topUp appends readings to the stopped tracker's queue until it holds n,
// as the tracker would have sampled them; it returns how many it added.
func (r *rig) topUp(n int) (int, error) {
	if err := os.MkdirAll(r.state, 0o700); err != nil {
		return 0, err
	}
	o := queueOptions
	o.NoSync = true // the tracker is stopped: nothing to lose to a power cut here
	q, err := queue.Open(filepath.Join(r.state, "queue.db"), o)
	if err != nil {
		return 0, err
	}
	defer q.Close()
	have, _ := q.Len()
	added := 0
	for ; have+added < n; added++ {
		_, err := q.Append(func(seq uint64) (queue.Message, error) {
			hum := 88.0
			m, err := telemetry.Build(r.id, telemetry.Sample{Seq: seq, Time: time.Now(),
				Env:       drivers.Env{TemperatureC: 4, PressureHPa: 1013, HumidityRH: &hum, Source: drivers.Simulated, Chip: "faults"},
				GPSSource: drivers.Simulated}, 30)
			if err != nil {
				return queue.Message{}, err
			}
			return queue.Message{ID: m.ID, Body: m.Body, Props: m.Properties, Created: m.CreatedAt}, nil
		})
		if err != nil {
			return added, err
		}
	}
	return added, nil
}

// waitDrained waits until every sequence number up to the tracker's last
// one has arrived: the queue is empty once the tracker stopped cleanly.
func (r *rig) waitFor(ctx context.Context, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// reported reads one reported property of the device.
func (r *rig) reported(ctx context.Context, name string) any {
	tw, err := r.fleet.Hub.GetTwin(ctx, r.id)
	if err != nil {
		return nil
	}
	var props map[string]any
	b, _ := json.Marshal(tw.Properties.Reported)
	json.Unmarshal(b, &props)
	return props[name]
}

// logCount counts the tracker log lines containing every part.
func (r *rig) logCount(parts ...string) int {
	b, _ := os.ReadFile(filepath.Join(r.dir, "tracker.log"))
	n := 0
	for _, l := range bytes.Split(b, []byte("\n")) {
		ok := true
		for _, p := range parts {
			ok = ok && bytes.Contains(l, []byte(p))
		}
		if ok {
			n++
		}
	}
	return n
}

// ledger is what the hub received, by sequence number.
type ledger struct {
	mu    sync.Mutex
	bySeq map[uint64][]rec
	at    []time.Time // enqueued times, in arrival order
	lastT time.Time
	bad   int // bodies that did not decode
}

type rec struct {
	id   string
	body string
	at   time.Time
}

func newLedger() *ledger { return &ledger{bySeq: map[uint64][]rec{}} }

func (l *ledger) add(e eventMsg) {
	var b struct {
		Seq uint64 `json:"seq"`
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if e.EnqueuedTime.After(l.lastT) {
		l.lastT = e.EnqueuedTime
	}
	if err := json.Unmarshal(e.Payload, &b); err != nil || b.Seq == 0 {
		l.bad++
		return
	}
	l.bySeq[b.Seq] = append(l.bySeq[b.Seq], rec{e.MessageID, string(e.Payload), e.EnqueuedTime})
	l.at = append(l.at, e.EnqueuedTime)
}

func (l *ledger) last() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastT
}

// count is how many messages arrived in all.
func (l *ledger) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.at)
}

// has reports whether every seq in 1..n arrived.
func (l *ledger) has(n uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for s := uint64(1); s <= n; s++ {
		if len(l.bySeq[s]) == 0 {
			return false
		}
	}
	return true
}

// firstAfter is the enqueued time of the first message enqueued at or
// after t.
func (l *ledger) firstAfter(t time.Time) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var best time.Time
	for _, a := range l.at {
		if !a.Before(t) && (best.IsZero() || a.Before(best)) {
			best = a
		}
	}
	return best, !best.IsZero()
}

// figures are a scenario's results.
type figures struct {
	generated  uint64 // highest seq received
	received   int    // messages, duplicates included
	unique     int
	lost       []uint64
	duplicates int
	mismatched int // duplicates whose id or body differ from the first copy
}

func (l *ledger) figures() figures {
	l.mu.Lock()
	defer l.mu.Unlock()
	var f figures
	for s, rs := range l.bySeq {
		f.generated = max(f.generated, s)
		f.received += len(rs)
		f.unique++
		for _, x := range rs[1:] {
			f.duplicates++
			if x.id != rs[0].id || x.body != rs[0].body {
				f.mismatched++
			}
		}
	}
	for s := uint64(1); s <= f.generated; s++ {
		if len(l.bySeq[s]) == 0 {
			f.lost = append(f.lost, s)
		}
	}
	sort.Slice(f.lost, func(i, j int) bool { return f.lost[i] < f.lost[j] })
	return f
}

func (f figures) String() string {
	lost := fmt.Sprint(len(f.lost))
	if n := len(f.lost); n > 0 {
		lost += fmt.Sprintf(" (seq %v%s)", f.lost[:min(n, 10)], map[bool]string{true: " ...", false: ""}[n > 10])
	}
	return fmt.Sprintf("generated %d, received %d (%d unique), lost %s, duplicated %d (%d with a different id or body)",
		f.generated, f.received, f.unique, lost, f.duplicates, f.mismatched)
}
