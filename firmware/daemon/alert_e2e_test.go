package daemon_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/reefer/tracker/deploy/emulator/store"
	"github.com/reefer/tracker/firmware/config"
	"github.com/reefer/tracker/firmware/daemon"
)

// alertMessages are the alert messages among ms: IoT Hub routing selects
// them by the application property messageType = 'alert'.
func alertMessages(ms []store.Message) []store.Message {
	var out []store.Message
	for _, m := range ms {
		if m.Properties["messageType"] == "alert" {
			out = append(out, m)
		}
	}
	return out
}

// A temperature excursion against the emulator, with the hub down while
// it is confirmed: the twin lowers the threshold below the simulated
// reefer's 4 °C, the hub goes away, the alert is raised offline after the
// minimum duration and reaches the hub with messageType=alert once it is
// back; alertActive is reported; raising the threshold again clears it.
func TestTemperatureAlertThroughAnOutage(t *testing.T) {
	t.Parallel()
	e := startEmu(t)
	f := newFleet(t)
	f.enroll(t, e, nil)
	const id = "sensor-thl-021"
	tr := startTracker(t, f.trackerConfig(t, e, id), id, func(_ *config.Config, dc *daemon.Config) {
		dc.Agent.AlertCheck = 100 * time.Millisecond
	})
	hub := e.HubHost(0)
	eventually(t, "connected", func() bool { return tr.status().Connected })

	if _, err := e.UpdateDesired(hub, id, map[string]any{"temperatureAlertThreshold": -40, "temperatureAlertMinDuration": 2}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new threshold applied", func() bool { return tr.status().AlertThreshold == -40 })
	e.stop() // the hub goes away before the two seconds are up
	eventually(t, "alert raised offline", func() bool { return tr.status().AlertActive })
	if st := tr.status(); st.Connected {
		t.Fatal("still connected with the hub down")
	}
	e.start()
	eventually(t, "the alert at the hub", func() bool { return len(alertMessages(e.telemetry(id))) == 1 })
	a := alertMessages(e.telemetry(id))[0]
	var b struct {
		Alert, State string
		Threshold    float64
		Temperature  *float64
	}
	if err := json.Unmarshal(a.Body, &b); err != nil || b.Alert != "temperature" || b.State != "active" || b.Threshold != -40 || b.Temperature == nil {
		t.Errorf("alert body %s (%v)", a.Body, err)
	}
	if a.Properties["alertType"] != "temperature" || a.Properties["alertState"] != "active" {
		t.Errorf("alert properties %v", a.Properties)
	}
	eventually(t, "alertActive reported", func() bool {
		r := reported(t, e, id)
		al, _ := r["alerts"].(map[string]any)
		return r["alertActive"] == true && al["temperature"] == true
	})

	if _, err := e.UpdateDesired(hub, id, map[string]any{"temperatureAlertThreshold": 30}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the alert cleared at the hub", func() bool {
		al := alertMessages(e.telemetry(id))
		return len(al) == 2 && al[1].Properties["alertState"] == "cleared"
	})
	eventually(t, "alertActive false reported", func() bool { return reported(t, e, id)["alertActive"] == false })
}
