package agent_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reefer/tracker/firmware/agent"
	"github.com/reefer/tracker/firmware/command"
)

// record is a CommandRecord in memory that can be made to fail.
type record struct {
	mu    sync.Mutex
	r     command.Record
	fail  error
	saves int
}

func (f *record) Load() (command.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.r, nil
}

func (f *record) Save(r command.Record) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	f.r, f.saves = r, f.saves+1
	return nil
}

func (f *record) get() command.Record {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.r
}

func handle(t *testing.T, a *agent.Agent, id, body string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return a.HandleCommand(ctx, id, []byte(body))
}

// A timed override is in force over the twin's telemetryDelay from the
// command on, survives a desired change (which applies once it ends), and
// ends by itself: its end is saved and the twin's value applies again.
func TestTimedOverrideEndsAndTwinApplies(t *testing.T) {
	t.Parallel()
	rec := &record{}
	r := newRig(t, func(c *agent.Config) { c.TelemetryDelay = 20 * time.Minute; c.Commands = rec })
	r.a.SetConnected(true)
	r.start()
	if err := handle(t, r.a, "c1", `{"command":"setTelemetryInterval","seconds":5,"durationSeconds":60}`); err != nil {
		t.Fatal(err)
	}
	if o := rec.get().Override; o == nil || o.Seconds != 5 || !o.Until.Equal(t0.Add(time.Minute)) || o.MessageID != "c1" {
		t.Fatalf("saved override %+v; want 5 s until %v set by c1", o, t0.Add(time.Minute))
	}
	r.waitDeadline(5 * time.Second)
	r.clock.Advance(5 * time.Second)
	r.waitPuts(2)
	// The twin changes meanwhile: recorded, not in force yet.
	if err := r.a.ApplyDesired(2, props(t, map[string]any{"telemetryDelay": 30})); err != nil {
		t.Fatal(err)
	}
	if st := r.a.Status(); st.TelemetryInterval != 5 || st.TelemetryDelay != 30 {
		t.Errorf("during the override: interval %v, delay %v; want 5 and 30", st.TelemetryInterval, st.TelemetryDelay)
	}
	rep := r.waitReported("the override", func(p map[string]any) bool { return p["telemetryInterval"] == 5.0 })
	if o, ok := rep["telemetryIntervalOverride"].(command.Override); !ok || o.Seconds != 5 {
		t.Errorf("reported override %v", rep["telemetryIntervalOverride"])
	}
	// Its end: 55 s after the last sample.
	r.waitDeadline(55 * time.Second)
	r.clock.Advance(55 * time.Second)
	eventually(t, "the override's end", func() bool { return r.a.Status().IntervalOverride == nil })
	if st := r.a.Status(); st.TelemetryInterval != 30 {
		t.Errorf("after the override: interval %v; want the twin's 30", st.TelemetryInterval)
	}
	if o := rec.get().Override; o != nil {
		t.Errorf("saved override %+v after its end; want none", o)
	}
	r.waitDeadline(30 * time.Second)
	rep = r.waitReported("override ended", func(p map[string]any) bool { return p["telemetryInterval"] == 30.0 })
	if rep["telemetryIntervalOverride"] != nil {
		t.Errorf("reported override %v after its end; want null", rep["telemetryIntervalOverride"])
	}
}

// A command whose effect cannot be saved is not done: HandleCommand
// fails (the message stays unacknowledged), nothing changes, the failure
// is reported; delivered again once the disk works, it is carried out; a
// redelivery of a command done is not carried out twice.
func TestCommandSavedBeforeAcknowledged(t *testing.T) {
	t.Parallel()
	rec := &record{fail: errors.New("no space left on device")}
	r := newRig(t, func(c *agent.Config) { c.Commands = rec })
	r.a.SetConnected(true)
	r.start()
	if err := handle(t, r.a, "c1", `{"command":"setTelemetryInterval","seconds":5}`); err == nil {
		t.Fatal("HandleCommand = nil with the record unwritable; want an error (no PUBACK)")
	}
	st := r.a.Status()
	if st.TelemetryInterval != 10 || st.IntervalOverride != nil {
		t.Errorf("after a failed save: interval %v override %+v; want 10 and none", st.TelemetryInterval, st.IntervalOverride)
	}
	if err := handle(t, r.a, "c2", `{"command":"sendNow"}`); err == nil {
		t.Fatal("sendNow with the record unwritable = nil; want an error")
	}
	lc := r.a.Status().LastCommand
	if lc == nil || lc.MessageID != "c2" || lc.Status != command.StatusFailed || !strings.Contains(lc.Detail, "delivers the command again") {
		t.Errorf("lastCommand %+v; want c2 failed", lc)
	}

	rec.mu.Lock()
	rec.fail = nil
	rec.mu.Unlock()
	puts := r.q.Puts()
	for range 2 { // the redelivery, then a duplicate of it
		if err := handle(t, r.a, "c2", `{"command":"sendNow"}`); err != nil {
			t.Fatal(err)
		}
	}
	if got := r.q.Puts() - puts; got != 1 {
		t.Errorf("sendNow delivered twice queued %d readings; want 1", got)
	}
	if lc := rec.get().Last; lc == nil || lc.MessageID != "c2" || lc.Status != command.StatusDone {
		t.Errorf("saved outcome %+v; want c2 done", lc)
	}
}

// A rejected command is recorded and returns nil (completed: MQTT cannot
// reject, and the hub would deliver it again for ever); what it claimed
// to be is kept for the operator.
func TestRejectedCommandCompleted(t *testing.T) {
	t.Parallel()
	rec := &record{}
	r := newRig(t, func(c *agent.Config) { c.Commands = rec })
	r.start()
	if err := handle(t, r.a, "c9", `{"command":"setTelemetryInterval","seconds":0.1}`); err != nil {
		t.Fatalf("HandleCommand(rejected) = %v; want nil", err)
	}
	lc := rec.get().Last
	if lc == nil || lc.Command != "setTelemetryInterval" || lc.Status != command.StatusRejected || !strings.Contains(lc.Detail, "outside") {
		t.Errorf("saved outcome %+v", lc)
	}
	if st := r.a.Status(); st.TelemetryInterval != 10 {
		t.Errorf("interval %v after a rejected command; want 10", st.TelemetryInterval)
	}
}

// The override and the last outcome come back at a restart.
func TestCommandRecordRestored(t *testing.T) {
	t.Parallel()
	rec := &record{r: command.Record{
		Override: &command.Override{Seconds: 2, MessageID: "c1"},
		Last:     &command.Outcome{MessageID: "c1", Command: command.SetTelemetryInterval, Status: command.StatusDone},
	}}
	r := newRig(t, func(c *agent.Config) { c.Commands = rec })
	r.start()
	st := r.a.Status()
	if st.TelemetryInterval != 2 || st.TelemetryDelay != 10 || st.LastCommand == nil || st.LastCommand.MessageID != "c1" {
		t.Errorf("restored: interval %v delay %v last %+v", st.TelemetryInterval, st.TelemetryDelay, st.LastCommand)
	}
	r.waitDeadline(2 * time.Second)
}

// A message delivered again after later commands were handled (the
// connection dropped before its acknowledgement) is acknowledged and not
// carried out again, also after a restart: its old interval must not come
// back over the newer one, a sendNow not queue a second reading.
func TestCommandRedeliveredAfterOthers(t *testing.T) {
	t.Parallel()
	rec := &record{}
	r := newRig(t, func(c *agent.Config) { c.Commands = rec })
	r.a.SetConnected(true)
	r.start()
	puts := r.q.Puts()
	for _, c := range []struct{ id, body string }{
		{"a", `{"command":"setTelemetryInterval","seconds":5}`},
		{"s", `{"command":"sendNow"}`},
		{"b", `{"command":"setTelemetryInterval","seconds":7}`},
		{"a", `{"command":"setTelemetryInterval","seconds":5}`}, // duplicates
		{"s", `{"command":"sendNow"}`},
	} {
		if err := handle(t, r.a, c.id, c.body); err != nil {
			t.Fatalf("%s: %v", c.id, err)
		}
	}
	if st := r.a.Status(); st.TelemetryInterval != 7 || st.LastCommand == nil || st.LastCommand.MessageID != "b" {
		t.Errorf("after duplicates of a and s: interval %v, last %+v; want 7 and b", st.TelemetryInterval, st.LastCommand)
	}
	if got := r.q.Puts() - puts; got != 1 {
		t.Errorf("sendNow delivered twice queued %d readings; want 1", got)
	}
	if h := rec.get().Handled; len(h) != 3 {
		t.Errorf("saved handled ids %v; want a, s, b", h)
	}

	r2 := newRig(t, func(c *agent.Config) { c.Commands = rec })
	r2.start()
	if err := handle(t, r2.a, "a", `{"command":"setTelemetryInterval","seconds":5}`); err != nil {
		t.Fatal(err)
	}
	if st := r2.a.Status(); st.TelemetryInterval != 7 {
		t.Errorf("a delivered again after a restart: interval %v; want 7", st.TelemetryInterval)
	}
}
