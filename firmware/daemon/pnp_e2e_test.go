package daemon_test

import (
	"strings"
	"testing"

	"github.com/reefer/tracker/firmware/telemetry"
	"github.com/reefer/tracker/internal/pnp"
)

// The writable properties as IoT Central and IoT Explorer read them
// (docs/protocol.md B.5, docs/model.md): on the emulator's twin, each is a
// Plug and Play acknowledgement whose av is the desired $version it
// answers: at start-up (the enrollment's initial twin), after a desired
// patch, for a refused value (400, the value in use kept), and after a
// restart for a change made while the tracker was off.
func TestWritablePropertiesAcknowledgedOnTheTwin(t *testing.T) {
	t.Parallel()
	const id = "sensor-thl-015"
	e, cfg := enrolledTracker(t, id) // initial twin {"telemetryDelay":1}
	tr := startTracker(t, cfg, id)
	hub := e.HubHost(0)
	// answered waits until every named property's answer has av version,
	// then returns the reported section.
	answered := func(what string, version int64, names ...string) map[string]any {
		t.Helper()
		var r map[string]any
		eventually(t, what, func() bool {
			r = reported(t, e, id)
			for _, n := range names {
				if ack(r, n).Version != version {
					return false
				}
			}
			return true
		})
		return r
	}
	check := func(r map[string]any, name string, value float64, code int, ad string) {
		t.Helper()
		a := ack(r, name)
		if f, ok := a.Number(); !ok || f != value || a.Code != code || !strings.Contains(a.Description, ad) {
			t.Errorf("reported %s = %v; want value %v, ac %d, ad mentioning %q", name, r[name], value, code, ad)
		}
	}

	// Start-up: the initial twin's telemetryDelay accepted against its
	// version; the others have no desired value: the configured ones, 203.
	// The identity exists once the tracker has provisioned: wait for the
	// answer, then hold it to the twin's desired version.
	eventually(t, "the initial twin acknowledged", func() bool {
		return ack(reported(t, e, id), "telemetryDelay").Code == pnp.Accepted
	})
	tw, err := e.Store().GetTwin(hub, id)
	if err != nil {
		t.Fatal(err)
	}
	v := tw.Properties.Desired.Version
	r := answered("the initial twin acknowledged at its version", v, "telemetryDelay")
	check(r, "telemetryDelay", 1, pnp.Accepted, "applied")
	for name, def := range map[string]float64{"temperatureAlertThreshold": telemetry.DefaultAlertThreshold,
		"temperatureAlertHysteresis": telemetry.DefaultAlertHysteresis, "temperatureAlertMinDuration": telemetry.DefaultAlertMinDuration.Seconds()} {
		if a := ack(r, name); a.Code != pnp.SetByDevice || a.Version != 0 || acked(r, name) != def {
			t.Errorf("reported %s = %v; want the configured %v, ac 203, av 0", name, r[name], def)
		}
	}

	// A desired patch, as an operator's "telemetryDelay": "2" (a string).
	v, err = e.UpdateDesired(hub, id, map[string]any{"telemetryDelay": "2", "temperatureAlertHysteresis": 0.5})
	if err != nil {
		t.Fatal(err)
	}
	r = answered("the patch acknowledged", v, "telemetryDelay", "temperatureAlertHysteresis")
	check(r, "telemetryDelay", 2, pnp.Accepted, `the string "2" read as the number 2`)
	check(r, "temperatureAlertHysteresis", 0.5, pnp.Accepted, "applied")

	// A refused value: 400, the value in use, the reason.
	v, err = e.UpdateDesired(hub, id, map[string]any{"temperatureAlertThreshold": 500})
	if err != nil {
		t.Fatal(err)
	}
	r = answered("the refusal acknowledged", v, "temperatureAlertThreshold")
	check(r, "temperatureAlertThreshold", telemetry.DefaultAlertThreshold, pnp.Rejected, "outside -40..85")
	if a := ack(r, "telemetryDelay"); a.Version >= v {
		t.Errorf("telemetryDelay answered for version %d; the patch %d did not name it", a.Version, v)
	}

	// Off; the operator changes the interval meanwhile. Back on, the twin
	// read answers every writable property against the current version.
	if err := tr.stop(); err != nil {
		t.Fatal(err)
	}
	v, err = e.UpdateDesired(hub, id, map[string]any{"telemetryDelay": 3})
	if err != nil {
		t.Fatal(err)
	}
	startTracker(t, cfg, id)
	r = answered("the twin read after the restart acknowledged", v, "telemetryDelay", "temperatureAlertThreshold", "temperatureAlertHysteresis")
	check(r, "telemetryDelay", 3, pnp.Accepted, "applied")
	check(r, "temperatureAlertThreshold", telemetry.DefaultAlertThreshold, pnp.Rejected, "outside -40..85")
	check(r, "temperatureAlertHysteresis", 0.5, pnp.Accepted, "applied")
	if a := ack(r, "temperatureAlertMinDuration"); a.Code != pnp.SetByDevice || a.Version != 0 {
		t.Errorf("reported temperatureAlertMinDuration = %v; want ac 203, av 0 (no desired value)", r["temperatureAlertMinDuration"])
	}
	if num(r["desiredVersion"]) != float64(v) {
		t.Errorf("reported desiredVersion = %v; want %d", r["desiredVersion"], v)
	}
}
