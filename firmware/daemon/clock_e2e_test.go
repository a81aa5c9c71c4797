package daemon_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/reefer/tracker/firmware/agent"
	"github.com/reefer/tracker/firmware/agent/agenttest"
	"github.com/reefer/tracker/firmware/config"
	"github.com/reefer/tracker/firmware/daemon"
	"github.com/reefer/tracker/firmware/telemetry"
)

// A Pi without an RTC boots in 1970 and samples before NTP sets the clock:
// nothing leaves while the clock is implausible, STATUS= says why, and the
// readings reach the hub afterwards with their true times, in order.
func TestBootIn1970HoldsSamplesUntilClockSet(t *testing.T) {
	t.Parallel()
	const id = "sensor-thl-001"
	e, cfg := enrolledTracker(t, id)

	// The fake clock drives the agent and the daemon's wall clock; it moves
	// only when the test says so until the clock is set, then a goroutine
	// keeps it moving so timers fire. Cleanups run last-in first-out: this
	// one stops the goroutine after the tracker has stopped.
	clock := agenttest.NewClock(time.Unix(0, 0).UTC())
	ticking, stopTicking := context.WithCancel(context.Background())
	t.Cleanup(stopTicking)
	tr := startTracker(t, cfg, id, func(_ *config.Config, dc *daemon.Config) { dc.Agent.Clock = clock })

	eventually(t, "the first sample held", func() bool { return tr.status().Held == 1 })
	clock.Advance(7 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	m, err := tr.d.SendNow(ctx)
	if !errors.Is(err, agent.ErrHeld) || m.Seq != 0 {
		t.Fatalf("SendNow in 1970 = seq %d, %v; want no seq yet, ErrHeld", m.Seq, err)
	}
	eventually(t, "the STATUS= line", func() bool { return tr.notes.has("STATUS=waiting for the clock; 2 samples held") })
	if st := tr.status(); st.QueueDepth != 0 || !st.WaitingForClock {
		t.Fatalf("status in 1970 = %+v; want nothing queued, waiting for the clock", st.StatusReport)
	}
	if got := e.telemetry(id); len(got) != 0 {
		t.Fatalf("%d messages reached the hub in 1970", len(got))
	}

	// NTP sets the clock 7 s after the first sample.
	set := time.Now().UTC().Truncate(time.Second)
	clock.SetWall(set)
	go func() {
		for ticking.Err() == nil {
			clock.Advance(100 * time.Millisecond)
			time.Sleep(10 * time.Millisecond)
		}
	}()
	if _, err := e.WaitTelemetry(ctx, e.HubHost(0), id, 2); err != nil {
		t.Fatal(err)
	}
	want := map[uint64]time.Time{1: set.Add(-7 * time.Second), 2: set}
	for _, msg := range e.telemetry(id) {
		var b telemetry.Body
		if err := json.Unmarshal(msg.Body, &b); err != nil {
			t.Fatalf("body %q: %v", msg.Body, err)
		}
		ts, err := time.Parse(time.RFC3339Nano, b.Timestamp)
		if err != nil || ts.Before(set.Add(-7*time.Second)) {
			t.Errorf("seq %d left with timestamp %q; want none before %v", b.Seq, b.Timestamp, set.Add(-7*time.Second))
		}
		if w, ok := want[b.Seq]; ok && !ts.Equal(w) {
			t.Errorf("seq %d timestamp %v; want %v", b.Seq, ts, w)
		}
	}
	if got := e.telemetry(id)[:2]; decodeBody(t, got[0]).Seq != 1 || decodeBody(t, got[1]).Seq != 2 {
		t.Errorf("first messages seq %d, %d; want 1, 2", decodeBody(t, got[0]).Seq, decodeBody(t, got[1]).Seq)
	}
	eventually(t, "connected STATUS=", func() bool { return tr.notes.has("STATUS=connected to hub") })
	if st := tr.status(); st.Held != 0 || st.WaitingForClock || st.Dropped != 0 {
		t.Errorf("status after the clock was set = %+v; want nothing held or dropped", st.StatusReport)
	}
}
