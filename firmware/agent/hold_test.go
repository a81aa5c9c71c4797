package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/reefer/tracker/firmware/agent"
	"github.com/reefer/tracker/firmware/telemetry"
	"github.com/reefer/tracker/internal/syncbuf"
)

// boot is the wall clock of a Raspberry Pi without an RTC before NTP.
var boot = time.Unix(0, 0).UTC()

// floor is the earliest time the agent believes in these tests.
var floor = t0.Add(-24 * time.Hour)

// bootRig is a rig whose wall clock starts in 1970, below floor.
func bootRig(t *testing.T, mutate func(*agent.Config)) *rig {
	t.Helper()
	return newRigAt(t, boot, func(c *agent.Config) {
		c.ClockFloor = floor
		c.ClockPoll = time.Second
		if mutate != nil {
			mutate(c)
		}
	})
}

// waitHeld waits until n samples are held and the clock poll is armed.
func (r *rig) waitHeld(n int) {
	r.t.Helper()
	eventually(r.t, "held samples", func() bool {
		return r.a.Status().Held == n && slices.Contains(r.clock.Deadlines(), time.Second)
	})
}

func bodyOf(t *testing.T, m agent.Queued) telemetry.Body {
	t.Helper()
	var b telemetry.Body
	if err := json.Unmarshal(m.Body, &b); err != nil {
		t.Fatalf("body of %s: %v", m.ID, err)
	}
	return b
}

func TestSamplesHeldUntilClockSetThenRestamped(t *testing.T) {
	t.Parallel()
	logs := &syncbuf.Buffer{}
	r := bootRig(t, func(c *agent.Config) { c.Logger = slog.New(slog.NewTextHandler(logs, nil)) })
	r.a.SetConnected(true) // even with a link nothing may leave
	r.run()
	r.waitHeld(1)
	for k := 2; k <= 4; k++ { // samples at monotonic 0, 10, 20, 30 s
		r.clock.Advance(10 * time.Second)
		r.waitHeld(k)
	}
	st := r.a.Status()
	if n := r.q.Puts(); n != 0 || len(r.pub.Sent()) != 0 || !st.WaitingForClock || st.QueueDepth != 0 {
		t.Fatalf("before the clock is set: %d puts, %d sent, status %+v; want nothing queued, waiting for the clock", n, len(r.pub.Sent()), st)
	}
	if n := strings.Count(logs.String(), "holding samples"); n != 1 {
		t.Errorf("logged %d times that samples are held; want once:\n%s", n, logs)
	}

	// NTP steps the clock 35 s after the first sample; the poll notices.
	r.clock.Advance(5 * time.Second)
	r.clock.SetWall(t0)
	r.clock.Advance(time.Second)
	eventually(t, "held messages sent", func() bool { return len(r.pub.Sent()) == 4 })
	want := []time.Time{t0.Add(-35 * time.Second), t0.Add(-25 * time.Second), t0.Add(-15 * time.Second), t0.Add(-5 * time.Second)}
	msgs := r.pub.Sent()
	if got := created(msgs); !slices.Equal(got, want) {
		t.Errorf("re-stamped times = %v; want %v", got, want)
	}
	if got := seqs(msgs); !slices.Equal(got, []uint64{1, 2, 3, 4}) {
		t.Errorf("seqs = %v; want [1 2 3 4]", got)
	}
	for i, m := range msgs {
		b := bodyOf(t, m)
		if b.Timestamp != want[i].Format(time.RFC3339Nano) || b.Seq != m.Seq || m.ID != fmt.Sprintf("sensor-thl-001-%d", i+1) {
			t.Errorf("message %s: body timestamp %s seq %d; want sensor-thl-001-%d, %s, seq %d", m.ID, b.Timestamp, b.Seq, i+1, want[i].Format(time.RFC3339Nano), m.Seq)
		}
		if m.Props[telemetry.AlertProperty] != "false" {
			t.Errorf("message %s props = %v; want the alert property", m.ID, m.Props)
		}
	}

	// From now on samples are queued at once, after the held ones.
	r.clock.Advance(4 * time.Second)
	r.waitPuts(5)
	eventually(t, "all sent", func() bool { return len(r.pub.Sent()) == 5 })
	sent := r.pub.Sent()
	if got := seqs(sent); !slices.Equal(got, []uint64{1, 2, 3, 4, 5}) {
		t.Errorf("sent seqs = %v; want [1 2 3 4 5]", got)
	}
	if got := sent[4].Created; !got.Equal(t0.Add(5 * time.Second)) {
		t.Errorf("first sample after the clock was set at %v; want %v", got, t0.Add(5*time.Second))
	}
	st = r.a.Status()
	if st.WaitingForClock || st.Held != 0 || st.Dropped != 0 || st.Samples != 5 || st.LastSeq != 5 {
		t.Errorf("Status() = %+v; want not waiting, nothing held or dropped, 5 samples, last seq 5", st)
	}
	if n := r.clock.Waiters(); n != 4 {
		t.Errorf("%d timers after the release; want 4 (sampler, beat, alert watch, reporter: the clock poll stopped)", n)
	}
}

func TestHoldBoundDropsOldest(t *testing.T) {
	t.Parallel()
	r := bootRig(t, func(c *agent.Config) { c.HoldMax = 3 })
	r.run()
	r.waitHeld(1)
	for k := 2; k <= 5; k++ {
		r.clock.Advance(10 * time.Second)
		eventually(t, "a sample taken", func() bool { return r.env.Reads() == k })
	}
	eventually(t, "two dropped", func() bool { return r.a.Status().HeldDropped == 2 })
	st := r.a.Status()
	if st.Held != 3 || st.Dropped != 2 || r.q.Puts() != 0 {
		t.Fatalf("Status() = %+v, %d puts; want 3 held, 2 dropped, nothing queued", st, r.q.Puts())
	}
	// The report made while holding says so (the link needs the clock in
	// production, but the agent does not assume it).
	r.a.SetConnected(true)
	rep := r.waitReported("while holding", func(map[string]any) bool { return true })
	if rep[agent.PropHeldSamples] != 3 || rep[agent.PropDroppedMessages] != uint64(2) {
		t.Errorf("reported held %v dropped %v; want 3, 2", rep[agent.PropHeldSamples], rep[agent.PropDroppedMessages])
	}

	r.clock.SetWall(t0)
	r.clock.Advance(time.Second)
	eventually(t, "the kept three sent", func() bool { return len(r.pub.Sent()) == 3 })
	sent := r.pub.Sent()
	// Numbered when queued: the two dropped while held never got one.
	if got := seqs(sent); !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Errorf("sent seqs = %v; want [1 2 3]", got)
	}
	// Taken at monotonic 20, 30 and 40 s; at 40 s the clock was set to t0.
	want := []time.Time{t0.Add(-20 * time.Second), t0.Add(-10 * time.Second), t0}
	if got := created(sent); !slices.Equal(got, want) {
		t.Errorf("times = %v; want %v", got, want)
	}
	// A held sample leaves the holding area just after its Append, so the
	// sender may publish the last one first: wait for the release to end.
	eventually(t, "nothing held", func() bool { return r.a.Status().Held == 0 })
	if st := r.a.Status(); st.Dropped != 2 || st.HeldDropped != 2 {
		t.Errorf("Status() = %+v; want nothing held, 2 dropped", st)
	}
}

func TestSendNowWhileHeld(t *testing.T) {
	t.Parallel()
	r := bootRig(t, func(c *agent.Config) { c.TelemetryDelay = time.Hour })
	r.run()
	r.waitHeld(1)
	r.clock.Advance(3 * time.Second)
	m, err := r.a.SendNow(context.Background())
	if !errors.Is(err, agent.ErrHeld) || m.ID != "" || m.Seq != 0 || m.Body != nil {
		t.Fatalf("SendNow = %q seq %d body %q, %v; want nothing yet (numbered when queued), ErrHeld", m.ID, m.Seq, m.Body, err)
	}
	r.clock.SetWall(t0) // right after SendNow's sample, 3 s after the first
	r.clock.Advance(time.Second)
	r.waitPuts(2)
	got := r.q.Messages()
	if got[1].ID != "sensor-thl-001-2" || !got[1].Created.Equal(t0) || !got[0].Created.Equal(t0.Add(-3*time.Second)) {
		t.Errorf("queued %s at %v, %s at %v; want seq 1 at %v, sensor-thl-001-2 at %v", got[0].ID, got[0].Created, got[1].ID, got[1].Created,
			t0.Add(-3*time.Second), t0)
	}
	m, err = r.a.SendNow(context.Background())
	if err != nil || m.Seq != 3 || !m.Created.Equal(t0.Add(time.Second)) {
		t.Errorf("SendNow after the clock was set = seq %d at %v, %v; want seq 3 at %v, nil", m.Seq, m.Created, err, t0.Add(time.Second))
	}
}

func TestClockSetJustBeforeStopLosesNothing(t *testing.T) {
	t.Parallel()
	r := bootRig(t, func(c *agent.Config) { c.ClockPoll = time.Hour })
	r.run()
	eventually(t, "held", func() bool { return r.a.Status().Held == 1 })
	r.clock.Advance(10 * time.Second)
	eventually(t, "held", func() bool { return r.a.Status().Held == 2 })
	r.clock.SetWall(t0) // no poll before the stop
	r.cancel()
	eventually(t, "Run to return", func() bool { return !r.a.Status().Running })
	eventually(t, "held samples queued at stop", func() bool { return r.q.Puts() == 2 })
	if got, want := created(r.q.Messages()), []time.Time{t0.Add(-10 * time.Second), t0}; !slices.Equal(got, want) {
		t.Errorf("times = %v; want %v", got, want)
	}
}

func TestClockFineFromStartNothingHeld(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name  string
		floor time.Time
	}{
		{"no floor", time.Time{}},
		{"floor in the past", floor},
		{"floor is now", t0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, func(c *agent.Config) { c.ClockFloor = tt.floor })
			r.start()
			r.clock.Advance(10 * time.Second)
			r.waitPuts(2)
			if got, want := created(r.q.Messages()), []time.Time{t0, t0.Add(10 * time.Second)}; !slices.Equal(got, want) {
				t.Errorf("times = %v; want %v", got, want)
			}
			if st := r.a.Status(); st.WaitingForClock || st.Held != 0 {
				t.Errorf("Status() = %+v; want not waiting, nothing held", st)
			}
			if n := r.clock.Waiters(); n != 4 {
				t.Errorf("%d timers; want 4 (sampler, beat, alert watch, reporter: no clock poll)", n)
			}
		})
	}
}
