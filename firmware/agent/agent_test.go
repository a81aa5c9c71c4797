package agent_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reefer/tracker/drivers"
	"github.com/reefer/tracker/firmware/agent"
	"github.com/reefer/tracker/firmware/agent/agenttest"
	"github.com/reefer/tracker/firmware/telemetry"
	"github.com/reefer/tracker/internal/waitfor"
)

var t0 = time.Date(2026, 11, 28, 13, 45, 0, 0, time.UTC)

func env(tempC float64) drivers.Env {
	rh := 90.0
	return drivers.Env{TemperatureC: tempC, PressureHPa: 1013.25, HumidityRH: &rh, Source: drivers.Hardware, Chip: "BME280"}
}

// rig runs an agent against fakes.
type rig struct {
	t     *testing.T
	clock *agenttest.Clock
	q     *agenttest.Queue
	pub   *agenttest.Publisher
	rep   *agenttest.Reporter
	env   *agenttest.Sensor
	gps   *agenttest.Positioner
	beats atomic.Int64
	a     *agent.Agent

	cancel context.CancelFunc
	done   chan error
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func newRig(t *testing.T, mutate func(*agent.Config)) *rig {
	t.Helper()
	return newRigAt(t, t0, mutate)
}

// newRigAt is newRig with the wall clock starting at start.
func newRigAt(t *testing.T, start time.Time, mutate func(*agent.Config)) *rig {
	t.Helper()
	r := &rig{
		t:     t,
		clock: agenttest.NewClock(start),
		q:     &agenttest.Queue{},
		pub:   agenttest.NewPublisher(),
		rep:   &agenttest.Reporter{},
		env:   agenttest.NewSensor(env(4.2)),
		gps:   agenttest.NewPositioner(drivers.Simulated),
	}
	cfg := agent.Config{
		DeviceID:        "sensor-thl-001",
		FirmwareVersion: "1.2.3",
		Env:             r.env,
		GPS:             r.gps,
		Queue:           r.q,
		Publisher:       r.pub,
		Reporter:        r.rep,
		Clock:           r.clock,
		Logger:          testLogger(t),
		TelemetryDelay:  10 * time.Second,
		EnvSource:       drivers.Hardware,
		BeatInterval:    time.Hour, // out of the way of the cadence
		AlertCheck:      time.Hour, // likewise; the alert tests set it
		ReportInterval:  24 * time.Hour,
		Beat:            func() { r.beats.Add(1) },
		Rand:            func() float64 { return 0 },
	}
	if mutate != nil {
		mutate(&cfg)
	}
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	r.a = a
	return r
}

// start runs the agent and waits for its first sample and for its tickers
// (sampler, beat, reporter) to be armed.
func (r *rig) start() {
	r.t.Helper()
	r.run()
	r.waitPuts(1)
}

// run runs the agent and waits for its tickers (sampler, beat, reporter)
// to be armed.
func (r *rig) run() {
	r.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan error, 1)
	go func() { r.done <- r.a.Run(ctx) }()
	r.t.Cleanup(func() {
		cancel()
		// Keep moving the clock past any flush deadline until Run returns.
		deadline := time.After(10 * time.Second)
		for {
			select {
			case <-r.done:
				return
			case <-deadline:
				r.t.Error("Run did not return after cancel")
				return
			case <-time.After(time.Millisecond):
				r.clock.Advance(time.Hour)
			}
		}
	})
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := r.clock.WaitForWaiters(wctx, 4); err != nil { // sampler, beat, alert watch, reporter
		r.t.Fatalf("agent never armed its tickers: %v", err)
	}
}

func (r *rig) waitPuts(n int) {
	r.t.Helper()
	eventually(r.t, "queue puts", func() bool { return r.q.Puts() >= n })
}

// eventually polls cond until it holds; the bound only matters when the
// code under test is broken.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitfor.Until(t, what, 10*time.Second, time.Millisecond, cond)
}

// waitDeadline waits until the agent armed a timer firing d from now.
func (r *rig) waitDeadline(d time.Duration) {
	r.t.Helper()
	eventually(r.t, "a timer at +"+d.String(), func() bool { return slices.Contains(r.clock.Deadlines(), d) })
}

func seqs(ms []agent.Queued) []uint64 {
	var s []uint64
	for _, m := range ms {
		s = append(s, m.Seq)
	}
	return s
}

func created(ms []agent.Queued) []time.Time {
	var s []time.Time
	for _, m := range ms {
		s = append(s, m.Created)
	}
	return s
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	q, pub, s := &agenttest.Queue{}, agenttest.NewPublisher(), agenttest.NewSensor(env(4))
	hot := 150.0
	tests := []struct {
		name string
		cfg  agent.Config
	}{
		{"no device id", agent.Config{Env: s, Queue: q, Publisher: pub}},
		{"no sensor", agent.Config{DeviceID: "d", Queue: q, Publisher: pub}},
		{"no queue", agent.Config{DeviceID: "d", Env: s, Publisher: pub}},
		{"no publisher", agent.Config{DeviceID: "d", Env: s, Queue: q}},
		{"delay too short", agent.Config{DeviceID: "d", Env: s, Queue: q, Publisher: pub, TelemetryDelay: time.Millisecond}},
		{"delay too long", agent.Config{DeviceID: "d", Env: s, Queue: q, Publisher: pub, TelemetryDelay: 2 * time.Hour}},
		{"threshold out of range", agent.Config{DeviceID: "d", Env: s, Queue: q, Publisher: pub, AlertThreshold: &hot}},
	}
	for _, tt := range tests {
		if _, err := agent.New(tt.cfg); err == nil {
			t.Errorf("New(%s) = nil error; want an error", tt.name)
		}
	}
	a, err := agent.New(agent.Config{DeviceID: "d", Env: s, Queue: q, Publisher: pub})
	if err != nil {
		t.Fatalf("New(minimal) = %v", err)
	}
	st := a.Status()
	if st.TelemetryDelay != telemetry.DefaultDelay.Seconds() || st.AlertThreshold != telemetry.DefaultAlertThreshold {
		t.Errorf("defaults: delay %v threshold %v; want %v, %v", st.TelemetryDelay, st.AlertThreshold,
			telemetry.DefaultDelay.Seconds(), telemetry.DefaultAlertThreshold)
	}
}

func TestCadence(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	r.start()
	want := []time.Time{t0}
	for k := 1; k <= 5; k++ {
		// Two half steps: the first must not sample.
		r.clock.Advance(5 * time.Second)
		r.clock.Advance(5 * time.Second)
		want = append(want, t0.Add(time.Duration(k)*10*time.Second))
		r.waitPuts(len(want))
	}
	msgs := r.q.Messages()
	if got := created(msgs); !slices.Equal(got, want) {
		t.Errorf("sample times = %v; want %v", got, want)
	}
	if got, want := seqs(msgs), []uint64{1, 2, 3, 4, 5, 6}; !slices.Equal(got, want) {
		t.Errorf("seqs = %v; want %v", got, want)
	}
	if r.pub.Calls() != 0 {
		t.Errorf("publisher called %d times while disconnected; want 0", r.pub.Calls())
	}
	eventually(t, "a beat per loop iteration", func() bool { return r.beats.Load() >= 6 })
	var body telemetry.Body
	if err := json.Unmarshal(msgs[0].Body, &body); err != nil {
		t.Fatalf("body: %v", err)
	}
	if body.Seq != 1 || body.Timestamp != t0.Format(time.RFC3339Nano) || body.Source.GPS != drivers.Simulated || body.Latitude != nil {
		t.Errorf("body = %+v; want seq 1, timestamp %s, gps simulated, no position", body, t0.Format(time.RFC3339Nano))
	}
	if msgs[0].ID != "sensor-thl-001-1" {
		t.Errorf("ID = %q; want %q", msgs[0].ID, "sensor-thl-001-1")
	}
}

func TestBeatWithoutSamples(t *testing.T) {
	t.Parallel()
	r := newRig(t, func(c *agent.Config) {
		c.TelemetryDelay = time.Hour
		c.BeatInterval = 5 * time.Second
	})
	r.start()
	before := r.beats.Load()
	r.clock.Advance(5 * time.Second)
	eventually(t, "a beat between samples", func() bool { return r.beats.Load() > before })
	if n := r.q.Puts(); n != 1 {
		t.Errorf("puts = %d; want 1 (beats must not sample)", n)
	}
}

func TestPositionInMessage(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	r.gps.SetFix(&telemetry.Position{Latitude: 51.9225, Longitude: 4.47917, Quality: 1, Satellites: 9, Source: drivers.Hardware})
	r.start()
	var body telemetry.Body
	if err := json.Unmarshal(r.q.Messages()[0].Body, &body); err != nil {
		t.Fatalf("body: %v", err)
	}
	if body.Latitude == nil || *body.Latitude != 51.9225 || body.Satellites != 9 || body.Source.GPS != drivers.Hardware {
		t.Errorf("body = %+v; want the fix at 51.9225", body)
	}
}
