package daemon_test

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/reefer/tracker/deploy/emulator/store"
	"github.com/reefer/tracker/firmware/lifecycle"
	"github.com/reefer/tracker/internal/pnp"
)

// Reference flow steps 3–6: the tracker provisions through DPS, reads the
// enrollment's initial twin, sends telemetry with the reference message's
// properties, obeys a desired telemetryDelay change and reports it, answers
// the direct methods, and rejects bad desired values without crashing.
func TestProvisionTelemetryTwinMethods(t *testing.T) {
	t.Parallel()
	e := startEmu(t)
	f := newFleet(t)
	f.enroll(t, e, nil)
	const id = "sensor-thl-001"
	tr := startTracker(t, f.trackerConfig(t, e, id), id)
	hub := e.HubHost(0)

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	msgs, err := e.WaitTelemetry(ctx, hub, id, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs[:2] {
		sp := m.SystemProperties
		for k, want := range map[string]string{"content-type": "application/json", "content-encoding": "utf-8", "message-id": m.MessageID} {
			if sp[k] != want {
				t.Errorf("message %s: system property %s = %q; want %q", m.MessageID, k, sp[k], want)
			}
		}
		if ct, err := time.Parse(time.RFC3339, sp["iothub-creation-time-utc"]); err != nil || time.Since(ct) > time.Minute {
			t.Errorf("message %s: creation time %q (%v); want a recent time", m.MessageID, sp["iothub-creation-time-utc"], err)
		}
		b := decodeBody(t, m)
		if want := id + "-" + strconv.FormatUint(b.Seq, 10); m.MessageID != want {
			t.Errorf("message id = %q; want %q (device id and seq)", m.MessageID, want)
		}
		if got := m.Properties["temperatureAlert"]; got != "false" {
			t.Errorf("message %s: temperatureAlert = %q; want \"false\" for a %.1f °C reefer", m.MessageID, got, b.Temperature)
		}
		if b.Source.Env != "simulated" || b.Source.GPS != "simulated" {
			t.Errorf("message %s: source = %+v; want both simulated", m.MessageID, b.Source)
		}
	}
	// The configured 3600 s gave way to the initial twin's telemetryDelay 1.
	eventually(t, "telemetryDelay 1 acknowledged", func() bool {
		a := ack(reported(t, e, id), "telemetryDelay")
		return a.Code == pnp.Accepted && acked(reported(t, e, id), "telemetryDelay") == 1
	})
	if st := tr.status(); st.TelemetryDelay != 1 || st.Lifecycle.Phase != lifecycle.PhaseConnected || st.Lifecycle.Hub != hub {
		t.Errorf("status: delay %v, phase %s, hub %s; want 1, connected, %s", st.TelemetryDelay, st.Lifecycle.Phase, st.Lifecycle.Hub, hub)
	}
	// READY=1 and STATUS= come from their own goroutines after the
	// connection: wait for them.
	eventually(t, "READY=1 and a connected STATUS", func() bool {
		return tr.notes.has("READY=1") && tr.notes.has("STATUS=connected to hub "+hub+" as "+id)
	})

	// Step 6, plus the alert threshold: everything above -40 °C alerts now.
	v, err := e.UpdateDesired(hub, id, map[string]any{"telemetryDelay": 2, "temperatureAlertThreshold": -40})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "telemetryDelay 2 acknowledged", func() bool {
		r := reported(t, e, id)
		return ack(r, "telemetryDelay").Version == v && acked(r, "telemetryDelay") == 2 &&
			ack(r, "temperatureAlertThreshold").Version == v && acked(r, "temperatureAlertThreshold") == -40
	})
	n := len(e.Telemetry(hub, id))
	msgs, err = e.WaitTelemetry(ctx, hub, id, n+2)
	if err != nil {
		t.Fatal(err)
	}
	last, prev := msgs[n+1], msgs[n]
	if last.Properties["temperatureAlert"] != "true" {
		t.Errorf("after threshold -40: temperatureAlert = %q; want \"true\"", last.Properties["temperatureAlert"])
	}
	if gap := last.EnqueuedTime.Sub(prev.EnqueuedTime.Time); gap < 1500*time.Millisecond || gap > 3500*time.Millisecond {
		t.Errorf("messages %s and %s are %v apart; want about 2 s", prev.MessageID, last.MessageID, gap)
	}

	// Bad values: rejected, reported, previous values kept, no crash.
	if _, err := e.UpdateDesired(hub, id, map[string]any{"telemetryDelay": "fast", "temperatureAlertThreshold": 500}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "lastDesiredError reported", func() bool {
		s, _ := reported(t, e, id)["lastDesiredError"].(string)
		return strings.Contains(s, "telemetryDelay") && strings.Contains(s, "temperatureAlertThreshold")
	})
	if r := reported(t, e, id); acked(r, "telemetryDelay") != 2 || acked(r, "temperatureAlertThreshold") != -40 ||
		ack(r, "telemetryDelay").Code != pnp.Rejected || ack(r, "temperatureAlertThreshold").Code != pnp.Rejected {
		t.Errorf("after bad values reported %v, %v; want 2, -40 kept (ac 400)", r["telemetryDelay"], r["temperatureAlertThreshold"])
	}

	// Direct methods.
	res, err := e.InvokeMethod(ctx, hub, id, store.MethodRequest{MethodName: "getStatus", ResponseTimeoutInSeconds: 10})
	if err != nil || res.Status != 200 {
		t.Fatalf("getStatus = %+v, %v", res, err)
	}
	var st struct {
		DeviceID  string  `json:"deviceId"`
		Delay     float64 `json:"telemetryDelay"`
		Connected bool    `json:"connected"`
		Lifecycle struct {
			Phase string `json:"phase"`
			Hub   string `json:"hub"`
		} `json:"lifecycle"`
		Doctor struct {
			Checks []struct{ Name, Status string } `json:"checks"`
		} `json:"doctor"`
	}
	if err := json.Unmarshal(res.Payload, &st); err != nil || st.DeviceID != id || st.Delay != 2 || !st.Connected ||
		st.Lifecycle.Phase != "connected" || st.Lifecycle.Hub != hub {
		t.Errorf("getStatus payload %s (%v); want device, delay 2, connected, lifecycle connected to %s", res.Payload, err, hub)
	}
	// The same facts as tracker doctor: the certificate and queue checks
	// pass for a running, connected tracker.
	checks := map[string]string{}
	for _, c := range st.Doctor.Checks {
		checks[c.Name] = c.Status
	}
	if checks["certificate id"] != "OK" || checks["key file"] != "OK" || checks["queue"] != "OK" {
		t.Errorf("getStatus doctor checks = %v; want certificate id, key file and queue OK", checks)
	}
	res, err = e.InvokeMethod(ctx, hub, id, store.MethodRequest{MethodName: "sendNow", ResponseTimeoutInSeconds: 10})
	if err != nil || res.Status != 200 {
		t.Fatalf("sendNow = %+v, %v", res, err)
	}
	var sn struct {
		MessageID string `json:"messageId"`
	}
	if err := json.Unmarshal(res.Payload, &sn); err != nil || !strings.HasPrefix(sn.MessageID, id+"-") {
		t.Fatalf("sendNow payload %s (%v)", res.Payload, err)
	}
	eventually(t, "sendNow's message", func() bool {
		for _, m := range e.Telemetry(hub, id) {
			if m.MessageID == sn.MessageID {
				return true
			}
		}
		return false
	})
	if err := tr.stop(); err != nil {
		t.Errorf("Run = %v; want nil after cancel", err)
	}
	if !tr.notes.has("STOPPING=1") {
		t.Errorf("notifications %q; want STOPPING=1", tr.notes.all())
	}
}
