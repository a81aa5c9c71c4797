package daemon_test

import (
	"strings"
	"testing"

	"github.com/reefer/tracker/deploy/emulator/store"
)

// lastCommand is the lastCommand reported property.
func lastCommand(t *testing.T, e *emu, id string) map[string]any {
	t.Helper()
	m, _ := reported(t, e, id)["lastCommand"].(map[string]any)
	return m
}

// pendingC2D is how many C2D messages the hub still holds for id: sent
// but not completed by a PUBACK.
func pendingC2D(t *testing.T, e *emu, id string) int {
	t.Helper()
	p, err := e.Store().PendingC2D(e.HubHost(0), id)
	if err != nil {
		t.Fatal(err)
	}
	return len(p)
}

// Cloud-to-device commands (docs/commands.md) against the emulator: each
// is carried out and its outcome reported in lastCommand before the
// message is completed; a malformed or unknown command is reported
// rejected and completed (never delivered again); an interval override
// outlives a restart; commands sent while the tracker is off wait in the
// hub and are carried out when it connects again; a timed override ends
// and the twin's telemetryDelay applies again.
func TestCloudToDeviceCommands(t *testing.T) {
	t.Parallel()
	e := startEmu(t)
	f := newFleet(t)
	f.enroll(t, e, nil) // initial twin telemetryDelay 1
	const id = "sensor-thl-001"
	cfg := f.trackerConfig(t, e, id)
	tr := startTracker(t, cfg, id)
	hub := e.HubHost(0)
	eventually(t, "connected with telemetryDelay 1", func() bool {
		st := tr.status()
		return st.Connected && st.TelemetryInterval == 1
	})

	send := func(body string) string {
		t.Helper()
		mid, err := e.SendC2D(hub, id, []byte(body), nil)
		if err != nil {
			t.Fatalf("SendC2D %s: %v", body, err)
		}
		return mid
	}
	// outcome waits for the command mid to be reported and completed.
	outcome := func(mid string) map[string]any {
		t.Helper()
		var lc map[string]any
		eventually(t, "outcome of "+mid+" reported and the message completed", func() bool {
			lc = lastCommand(t, e, id)
			return lc["messageId"] == mid && pendingC2D(t, e, id) == 0
		})
		return lc
	}

	// sendNow: a reading queued at once, its id in the outcome.
	lc := outcome(send(`{"command":"sendNow"}`))
	detail, _ := lc["detail"].(string)
	if lc["command"] != "sendNow" || lc["status"] != "done" || !strings.Contains(detail, "reading queued as "+id+"-") {
		t.Errorf("sendNow outcome %v", lc)
	}
	queuedID := strings.Fields(strings.TrimPrefix(detail, "reading queued as "))[0]
	eventually(t, "the commanded reading at the hub", func() bool {
		for _, m := range e.Telemetry(hub, id) {
			if m.MessageID == queuedID {
				return true
			}
		}
		return false
	})

	// Malformed and unknown commands: rejected, reported, completed.
	for body, why := range map[string]string{
		`reboot please`:                         "not a JSON command object",
		`{"command":"selfDestruct"}`:            `unknown command "selfDestruct"`,
		`{"command":"setTelemetryInterval"}`:    `needs "seconds"`,
		`{"command":"sendNow","seconds":5}`:     "takes no parameters",
		`{"command":"flushQueue","extra":true}`: "unknown field",
	} {
		lc := outcome(send(body))
		if d, _ := lc["detail"].(string); lc["status"] != "rejected" || !strings.Contains(d, why) {
			t.Errorf("%s: outcome %v; want rejected saying %q", body, lc, why)
		}
	}
	if n := countLines(tr.logs.String(), "command rejected"); n != 5 {
		t.Errorf("%d 'command rejected' log lines; want 5", n)
	}
	if st := tr.status(); st.TelemetryInterval != 1 {
		t.Errorf("after rejected commands the interval is %vs; want 1 (unchanged)", st.TelemetryInterval)
	}

	// An override until further notice, reported, in force over the twin.
	outcome(send(`{"command":"setTelemetryInterval","seconds":2}`))
	eventually(t, "telemetryInterval 2 reported with the override", func() bool {
		r := reported(t, e, id)
		o, _ := r["telemetryIntervalOverride"].(map[string]any)
		return num(r["telemetryInterval"]) == 2 && acked(r, "telemetryDelay") == 1 && o != nil && num(o["seconds"]) == 2 && o["until"] == nil
	})

	// Off: the override is on disk. Commands sent meanwhile wait in the hub.
	if err := tr.stop(); err != nil {
		t.Fatal(err)
	}
	flush := send(`{"command":"flushQueue"}`)
	clear := send(`{"command":"clearTelemetryInterval"}`)
	if n := pendingC2D(t, e, id); n != 2 {
		t.Fatalf("%d C2D messages pending while the tracker is off; want 2", n)
	}
	tr = startTracker(t, cfg, id)
	if countLines(tr.logs.String(), "telemetry interval override restored", "seconds=2") != 1 {
		t.Error("the override was not restored at the restart")
	}
	eventually(t, "both offline commands carried out", func() bool {
		return pendingC2D(t, e, id) == 0 && countLines(tr.logs.String(), "command done", flush) == 1 &&
			countLines(tr.logs.String(), "command done", clear) == 1
	})
	// Delivery is at least once: a connection lost before the PUBACK brings
	// a command back after later ones were handled. The same message id
	// again is acknowledged as a duplicate, not carried out a second time.
	if _, err := e.Store().EnqueueC2D(hub, id, store.C2DMessage{MessageID: flush, Body: []byte(`{"command":"flushQueue"}`)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the redelivered flushQueue acknowledged as a duplicate", func() bool {
		return pendingC2D(t, e, id) == 0 && countLines(tr.logs.String(), "command duplicate", flush) == 1
	})
	if n := countLines(tr.logs.String(), "command done", flush); n != 1 {
		t.Errorf("flushQueue delivered twice: %d 'command done' lines; want 1", n)
	}
	eventually(t, "override gone, the twin's 1 s in force and reported", func() bool {
		r := reported(t, e, id)
		_, has := r["telemetryIntervalOverride"]
		return !has && num(r["telemetryInterval"]) == 1 && tr.status().TelemetryInterval == 1
	})

	// A timed override ends by itself; the twin's telemetryDelay returns.
	outcome(send(`{"command":"setTelemetryInterval","seconds":3,"durationSeconds":2}`))
	if st := tr.status(); st.TelemetryInterval != 3 || st.IntervalOverride == nil || st.IntervalOverride.Until.IsZero() {
		t.Errorf("timed override: status interval %v, override %+v", st.TelemetryInterval, st.IntervalOverride)
	}
	eventually(t, "timed override ended", func() bool {
		return tr.status().TelemetryInterval == 1 && tr.status().IntervalOverride == nil &&
			countLines(tr.logs.String(), "telemetry interval override ended") == 1
	})
	eventually(t, "its end reported", func() bool {
		_, has := reported(t, e, id)["telemetryIntervalOverride"]
		return !has && num(reported(t, e, id)["telemetryInterval"]) == 1
	})
}
