package daemon_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reefer/tracker/deploy/emulator"
	"github.com/reefer/tracker/deploy/emulator/pki"
	"github.com/reefer/tracker/deploy/emulator/store"
	"github.com/reefer/tracker/drivers"
	"github.com/reefer/tracker/firmware/agent"
	"github.com/reefer/tracker/firmware/config"
	"github.com/reefer/tracker/firmware/daemon"
	"github.com/reefer/tracker/firmware/lifecycle"
	"github.com/reefer/tracker/internal/pnp"
	"github.com/reefer/tracker/internal/syncbuf"
	"github.com/reefer/tracker/internal/waitfor"
	"github.com/reefer/tracker/provisioning/dps"
	"github.com/reefer/tracker/provisioning/iothub"
)

// wait bounds every wait on the daemon; the steps take well under a second
// each, the margin is for -race on two busy cores.
const wait = 20 * time.Second

// emu is an emulator that a test can stop and start again on the same
// ports and state, like a hub outage.
type emu struct {
	*emulator.Emulator
	t   *testing.T
	cfg emulator.Config
	mu  sync.Mutex
	// before holds the telemetry recorded by earlier runs: the emulator
	// keeps it in memory only.
	before map[string][]store.Message
}

func startEmu(t *testing.T, mods ...func(*emulator.Config)) *emu {
	t.Helper()
	e := &emu{t: t, before: map[string][]store.Message{}, cfg: emulator.Config{
		DataDir:    t.TempDir(),
		MQTTAddr:   "127.0.0.1:0",
		HTTPSAddr:  "-",
		RetryAfter: -1,
		NoSync:     true,
		Logger:     slog.New(slog.DiscardHandler),
	}}
	for _, m := range mods {
		m(&e.cfg)
	}
	e.start()
	t.Cleanup(func() { e.stop() })
	return e
}

func (e *emu) start() {
	e.t.Helper()
	em, err := emulator.New(e.cfg)
	if err != nil {
		e.t.Fatalf("emulator.New: %v", err)
	}
	if err := em.Start(context.Background()); err != nil {
		em.Close()
		e.t.Fatalf("emulator.Start: %v", err)
	}
	e.mu.Lock()
	e.Emulator = em
	e.mu.Unlock()
}

// stop closes the emulator, keeping what it recorded.
func (e *emu) stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.Emulator == nil {
		return
	}
	for _, h := range e.Store().Hubs() {
		for _, d := range mustList(e.Store().ListDevices(h.HostName)) {
			key := h.HostName + "/" + d.DeviceID
			e.before[key] = append(e.before[key], e.Emulator.Telemetry(h.HostName, d.DeviceID)...)
		}
	}
	e.Emulator.Close()
	e.Emulator = nil
}

func mustList(d []store.Device, _ error) []store.Device { return d }

// telemetry returns every message recorded for id on hub 1, across restarts.
func (e *emu) telemetry(id string) []store.Message {
	e.mu.Lock()
	defer e.mu.Unlock()
	hub := e.HubHost(0)
	out := append([]store.Message(nil), e.before[hub+"/"+id]...)
	if e.Emulator != nil {
		out = append(out, e.Emulator.Telemetry(hub, id)...)
	}
	return out
}

// fleet is the operator's PKI: root → intermediate → device leaves.
type fleet struct{ root, inter *pki.Cert }

func newFleet(t *testing.T) *fleet {
	t.Helper()
	root, err := pki.NewRootCA("Reefer Test Root", pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediateCA("Reefer Test Intermediate", pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &fleet{root, inter}
}

// enroll creates the group enrollment of reference flow step 3 with the initial
// twin {"telemetryDelay":1}.
func (f *fleet) enroll(t *testing.T, e *emu, mod func(*store.EnrollmentGroup)) {
	t.Helper()
	_, err := e.EnrollGroup("enrollgroup-sensors", f.root.Cert, func(g *store.EnrollmentGroup) {
		g.IoTHubs = []string{e.HubHost(0)}
		g.AllocationPolicy = store.AllocationStatic
		g.InitialTwin = &store.InitialTwin{Properties: store.InitialTwinProperties{Desired: map[string]any{"telemetryDelay": 1}}}
		if mod != nil {
			mod(g)
		}
	})
	if err != nil {
		t.Fatalf("enroll group: %v", err)
	}
}

// trackerConfig issues a leaf for id, writes its chain and key (0600) to a
// new temp dir and returns a valid config for a simulated tracker against e,
// with its state beside them.
func (f *fleet) trackerConfig(t *testing.T, e *emu, id string) *config.Config {
	t.Helper()
	return f.trackerConfigWith(t, e, id, pki.Options{})
}

// trackerConfigWith is trackerConfig with the leaf's validity in o.
func (f *fleet) trackerConfigWith(t *testing.T, e *emu, id string, o pki.Options) *config.Config {
	t.Helper()
	leaf, err := f.inter.NewClient(id, o)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, id+"-chain.pem"), filepath.Join(dir, id+".key")
	if err := leaf.WriteFiles(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	c := config.Default()
	c.IDScope = e.IDScope()
	c.DPSEndpoint = e.DPSEndpoint()
	c.CertFile, c.KeyFile = certFile, keyFile
	c.CAFile = e.Info().CACertPath
	c.StateDir = filepath.Join(dir, "state")
	c.Sensors.Env.Mode = drivers.SimulatedOnly
	c.Sensors.GPS.Mode = drivers.SimulatedOnly
	c.TelemetryDelay = 3600 // tests sample with SendNow or set telemetryDelay in the twin
	c.LogLevel = "debug"
	return c
}

// fast shortens every timing so a test waits for events, not schedules.
func fast() daemon.Config {
	return daemon.Config{
		ReadyWait:      10 * time.Second,
		StatusInterval: 50 * time.Millisecond,
		ClockPoll:      10 * time.Millisecond,
		Agent: agent.Config{
			FlushTimeout: 3 * time.Second,
			BackoffMin:   20 * time.Millisecond,
			BackoffMax:   200 * time.Millisecond,
		},
		Lifecycle: lifecycle.Config{
			RetryMin:    150 * time.Millisecond,
			RetryMax:    400 * time.Millisecond,
			BackoffBase: 30 * time.Millisecond,
			BackoffMax:  300 * time.Millisecond,
			DPS: dps.Config{
				BackoffBase:     30 * time.Millisecond,
				BackoffMax:      300 * time.Millisecond,
				MaxWait:         10 * time.Second,
				ResponseTimeout: 5 * time.Second,
				ConnectTimeout:  5 * time.Second,
			},
		},
		Hub: iothub.Config{
			BackoffBase:        20 * time.Millisecond,
			BackoffMax:         200 * time.Millisecond,
			NotAuthorizedLimit: 2,
			OperationTimeout:   5 * time.Second,
			ConnectTimeout:     5 * time.Second,
		},
	}
}

// tracker is a daemon running in the test process.
type tracker struct {
	t      *testing.T
	d      *daemon.Daemon
	id     string
	cancel context.CancelFunc
	done   chan error
	logs   *syncbuf.Buffer
	notes  *notes
	cfg    *config.Config
}

type trackerOpt func(*config.Config, *daemon.Config)

func startTracker(t *testing.T, cfg *config.Config, id string, opts ...trackerOpt) *tracker {
	t.Helper()
	dc := fast()
	for _, o := range opts {
		o(cfg, &dc)
	}
	tr := &tracker{t: t, id: id, cfg: cfg, done: make(chan error, 1), logs: &syncbuf.Buffer{}, notes: &notes{}}
	dc.Tracker = cfg
	dc.FirmwareVersion = "test"
	dc.Logger = slog.New(slog.NewTextHandler(tr.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	dc.Notifier = tr.notes
	d, err := daemon.New(dc)
	if err != nil {
		t.Fatalf("daemon.New: %v", err)
	}
	tr.d = d
	ctx, cancel := context.WithCancel(context.Background())
	tr.cancel = cancel
	go func() { tr.done <- d.Run(ctx) }()
	t.Cleanup(func() {
		tr.stop()
		if t.Failed() {
			t.Logf("tracker %s log:\n%s", id, tr.logs.String())
		}
	})
	select {
	case <-d.Started():
	case err := <-tr.done:
		tr.done <- err
		t.Fatalf("tracker %s did not start: %v", id, err)
	case <-time.After(wait):
		t.Fatalf("tracker %s did not start", id)
	}
	eventually(t, id+" sampling", func() bool { return tr.status().Running })
	return tr
}

// stop cancels the daemon (SIGTERM) and waits for Run; it returns Run's error.
func (tr *tracker) stop() error {
	tr.cancel()
	select {
	case err := <-tr.done:
		tr.done <- err
		return err
	case <-time.After(wait):
		tr.t.Errorf("tracker %s did not stop", tr.id)
		return nil
	}
}

func (tr *tracker) status() daemon.Status {
	tr.t.Helper()
	st, err := tr.d.Status()
	if err != nil {
		tr.t.Fatalf("Status: %v", err)
	}
	return st
}

func (tr *tracker) sendNow() uint64 {
	tr.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	m, err := tr.d.SendNow(ctx)
	if err != nil {
		tr.t.Fatalf("SendNow: %v", err)
	}
	return m.Seq
}

// eventually polls cond until it holds or the wait runs out.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitfor.Until(t, what, wait, 10*time.Millisecond, cond)
}

// countLines is how many lines of logs contain every one of parts.
func countLines(logs string, parts ...string) int {
	n := 0
	for _, l := range strings.Split(logs, "\n") {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			n++
		}
	}
	return n
}

// retryWaits is the retry_in of every log line containing msg.
func retryWaits(logs, msg string) []time.Duration {
	var out []time.Duration
	for _, l := range strings.Split(logs, "\n") {
		_, v, ok := strings.Cut(l, " retry_in=")
		if !ok || !strings.Contains(l, msg) {
			continue
		}
		v, _, _ = strings.Cut(v, " ")
		if d, err := time.ParseDuration(v); err == nil {
			out = append(out, d)
		}
	}
	return out
}

// notes records what the daemon tells systemd.
type notes struct {
	mu    sync.Mutex
	lines []string
}

func (n *notes) add(s string) error {
	n.mu.Lock()
	n.lines = append(n.lines, s)
	n.mu.Unlock()
	return nil
}

func (n *notes) Ready() error             { return n.add("READY=1") }
func (n *notes) Stopping() error          { return n.add("STOPPING=1") }
func (n *notes) Status(line string) error { return n.add("STATUS=" + line) }

func (n *notes) all() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.lines...)
}

func (n *notes) has(prefix string) bool {
	for _, l := range n.all() {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

// body is the telemetry body fields the tests look at.
type body struct {
	Temperature float64 `json:"temperature"`
	Seq         uint64  `json:"seq"`
	Source      struct {
		Env string `json:"env"`
		GPS string `json:"gps"`
	} `json:"source"`
}

func decodeBody(t *testing.T, m store.Message) body {
	t.Helper()
	var b body
	if err := json.Unmarshal(m.Body, &b); err != nil {
		t.Fatalf("message %s body %q: %v", m.MessageID, m.Body, err)
	}
	return b
}

// reported returns the device's reported properties.
func reported(t *testing.T, e *emu, id string) map[string]any {
	t.Helper()
	tw, err := e.Store().GetTwin(e.HubHost(0), id)
	if err != nil {
		return nil
	}
	return tw.Properties.Reported.Props
}

// ack reads the reported answer to a writable property (docs/protocol.md
// B.5); the zero Ack when it is absent or not an acknowledgement.
func ack(r map[string]any, name string) pnp.Ack {
	a, _ := pnp.From(r[name])
	return a
}

// acked is the acknowledged value of a writable property as a number.
func acked(r map[string]any, name string) float64 {
	f, _ := ack(r, name).Number()
	return f
}

func num(v any) float64 {
	var f float64
	fmt.Sscan(fmt.Sprint(v), &f)
	return f
}

// certOf reads the leaf certificate a tracker runs with.
func certOf(tr *tracker) (*x509.Certificate, error) {
	c, err := pki.Load(tr.cfg.CertFile, tr.cfg.KeyFile)
	if err != nil {
		return nil, err
	}
	return c.Cert, nil
}

// enrolledTracker is the start of most end-to-end tests: an emulator with
// the fleet's group enrolled, and the config of tracker id against it.
func enrolledTracker(t *testing.T, id string) (*emu, *config.Config) {
	t.Helper()
	e := startEmu(t)
	f := newFleet(t)
	f.enroll(t, e, nil)
	return e, f.trackerConfig(t, e, id)
}
