package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/reefer/tracker/firmware/agent"
	"github.com/reefer/tracker/firmware/agent/agenttest"
	"github.com/reefer/tracker/firmware/telemetry"
	"github.com/reefer/tracker/internal/pnp"
)

// waitReported waits for a reported patch satisfying ok and returns it.
func (r *rig) waitReported(what string, ok func(map[string]any) bool) map[string]any {
	r.t.Helper()
	var got map[string]any
	eventually(r.t, "reported "+what, func() bool {
		got = r.rep.Last()
		return got != nil && ok(got)
	})
	return got
}

func TestDesiredDelayTakesEffectAtOnce(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		value any
		want  time.Duration
	}{
		{"number", 3.0, 3 * time.Second},
		{"numeric string as in the reference flow", "1", time.Second},
		{"json.Number", json.Number("5"), 5 * time.Second},
		{"int", 7, 7 * time.Second},
		{"fractional string with spaces", " 2.5 ", 2500 * time.Millisecond},
		{"upper bound", 3600.0, time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, func(c *agent.Config) { c.TelemetryDelay = 20 * time.Minute })
			r.a.SetConnected(true)
			r.start()
			r.clock.Advance(time.Minute) // mid-interval
			if err := r.a.ApplyDesired(4, props(t, map[string]any{"telemetryDelay": tt.value, "$version": 4})); err != nil {
				t.Fatalf("ApplyDesired(%v) = %v; want nil", tt.value, err)
			}
			// The ticker is re-armed from now, not at the end of the old
			// 20 minute interval.
			r.waitDeadline(tt.want)
			r.clock.Advance(tt.want)
			r.waitPuts(2)
			r.clock.Advance(tt.want)
			r.waitPuts(3)
			eventually(t, "three sent", func() bool { return len(r.pub.Sent()) == 3 })
			got := created(r.pub.Sent())
			if want := t0.Add(time.Minute + tt.want); !got[1].Equal(want) || !got[2].Equal(want.Add(tt.want)) {
				t.Errorf("samples at %v; want %v and %v", got[1:], want, want.Add(tt.want))
			}
			rep := r.waitReported("telemetryDelay", func(p map[string]any) bool {
				return ackOf(t, p, "telemetryDelay").Code == pnp.Accepted
			})
			ack := ackOf(t, rep, "telemetryDelay")
			if v, _ := ack.Number(); v != tt.want.Seconds() || ack.Version != 4 {
				t.Errorf("telemetryDelay answered %+v; want value %v, av 4", ack, tt.want.Seconds())
			}
			if _, isString := tt.value.(string); isString != strings.Contains(ack.Description, "read as the number") {
				t.Errorf("desired %#v answered %q; a string, and only a string, is said to be read as a number", tt.value, ack.Description)
			}
			if rep["lastDesiredError"] != nil || rep["desiredVersion"] != int64(4) {
				t.Errorf("reported = %v; want no lastDesiredError and desiredVersion 4", rep)
			}
			if got := r.a.Status().TelemetryDelay; got != tt.want.Seconds() {
				t.Errorf("Status().TelemetryDelay = %v; want %v", got, tt.want.Seconds())
			}
		})
	}
}

func TestBadDesiredRejected(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		desired map[string]any
		keyword string // in the error
	}{
		{"word", map[string]any{"telemetryDelay": "soon"}, "telemetryDelay"},
		{"zero", map[string]any{"telemetryDelay": 0.0}, "outside"},
		{"too long", map[string]any{"telemetryDelay": 3601.0}, "outside"},
		{"negative string", map[string]any{"telemetryDelay": "-5"}, "outside"},
		{"NaN string", map[string]any{"telemetryDelay": "NaN"}, "finite"},
		{"bool", map[string]any{"telemetryDelay": true}, "not a number"},
		{"object", map[string]any{"telemetryDelay": map[string]any{"s": 1}}, "not a number"},
		{"empty string", map[string]any{"telemetryDelay": ""}, "not a number"},
		{"threshold too hot", map[string]any{"temperatureAlertThreshold": 150.0}, "temperatureAlertThreshold"},
		{"threshold word", map[string]any{"temperatureAlertThreshold": "warm"}, "temperatureAlertThreshold"},
		// The BME280 reads -40..85 °C; the config refuses the same range.
		{"threshold above the sensor's range", map[string]any{"temperatureAlertThreshold": 86.0}, "outside -40..85"},
		{"threshold below the sensor's range", map[string]any{"temperatureAlertThreshold": -41.0}, "outside -40..85"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, nil)
			err := r.a.ApplyDesired(2, props(t, tt.desired))
			if !errors.Is(err, agent.ErrBadDesired) || !strings.Contains(err.Error(), tt.keyword) {
				t.Fatalf("ApplyDesired(%v) = %v; want ErrBadDesired mentioning %q", tt.desired, err, tt.keyword)
			}
			st := r.a.Status()
			if st.TelemetryDelay != 10 || st.AlertThreshold != telemetry.DefaultAlertThreshold {
				t.Errorf("after a bad value: delay %v threshold %v; want 10, %v kept", st.TelemetryDelay, st.AlertThreshold, telemetry.DefaultAlertThreshold)
			}
			if !strings.Contains(st.LastDesiredError, tt.keyword) {
				t.Errorf("LastDesiredError = %q; want it to mention %q", st.LastDesiredError, tt.keyword)
			}
		})
	}
}

func TestBadDesiredReportedAndCleared(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	r.a.SetConnected(true)
	r.start()
	// One good and one bad value: the good one applies.
	err := r.a.ApplyDesired(3, props(t, map[string]any{"telemetryDelay": "abc", "temperatureAlertThreshold": 8}))
	if !errors.Is(err, agent.ErrBadDesired) {
		t.Fatalf("ApplyDesired = %v; want ErrBadDesired", err)
	}
	rep := r.waitReported("the rejection", func(p map[string]any) bool { return p["lastDesiredError"] != nil })
	// docs/protocol.md B.5: the refused value is answered 400 with the
	// value in use, the applied one 200, both against version 3.
	wantAck(t, rep, "telemetryDelay", 10, pnp.Rejected, 3, `"abc" is not a number`)
	wantAck(t, rep, "temperatureAlertThreshold", 8, pnp.Accepted, 3, "applied")
	if msg, _ := rep["lastDesiredError"].(string); !strings.Contains(msg, `"abc"`) || !strings.Contains(msg, "version 3") {
		t.Errorf("lastDesiredError = %q; want it to name the value and version", msg)
	}
	// The sampler still runs on the old interval.
	r.clock.Advance(10 * time.Second)
	r.waitPuts(2)

	if err := r.a.ApplyDesired(4, props(t, map[string]any{"telemetryDelay": 2})); err != nil {
		t.Fatalf("ApplyDesired(good) = %v", err)
	}
	rep = r.waitReported("a clean apply", func(p map[string]any) bool { return ackOf(t, p, "telemetryDelay").Version == 4 })
	if v, ok := rep["lastDesiredError"]; !ok || v != nil {
		t.Errorf("lastDesiredError = %v, present %v; want null to clear it", v, ok)
	}
	wantAck(t, rep, "telemetryDelay", 2, pnp.Accepted, 4, "applied")
	// The patch did not name the threshold: its answer stays version 3's.
	wantAck(t, rep, "temperatureAlertThreshold", 8, pnp.Accepted, 3, "applied")
}

// A stale patch never reaches the agent: the hub client drops it
// (provisioning/iothub TestDesiredSeq, TestDesiredPatchesInVersionOrder).
func TestDesiredNullRestoresConfig(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	if err := r.a.ApplyDesired(5, props(t, map[string]any{"telemetryDelay": 60, "temperatureAlertThreshold": 5})); err != nil {
		t.Fatal(err)
	}
	if st := r.a.Status(); st.TelemetryDelay != 60 || st.DesiredVersion != 5 {
		t.Errorf("after version 5: delay %v version %d; want 60, 5", st.TelemetryDelay, st.DesiredVersion)
	}
	if err := r.a.ApplyDesired(6, props(t, map[string]any{"telemetryDelay": nil, "temperatureAlertThreshold": nil})); err != nil {
		t.Fatal(err)
	}
	if st := r.a.Status(); st.TelemetryDelay != 10 || st.AlertThreshold != telemetry.DefaultAlertThreshold {
		t.Errorf("after null: delay %v threshold %v; want config's 10, %v", st.TelemetryDelay, st.AlertThreshold, telemetry.DefaultAlertThreshold)
	}
}

func TestAlertPropertyFollowsThreshold(t *testing.T) {
	t.Parallel()
	r := newRig(t, func(c *agent.Config) { c.TelemetryDelay = time.Hour })
	r.start()
	sample := func(tempC float64) string {
		t.Helper()
		r.env.Set(env(tempC))
		m, err := r.a.SendNow(context.Background())
		if err != nil {
			t.Fatalf("SendNow: %v", err)
		}
		return m.Props[telemetry.AlertProperty]
	}
	tests := []struct {
		desired any // temperatureAlertThreshold to apply first; nil: leave it
		tempC   float64
		want    string
	}{
		{nil, 30.5, "true"}, // default 30 °C
		{nil, 30, "false"},
		{nil, 29, "false"},
		{25.0, 29, "true"},
		{"-18", -17.5, "true"}, // a freezer container
		{"-18", -18.5, "false"},
	}
	for i, tt := range tests {
		if tt.desired != nil {
			if err := r.a.ApplyDesired(int64(i+1), props(t, map[string]any{"temperatureAlertThreshold": tt.desired})); err != nil {
				t.Fatalf("ApplyDesired(%v) = %v", tt.desired, err)
			}
		}
		if got := sample(tt.tempC); got != tt.want {
			t.Errorf("threshold %v, %v °C: temperatureAlert = %q; want %q", tt.desired, tt.tempC, got, tt.want)
		}
	}
}

func TestReportedProperties(t *testing.T) {
	t.Parallel()
	r := newRig(t, func(c *agent.Config) { c.ReportInterval = time.Hour })
	r.start()
	if p := r.rep.Patches(); len(p) != 0 {
		t.Fatalf("reported %v while disconnected", p)
	}
	r.a.SetConnected(true)
	rep := r.waitReported("on connect", func(map[string]any) bool { return true })
	want := map[string]any{
		"firmwareVersion":   "1.2.3",
		"telemetryInterval": 10.0,
		"sensors":           map[string]any{"env": "hardware", "gps": "simulated", "envError": nil, "gpsError": nil},
		"lastProvisioned":   nil,
	}
	for k, v := range want {
		if got, _ := json.Marshal(rep[k]); string(got) != mustJSON(t, v) {
			t.Errorf("reported[%q] = %s; want %s", k, got, mustJSON(t, v))
		}
	}
	if _, ok := rep["queueDepth"]; !ok {
		t.Errorf("reported = %v; want queueDepth", rep)
	}
	// No desired section read yet: the writable properties are not
	// answered, so the twin keeps the last run's answers.
	for _, name := range []string{agent.PropTelemetryDelay, agent.PropAlertThreshold, agent.PropAlertHysteresis, agent.PropAlertMinDuration} {
		if v, ok := rep[name]; ok {
			t.Errorf("reported %s = %v before any desired section", name, v)
		}
	}

	prov := t0.Add(-time.Hour)
	r.a.SetProvisioned(prov)
	r.waitReported("lastProvisioned", func(p map[string]any) bool { return p["lastProvisioned"] == prov.Format(time.RFC3339) })

	// Offline samples pile up; the periodic report shows the depth.
	r.a.SetConnected(false)
	r.pub.Block()
	for k := 2; k <= 4; k++ {
		r.clock.Advance(10 * time.Second)
		r.waitPuts(k)
	}
	r.a.SetConnected(true)
	r.waitReported("queue depth after reconnect", func(p map[string]any) bool {
		d, _ := p["queueDepth"].(int)
		return d > 0
	})
	r.pub.Unblock()
	n := len(r.rep.Patches())
	r.clock.Advance(time.Hour)
	eventually(t, "the periodic report", func() bool { return len(r.rep.Patches()) > n })
}

func TestReporterRetriesAfterFailure(t *testing.T) {
	t.Parallel()
	r := newRig(t, func(c *agent.Config) { c.BackoffMin, c.BackoffMax = 2*time.Second, 2*time.Second })
	r.rep.Fail(agenttest.ErrFake)
	r.a.SetConnected(true)
	r.start()
	r.waitDeadline(time.Second)
	r.rep.Fail(nil)
	r.clock.Advance(time.Second)
	r.waitReported("after retry", func(map[string]any) bool { return true })
}

func TestStatusJSON(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	r.start()
	// The fake counts the Append before the agent records the sample.
	eventually(t, "the first sample in the status", func() bool { return r.a.Status().LastSeq == 1 })
	b, err := json.Marshal(r.a.Status())
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{
		"deviceId": "sensor-thl-001", "telemetryDelay": 10.0, "queueDepth": 1.0, "connected": false,
		"running": true, "lastSample": t0.Format(time.RFC3339), "lastSeq": 1.0,
		"sources": map[string]any{"env": "hardware", "gps": "simulated"},
	} {
		if g, w := mustJSON(t, got[k]), mustJSON(t, want); g != w {
			t.Errorf("status[%q] = %s; want %s", k, g, w)
		}
	}
	if _, ok := got["lastSend"]; ok {
		t.Errorf("status has lastSend before any send: %s", b)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestApplyTwinIsAuthoritative(t *testing.T) {
	t.Parallel()
	r := newRig(t, func(c *agent.Config) { c.TelemetryDelay = 20 * time.Second })
	if err := r.a.ApplyDesired(7, props(t, map[string]any{"telemetryDelay": 5.0, "temperatureAlertThreshold": 8.0})); err != nil {
		t.Fatal(err)
	}
	// A re-created identity restarts at a lower version; its full twin
	// still applies, and what it lacks returns to the configured value.
	if err := r.a.ApplyTwin(2, props(t, map[string]any{"telemetryDelay": "1", "$version": 2})); err != nil {
		t.Fatalf("ApplyTwin = %v; want nil", err)
	}
	st := r.a.Status()
	if st.TelemetryDelay != 1 || st.AlertThreshold != telemetry.DefaultAlertThreshold || st.DesiredVersion != 2 {
		t.Errorf("after ApplyTwin(2): delay %v, threshold %v, version %d; want 1, %v, 2",
			st.TelemetryDelay, st.AlertThreshold, st.DesiredVersion, telemetry.DefaultAlertThreshold)
	}
	if err := r.a.ApplyTwin(3, props(t, map[string]any{})); err != nil {
		t.Fatal(err)
	}
	if st := r.a.Status(); st.TelemetryDelay != 20 {
		t.Errorf("twin without telemetryDelay: delay %v; want the configured 20", st.TelemetryDelay)
	}
}

// props is desired properties as the hub client hands them over: a JSON
// object.
func props(t *testing.T, m map[string]any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Desired properties that are not a JSON object are refused whole.
func TestDesiredNotAnObject(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	for _, body := range []string{`[1]`, `"x"`, `{`} {
		if err := r.a.ApplyDesired(2, json.RawMessage(body)); !errors.Is(err, agent.ErrBadDesired) {
			t.Errorf("ApplyDesired(%s) = %v; want ErrBadDesired", body, err)
		}
	}
	if st := r.a.Status(); st.TelemetryDelay != 10 || st.DesiredVersion != 0 {
		t.Errorf("after refused bodies: delay %v, version %d; want 10, 0", st.TelemetryDelay, st.DesiredVersion)
	}
	if err := r.a.ApplyDesired(3, json.RawMessage(`null`)); err != nil {
		t.Errorf("ApplyDesired(null) = %v; want nil (nothing to change)", err)
	}
}

// ackOf reads the reported answer to a writable property; a member that is
// absent reads as the zero Ack, one that is not an acknowledgement fails.
func ackOf(t *testing.T, rep map[string]any, name string) pnp.Ack {
	t.Helper()
	v, ok := rep[name]
	if !ok {
		return pnp.Ack{}
	}
	a, err := pnp.From(v)
	if err != nil {
		t.Fatalf("reported %s: %v", name, err)
	}
	return a
}

func wantAck(t *testing.T, rep map[string]any, name string, value float64, code int, version int64, ad string) {
	t.Helper()
	a := ackOf(t, rep, name)
	if v, ok := a.Number(); !ok || v != value || a.Code != code || a.Version != version || !strings.Contains(a.Description, ad) {
		t.Errorf("reported %s = %+v; want value %v, ac %d, av %d, ad mentioning %q", name, a, value, code, version, ad)
	}
}

// The answers to the writable properties (docs/protocol.md B.5) after the
// twin read at start-up and after patches: 200 with the value applied, 400
// with the value kept, 203 with av 0 for no desired value. (Stale patches
// never reach the agent: the hub client drops them.)
func TestWritablePropertiesAcknowledged(t *testing.T) {
	t.Parallel()
	r := newRig(t, func(c *agent.Config) { c.TelemetryDelay = 20 * time.Second })
	r.a.SetConnected(true)
	r.start()
	// Start-up: the twin was changed while the tracker was off (version 9).
	if err := r.a.ApplyTwin(9, props(t, map[string]any{"telemetryDelay": 2.0004, "temperatureAlertThreshold": "hot",
		"temperatureAlertMinDuration": 90, "somethingElse": 1})); !errors.Is(err, agent.ErrBadDesired) {
		t.Fatalf("ApplyTwin = %v; want ErrBadDesired for the threshold", err)
	}
	rep := r.waitReported("the twin's answers", func(p map[string]any) bool { return ackOf(t, p, "telemetryDelay").Version == 9 })
	wantAck(t, rep, "telemetryDelay", 2, pnp.Accepted, 9, "2.0004 rounded to the millisecond: 2")
	wantAck(t, rep, "temperatureAlertThreshold", telemetry.DefaultAlertThreshold, pnp.Rejected, 9, `"hot" is not a number`)
	wantAck(t, rep, "temperatureAlertHysteresis", telemetry.DefaultAlertHysteresis, pnp.SetByDevice, 0, "configured value")
	wantAck(t, rep, "temperatureAlertMinDuration", 90, pnp.Accepted, 9, "applied")
	if _, ok := rep["somethingElse"]; ok {
		t.Errorf("reported %v: answered a property the tracker does not have", rep)
	}

	// A patch: a deleted value returns to the configured one (203, av 0),
	// an out-of-bounds one is refused with the value in use.
	if err := r.a.ApplyDesired(10, props(t, map[string]any{"telemetryDelay": nil, "temperatureAlertHysteresis": 11})); !errors.Is(err, agent.ErrBadDesired) {
		t.Fatalf("ApplyDesired = %v; want ErrBadDesired", err)
	}
	rep = r.waitReported("the patch's answers", func(p map[string]any) bool { return ackOf(t, p, "temperatureAlertHysteresis").Version == 10 })
	wantAck(t, rep, "telemetryDelay", 20, pnp.SetByDevice, 0, "configured value")
	wantAck(t, rep, "temperatureAlertHysteresis", telemetry.DefaultAlertHysteresis, pnp.Rejected, 10, "outside 0..10")
	wantAck(t, rep, "temperatureAlertMinDuration", 90, pnp.Accepted, 9, "applied")

	// A patch that does not name a property leaves its answer alone.
	if err := r.a.ApplyDesired(11, props(t, map[string]any{"temperatureAlertThreshold": -20})); err != nil {
		t.Fatal(err)
	}
	rep = r.waitReported("version 11", func(p map[string]any) bool { return ackOf(t, p, "temperatureAlertThreshold").Version == 11 })
	wantAck(t, rep, "telemetryDelay", 20, pnp.SetByDevice, 0, "configured value")
	wantAck(t, rep, "temperatureAlertThreshold", -20, pnp.Accepted, 11, "applied")
}
