package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/reefer/tracker/deploy/emulator"
	"github.com/reefer/tracker/deploy/emulator/emulatortest"
	"github.com/reefer/tracker/deploy/emulator/pki"
	"github.com/reefer/tracker/deploy/emulator/store"
	"github.com/reefer/tracker/firmware/queue"
	"github.com/reefer/tracker/internal/waitfor"
)

func TestRunConfigErrors(t *testing.T) {
	t.Parallel()
	f := newProvisionFixture(t, "sensor-thl-001", "127.0.0.1:1")
	write := func(name, body string) string {
		p := filepath.Join(f.dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	badDelay := write("delay.json", `{"version": 1, "idScope": "0ne00000A0A", "certFile": "`+f.cert+`", "keyFile": "`+f.key+`", "telemetryDelay": 0}`)
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"missing file", []string{"--config", filepath.Join(f.dir, "nope.json")}, []string{"no config file"}},
		{"bad value", []string{"--config", badDelay}, []string{`key "telemetryDelay"`, "between 1 and 3600"}},
		{"bad flag value", []string{"--config", f.config, "--env-mode", "magic"}, []string{`key "sensors.env.mode"`, "flag --env-mode"}},
		{"relative cert", []string{"--config", f.config, "--cert", "chain.pem"}, []string{`key "certFile"`, "absolute path"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, _, stderr := runArgs(t, append([]string{"run"}, tt.args...)...)
			if code != exitConfig {
				t.Errorf("tracker run %q = %d; want %d (EX_CONFIG)\n%s", tt.args, code, exitConfig, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("tracker run %q: stderr %q lacks %q", tt.args, stderr, w)
				}
			}
		})
	}
}

func TestRunIdentityRefused(t *testing.T) {
	t.Parallel()
	f := newProvisionFixture(t, "sensor-thl-001", "127.0.0.1:1")
	if err := os.Chmod(f.key, 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runArgs(t, "run", "--config", f.config, "--env-mode", "simulated", "--gps-mode", "simulated")
	if code != exitConfig || !strings.Contains(stderr, "device identity refused") || !strings.Contains(stderr, f.key) {
		t.Errorf("tracker run with a world-readable key = %d, %q; want %d naming the key file", code, stderr, exitConfig)
	}
	if _, err := os.Stat(filepath.Join(f.state, "queue.db")); err == nil {
		t.Errorf("queue created although the identity was refused")
	}
}

// notifySocket is a systemd notify socket: it records every datagram.
type notifySocket struct {
	path string
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []string
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	dir, err := os.MkdirTemp("", "notify") // short: socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	n := &notifySocket{path: filepath.Join(dir, "sock")}
	n.conn, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.conn.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := n.conn.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, string(buf[:k]))
			n.mu.Unlock()
		}
	}()
	return n
}

func (n *notifySocket) seen(prefix string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, m := range n.msgs {
		if strings.HasPrefix(m, prefix) {
			return true
		}
	}
	return false
}

func (n *notifySocket) all() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.msgs...)
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	waitfor.Until(t, what, d, 20*time.Millisecond, cond)
}

// TestRunBinaryNotifyAndSIGTERM runs the real binary as systemd would
// (NOTIFY_SOCKET, WATCHDOG_USEC) against the emulator: READY=1, STATUS=,
// WATCHDOG=1 while healthy, telemetry flowing; then SIGTERM: STOPPING=1,
// exit 0, the queue flushed and closed.
func TestRunBinaryNotifyAndSIGTERM(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	b := newBinaryRig(t)
	e, hub, state, cfgPath := b.e, b.hub, b.state, b.cfg
	const id = binaryDevice

	ns := listenNotify(t)
	cmd := exec.Command(b.bin, "run", "--config", cfgPath, "--log-level", "debug")
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+ns.path, "WATCHDOG_USEC=1000000", "JOURNAL_STREAM=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("tracker stderr:\n%s", stderr.String())
			t.Logf("notifications: %q", ns.all())
		}
	})

	waitFor(t, "READY=1", 20*time.Second, func() bool { return ns.seen("READY=1") })
	waitFor(t, "STATUS=connected", 20*time.Second, func() bool { return ns.seen("STATUS=connected to hub " + hub + " as " + id) })
	waitFor(t, "WATCHDOG=1", 5*time.Second, func() bool { return ns.seen("WATCHDOG=1") })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := e.WaitTelemetry(ctx, hub, id, 3); err != nil {
		t.Fatal(err)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Fatalf("tracker exited with %v after SIGTERM; want 0", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("tracker did not exit within 20 s of SIGTERM")
	}
	if !ns.seen("STOPPING=1") {
		t.Errorf("no STOPPING=1 in %q", ns.all())
	}
	// The queue was closed (its lock is free) and flushed: every sequence
	// number handed out reached the hub.
	q, err := queue.Open(filepath.Join(state, "queue.db"), queue.Options{LockTimeout: time.Second})
	if err != nil {
		t.Fatalf("queue after exit: %v", err)
	}
	defer q.Close()
	if n, _ := q.Len(); n != 0 {
		t.Errorf("queue holds %d messages after a connected shutdown; want 0", n)
	}
	// The number the next reading would get.
	probe, err := q.Append(func(uint64) (queue.Message, error) { return queue.Message{ID: "probe"}, nil })
	if err != nil {
		t.Fatal(err)
	}
	next := probe.Seq
	seen := map[string]bool{}
	for _, m := range e.Telemetry(hub, id) {
		seen[m.MessageID] = true
	}
	if len(seen) != int(next-1) {
		t.Errorf("hub has %d distinct messages; tracker sampled %d", len(seen), next-1)
	}
	if s := stderr.String(); !strings.Contains(s, "msg=stopped") || !strings.Contains(s, "left_queued=0") || !strings.Contains(s, "time=") {
		t.Errorf("log lacks the stop line or timestamps outside journald:\n%s", s)
	}
}

const binaryDevice = "sensor-thl-001"

// binaryRig is the tracker binary, built for the test, the emulator with
// a group enrollment (initial twin telemetryDelay 1) and the device's
// files and config, simulated sensors.
type binaryRig struct {
	bin, cfg, state, hub string
	e                    *emulator.Emulator
}

// rigOpt changes the rig's group enrollment and tracker config.
type rigOpt func(e *emulator.Emulator, g *store.EnrollmentGroup, cfg map[string]any)

func newBinaryRig(t *testing.T, opts ...rigOpt) binaryRig {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "tracker")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	e := emulatortest.Start(t, func(c *emulator.Config) {
		c.HTTPSAddr = "-"
		c.Logger = slog.New(slog.DiscardHandler)
		c.TelemetryHistory = 1 << 20
	})
	root, err := pki.NewRootCA("Run Test Root", pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediateCA("Run Test Intermediate", pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := inter.NewClient(binaryDevice, pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cert, key, state := filepath.Join(dir, binaryDevice+"-chain.pem"), filepath.Join(dir, binaryDevice+".key"), filepath.Join(dir, "state")
	if err := leaf.WriteFiles(cert, key); err != nil {
		t.Fatal(err)
	}
	hub := e.HubHost(0)
	cfgDoc := map[string]any{
		"version": 1, "idScope": e.IDScope(), "dpsEndpoint": e.DPSEndpoint(),
		"certFile": cert, "keyFile": key, "caFile": e.Info().CACertPath, "stateDir": state,
		"sensors": map[string]any{"env": map[string]any{"mode": "simulated"}, "gps": map[string]any{"mode": "simulated"}},
	}
	if _, err := e.EnrollGroup("enrollgroup-sensors", root.Cert, func(g *store.EnrollmentGroup) {
		g.IoTHubs = []string{hub}
		g.InitialTwin = &store.InitialTwin{Properties: store.InitialTwinProperties{Desired: map[string]any{"telemetryDelay": 1}}}
		for _, o := range opts {
			o(e, g, cfgDoc)
		}
	}); err != nil {
		t.Fatal(err)
	}
	cfg, _ := json.Marshal(cfgDoc)
	cfgPath := filepath.Join(dir, "tracker.json")
	if err := os.WriteFile(cfgPath, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	return binaryRig{bin: bin, cfg: cfgPath, state: state, hub: hub, e: e}
}

// TestKill9DuringDrainLosesNothing queues a backlog as an outage would,
// then SIGKILLs the real binary three times while it drains (batches in
// flight, acknowledgements pending in memory) and once more while it is
// back to one reading a second. Every seq reaches the hub; a resend
// repeats its message id and body.
func TestKill9DuringDrainLosesNothing(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	b := newBinaryRig(t)
	const backlog = 3000
	if err := os.MkdirAll(b.state, 0o700); err != nil {
		t.Fatal(err)
	}
	q, err := queue.Open(filepath.Join(b.state, "queue.db"), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range backlog {
		_, err := q.Append(func(seq uint64) (queue.Message, error) {
			body := fmt.Sprintf(`{"seq":%d,"backlog":%d}`, seq, i)
			return queue.Message{ID: fmt.Sprintf("%s-%d", binaryDevice, seq), Body: []byte(body)}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}

	run := func() *exec.Cmd {
		cmd := exec.Command(b.bin, "run", "--config", b.cfg)
		cmd.Env = append(os.Environ(), "JOURNAL_STREAM=")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	count := func() int { return b.e.TelemetryCount(b.hub, binaryDevice) }
	kill := func(cmd *exec.Cmd) {
		t.Helper()
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
	}
	for round, at := range []int{backlog / 4, backlog / 2, 3 * backlog / 4} {
		cmd := run()
		waitFor(t, fmt.Sprintf("round %d: %d messages at the hub", round, at), 60*time.Second, func() bool { return count() >= at })
		kill(cmd)
		t.Logf("round %d: killed with %d messages at the hub, %d still queued", round, count(), queued(t, b))
	}
	cmd := run()
	waitFor(t, "the backlog drained and new readings flowing", 60*time.Second, func() bool {
		return distinctSeqs(t, b) > backlog+3
	})
	kill(cmd) // at one reading a second: mid-Append or with an ack in memory
	cmd = run()
	before := distinctSeqs(t, b)
	waitFor(t, "readings after the last kill", 30*time.Second, func() bool { return distinctSeqs(t, b) > before+2 })
	kill(cmd)

	// Every seq from 1 to the highest received arrived at least once, and
	// every copy of one seq is the same message.
	first := map[uint64]string{}
	var last uint64
	dups := 0
	for _, m := range b.e.Telemetry(b.hub, binaryDevice) {
		var body struct{ Seq uint64 }
		if err := json.Unmarshal(m.Body, &body); err != nil {
			t.Fatalf("message %s: %v", m.MessageID, err)
		}
		rec := m.MessageID + " " + string(m.Body)
		if prev, ok := first[body.Seq]; ok {
			dups++
			if prev != rec {
				t.Errorf("seq %d sent as %q and as %q", body.Seq, prev, rec)
			}
			continue
		}
		first[body.Seq] = rec
		last = max(last, body.Seq)
	}
	for seq := uint64(1); seq <= last; seq++ {
		if _, ok := first[seq]; !ok {
			t.Errorf("seq %d never reached the hub (highest %d)", seq, last)
		}
	}
	t.Logf("%d seqs delivered after 5 kill -9, %d resent duplicates", last, dups)
}

// queued opens the stopped tracker's queue and counts what it holds.
func queued(t *testing.T, b binaryRig) int {
	q, err := queue.Open(filepath.Join(b.state, "queue.db"), queue.Options{LockTimeout: time.Second, ReserveBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	n, _ := q.Len()
	return n
}

// distinctSeqs counts the different seqs the hub has from the device.
func distinctSeqs(t *testing.T, b binaryRig) int {
	seen := map[uint64]bool{}
	for _, m := range b.e.Telemetry(b.hub, binaryDevice) {
		var body struct{ Seq uint64 }
		if err := json.Unmarshal(m.Body, &body); err != nil {
			t.Fatalf("message %s: %v", m.MessageID, err)
		}
		seen[body.Seq] = true
	}
	return len(seen)
}
