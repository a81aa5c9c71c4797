package daemon_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/reefer/tracker/deploy/emulator/store"
	"github.com/reefer/tracker/firmware/config"
	"github.com/reefer/tracker/firmware/daemon"
	"github.com/reefer/tracker/firmware/lifecycle"
)

// checkDelivery checks that every sequence number 1..last reached the hub,
// each exactly once or as a duplicate with the same message id and body.
func checkDelivery(t *testing.T, e *emu, id string, last uint64) {
	t.Helper()
	type rec struct{ mid, body string }
	got := map[uint64][]rec{}
	for _, m := range e.telemetry(id) {
		b := decodeBody(t, m)
		got[b.Seq] = append(got[b.Seq], rec{m.MessageID, string(m.Body)})
	}
	dups := 0
	for seq := uint64(1); seq <= last; seq++ {
		rs := got[seq]
		if len(rs) == 0 {
			t.Errorf("seq %d never reached the hub", seq)
			continue
		}
		for _, r := range rs[1:] {
			dups++
			if r != rs[0] {
				t.Errorf("seq %d resent as %+v; first sent as %+v (a duplicate must repeat id and body)", seq, r, rs[0])
			}
		}
	}
	t.Logf("%d sequence numbers delivered, %d duplicates", last, dups)
}

// A hub outage, a tracker restart in the middle of it with messages queued,
// and the hub's return: nothing is lost and resends repeat id and seq.
func TestOutageAndRestartLoseNothing(t *testing.T) {
	t.Parallel()
	const id = "sensor-thl-001"
	e, cfg := enrolledTracker(t, id)
	tr := startTracker(t, cfg, id)
	hub := e.HubHost(0)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := e.WaitTelemetry(ctx, hub, id, 2); err != nil {
		t.Fatal(err)
	}

	e.stop() // the hub goes away
	eventually(t, "tracker offline", func() bool { return !tr.status().Connected })
	tr.sendNow()
	tr.sendNow()
	if st := tr.status(); st.QueueDepth < 2 {
		t.Fatalf("queue depth %d while offline; want at least 2", st.QueueDepth)
	}
	if err := tr.stop(); err != nil {
		t.Fatalf("Run = %v", err)
	}

	// Restart mid-outage: the queue and the sequence survive. The cached
	// hub took this device before, so it is retried on the prompt
	// reconnect schedule (ReconnectMax), not the long one (BackoffMax).
	tr = startTracker(t, cfg, id, func(_ *config.Config, dc *daemon.Config) {
		dc.Hub.BackoffMax = time.Hour
		dc.Hub.ReconnectMax = 100 * time.Millisecond
	})
	seq := tr.sendNow()
	st := tr.status()
	if st.QueueDepth < 3 || st.Connected {
		t.Fatalf("after restart offline: depth %d, connected %v; want >= 3 queued, offline", st.QueueDepth, st.Connected)
	}
	// The STATUS= line follows the lifecycle goroutine, which may not have
	// read the cached hub yet: wait for it rather than read a snapshot.
	eventually(t, "a STATUS saying it connects to the cached hub", func() bool {
		return tr.notes.has("STATUS=connecting to hub " + hub)
	})

	eventually(t, "8 attempts on the cached hub", func() bool {
		return countLines(tr.logs.String(), "iothub connect failed") >= 8
	})
	for _, d := range retryWaits(tr.logs.String(), "iothub connect failed") {
		if d > 100*time.Millisecond {
			t.Errorf("cached hub retried after %v; want at most ReconnectMax 100ms", d)
		}
	}

	e.start() // the hub is back, same ports and state
	eventually(t, "queue drained", func() bool {
		st := tr.status()
		return st.Connected && st.QueueDepth == 0
	})
	if last := tr.status().LastSeq; last < seq {
		t.Fatalf("last seq %d < %d", last, seq)
	}
	checkDelivery(t, e, id, tr.status().LastSeq)
}

// The queue bound drops the oldest and says so; a tracker DPS refuses
// (no enrollment yet) provisions by itself once enrolled.
func TestQueueBoundAndLateEnrollment(t *testing.T) {
	t.Parallel()
	e := startEmu(t)
	f := newFleet(t)
	const id = "sensor-thl-002"
	cfg := f.trackerConfig(t, e, id)
	cfg.Queue.MaxMessages = 3
	tr := startTracker(t, cfg, id)

	eventually(t, "refused by DPS", func() bool {
		return tr.status().Lifecycle.Phase == lifecycle.PhaseRefusedUnauthorized
	})
	for range 5 {
		tr.sendNow()
	}
	st := tr.status()
	if st.LastSeq != 6 || st.QueueDepth != 3 || st.Dropped != 3 {
		t.Fatalf("after 6 samples into a queue of 3: last seq %d, depth %d, dropped %d; want 6, 3, 3", st.LastSeq, st.QueueDepth, st.Dropped)
	}
	eventually(t, "STATUS with the drops", func() bool {
		return tr.notes.has("STATUS=refused: DPS does not accept the certificate (no enabled enrollment), retrying in") &&
			slices.ContainsFunc(tr.notes.all(), func(l string) bool { return strings.HasSuffix(l, "; 3 queued, 3 dropped; SIMULATED sensors") })
	})

	f.enroll(t, e, func(g *store.EnrollmentGroup) { g.InitialTwin = nil })
	hub := e.HubHost(0)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	msgs, err := e.WaitTelemetry(ctx, hub, id, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range msgs[:3] {
		if b := decodeBody(t, m); b.Seq != uint64(4+i) {
			t.Errorf("message %d has seq %d; want %d (the oldest three were dropped)", i, b.Seq, 4+i)
		}
	}
	eventually(t, "droppedMessages reported", func() bool { return num(reported(t, e, id)["droppedMessages"]) == 3 })
}

// A device identity deleted in the hub: the hub refuses, the tracker goes
// back to DPS, which re-creates it, and telemetry resumes with the
// enrollment's initial twin applied again.
func TestDeletedIdentityReprovisions(t *testing.T) {
	t.Parallel()
	e := startEmu(t)
	f := newFleet(t)
	f.enroll(t, e, nil)
	const id = "sensor-thl-001"
	tr := startTracker(t, f.trackerConfig(t, e, id), id)
	hub := e.HubHost(0)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := e.WaitTelemetry(ctx, hub, id, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := e.UpdateDesired(hub, id, map[string]any{"telemetryDelay": 5}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "telemetryDelay 5", func() bool { return tr.status().TelemetryDelay == 5 })
	first := tr.status().Lifecycle.LastProvisioned

	if err := e.Store().DeleteDevice(hub, id, "*"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "provisioned again", func() bool {
		st := tr.status()
		return st.Lifecycle.Phase == lifecycle.PhaseConnected && st.Connected && st.Lifecycle.LastProvisioned.After(first)
	})
	// The re-created identity starts from the initial twin again: its
	// lower $version must not be ignored as stale.
	eventually(t, "initial twin re-applied", func() bool { return tr.status().TelemetryDelay == 1 })
	n := len(e.Telemetry(hub, id))
	seq := tr.sendNow()
	eventually(t, "telemetry after re-provisioning", func() bool {
		for _, m := range e.Telemetry(hub, id)[n:] {
			if decodeBody(t, m).Seq == seq {
				return true
			}
		}
		return false
	})
	if c := countLines(tr.logs.String(), "hub refused the device"); c == 0 {
		t.Errorf("no log line saying the hub refused the device")
	}
}

// Reference flow steps 7 and 9: a disabling individual enrollment plus the
// deleted identity refuse 002 (STATUS says so, retries on the long
// schedule) while 001 carries on; deleting that enrollment re-admits 002
// without a restart.
func TestDisabledEnrollmentThenReenabled(t *testing.T) {
	t.Parallel()
	e := startEmu(t)
	f := newFleet(t)
	f.enroll(t, e, nil)
	hub := e.HubHost(0)
	start := func(id string) *tracker {
		return startTracker(t, f.trackerConfig(t, e, id), id)
	}
	t1, t2 := start("sensor-thl-001"), start("sensor-thl-002")
	for _, tr := range []*tracker{t1, t2} {
		eventually(t, tr.id+" connected", func() bool { return tr.status().Connected })
	}

	leaf2, err := certOf(t2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.EnrollDevice(leaf2, func(en *store.IndividualEnrollment) { en.ProvisioningStatus = store.StatusDisabled }); err != nil {
		t.Fatal(err)
	}
	if err := e.Store().DeleteDevice(hub, t2.id, "*"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "002 refused: disabled", func() bool {
		return t2.status().Lifecycle.Phase == lifecycle.PhaseRefusedDisabled &&
			t2.notes.has("STATUS=refused: enrollment disabled, retrying in")
	})
	if adv := t2.status().Lifecycle.Advice; adv != lifecycle.AdviceDisabled {
		t.Errorf("advice %q; want %q", adv, lifecycle.AdviceDisabled)
	}
	// 001 is unaffected.
	n := len(e.Telemetry(hub, t1.id))
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := e.WaitTelemetry(ctx, hub, t1.id, n+1); err != nil {
		t.Fatal(err)
	}
	if !t1.status().Connected {
		t.Error("001 lost its connection when 002 was disenrolled")
	}

	// Step 9: delete the disabling enrollment; the group admits 002 again.
	if err := e.Store().DeleteIndividualEnrollment(t2.id, "*"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "002 provisioned again", func() bool {
		st := t2.status()
		return st.Connected && st.Lifecycle.Phase == lifecycle.PhaseConnected
	})
	seq := t2.sendNow()
	eventually(t, "002 telemetry after re-enrollment", func() bool {
		for _, m := range e.Telemetry(hub, t2.id) {
			if decodeBody(t, m).Seq == seq {
				return true
			}
		}
		return false
	})
}
