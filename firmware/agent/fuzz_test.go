package agent_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/reefer/tracker/drivers"
	"github.com/reefer/tracker/firmware/agent"
	"github.com/reefer/tracker/firmware/agent/agenttest"
	"github.com/reefer/tracker/firmware/telemetry"
)

// FuzzApplyDesired: the desired properties are written by whoever holds a
// service key, and reach the agent as the JSON the hub sent (docs/protocol.md B.5).
// Whatever the document, version and kind (patch or full twin read):
//   - nothing panics, and every error wraps ErrBadDesired;
//   - the applied telemetryDelay and threshold stay within their bounds;
//   - a value that was rejected, or not sent in a patch, leaves the
//     applied value as it was;
//   - the reported desired version is the one applied last (the hub client
//     orders versions and drops stale ones; its FuzzDesiredSequence checks that).
//
// Each input is applied to an agent that has already applied the seed
// document {"telemetryDelay": 5, "temperatureAlertThreshold": 25} at
// version 10. Seeds: testdata/fuzz/FuzzApplyDesired/.
func FuzzApplyDesired(f *testing.F) {
	f.Add([]byte(`{"telemetryDelay":3}`), int64(11), false)
	f.Add([]byte(`{"telemetryDelay":"1","temperatureAlertThreshold":null}`), int64(12), false)
	f.Add([]byte(`{"telemetryDelay":0,"temperatureAlertThreshold":1e400}`), int64(11), true)
	f.Add([]byte(`{"telemetryDelay":[1],"temperatureAlertThreshold":{"c":3}}`), int64(9), false)
	f.Fuzz(func(t *testing.T, doc []byte, version int64, full bool) {
		var sent map[string]json.RawMessage // which properties the document names, exactly
		_ = json.Unmarshal(doc, &sent)
		a := newFuzzAgent(t)
		before := a.Status()

		var err error
		if full {
			err = a.ApplyTwin(version, doc)
		} else {
			err = a.ApplyDesired(version, doc)
		}
		after := a.Status()

		if err != nil && !errors.Is(err, agent.ErrBadDesired) {
			t.Fatalf("error %v does not wrap ErrBadDesired", err)
		}
		if d := after.TelemetryDelay; d < telemetry.MinDelay.Seconds() || d > telemetry.MaxDelay.Seconds() {
			t.Fatalf("%s: telemetryDelay %v s outside its bounds", doc, d)
		}
		if th := after.AlertThreshold; th < telemetry.MinAlertThreshold || th > telemetry.MaxAlertThreshold {
			t.Fatalf("%s: threshold %v outside its bounds", doc, th)
		}

		// A document refused whole (not an object) leaves the version as it was.
		if v := after.DesiredVersion; v != version && (err == nil || v != before.DesiredVersion) {
			t.Fatalf("desired version %d after applying %d (was %d, %v)", v, version, before.DesiredVersion, err)
		}
		kept := func(key string) bool {
			_, named := sent[key]
			rejected := err != nil && (strings.Contains(err.Error(), key) || sent == nil)
			return rejected || (!full && !named)
		}
		if kept(agent.PropTelemetryDelay) && after.TelemetryDelay != before.TelemetryDelay {
			t.Fatalf("%s: telemetryDelay changed from %v to %v (%v)", doc, before.TelemetryDelay, after.TelemetryDelay, err)
		}
		if kept(agent.PropAlertThreshold) && after.AlertThreshold != before.AlertThreshold {
			t.Fatalf("%s: threshold changed from %v to %v (%v)", doc, before.AlertThreshold, after.AlertThreshold, err)
		}
	})
}

func newFuzzAgent(t *testing.T) *agent.Agent {
	t.Helper()
	a, err := agent.New(agent.Config{
		DeviceID:  "sensor-thl-001",
		Env:       agenttest.NewSensor(drivers.Env{TemperatureC: 4}),
		Queue:     &agenttest.Queue{},
		Publisher: agenttest.NewPublisher(),
		Clock:     agenttest.NewClock(time.Date(2026, 12, 3, 18, 0, 0, 0, time.UTC)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.ApplyDesired(10, json.RawMessage(`{"telemetryDelay":5,"temperatureAlertThreshold":25}`)); err != nil {
		t.Fatal(err)
	}
	return a
}
