package daemon_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/reefer/tracker/deploy/emulator/store"
	"github.com/reefer/tracker/drivers"
)

// In hardware mode a GPS port that does not exist no longer ends the
// tracker: the temperature still goes out, every message says the GPS is
// missing and why, and STATUS=, the reported properties and getStatus
// (with doctor's FAIL and fix) report it.
func TestMissingGPSPortKeepsSending(t *testing.T) {
	t.Parallel()
	const id = "sensor-thl-001"
	e, cfg := enrolledTracker(t, id)
	cfg.Sensors.GPS.Mode = drivers.HardwareOnly
	cfg.Sensors.GPS.Port = filepath.Join(t.TempDir(), "ttyNoGPS")
	tr := startTracker(t, cfg, id)
	hub := e.HubHost(0)

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	msgs, err := e.WaitTelemetry(ctx, hub, id, 3) // two readings and the gpsLost alert
	if err != nil {
		t.Fatal(err)
	}
	var readings []store.Message
	for _, m := range msgs {
		if m.Properties["messageType"] != "alert" {
			readings = append(readings, m)
		}
	}
	if al := alertMessages(msgs); len(al) != 1 || al[0].Properties["alertType"] != "gpsLost" || al[0].Properties["alertState"] != "active" {
		t.Errorf("alerts %v; want one gpsLost active", al)
	}
	msgs = readings
	var b struct {
		Temperature *float64 `json:"temperature"`
		Latitude    *float64 `json:"latitude"`
		Source      struct {
			Env, GPS, GPSError string
		} `json:"source"`
	}
	if err := json.Unmarshal(msgs[1].Body, &b); err != nil {
		t.Fatal(err)
	}
	if b.Temperature == nil || b.Latitude != nil || b.Source.GPS != "missing" || !strings.Contains(b.Source.GPSError, "ttyNoGPS") {
		t.Errorf("message %s; want a temperature, no position, source.gps missing naming the port", msgs[1].Body)
	}
	eventually(t, "STATUS= saying the GPS is missing", func() bool {
		for _, l := range tr.notes.all() {
			if strings.HasPrefix(l, "STATUS=connected") && strings.HasSuffix(l, "; GPS MISSING") {
				return true
			}
		}
		return false
	})
	eventually(t, "reported sensors.gpsError", func() bool {
		s, _ := reported(t, e, id)["sensors"].(map[string]any)
		msg, _ := s["gpsError"].(string)
		return s["gps"] == "missing" && strings.Contains(msg, "ttyNoGPS")
	})

	res, err := e.InvokeMethod(ctx, hub, id, store.MethodRequest{MethodName: "getStatus", ResponseTimeoutInSeconds: 10})
	if err != nil || res.Status != 200 {
		t.Fatalf("getStatus = %+v, %v", res, err)
	}
	var st struct {
		Sources struct{ GPS, GPSError string } `json:"sources"`
		Doctor  struct {
			Checks []struct{ Name, Status, Detail, Fix string } `json:"checks"`
		} `json:"doctor"`
	}
	if err := json.Unmarshal(res.Payload, &st); err != nil {
		t.Fatal(err)
	}
	if st.Sources.GPS != "missing" || !strings.Contains(st.Sources.GPSError, "ttyNoGPS") {
		t.Errorf("getStatus sources = %+v; want gps missing with the reason", st.Sources)
	}
	found := false
	for _, c := range st.Doctor.Checks {
		if c.Name == "gps" {
			found = true
			if c.Status != "FAIL" || !strings.Contains(c.Detail, "ttyNoGPS") || c.Fix == "" {
				t.Errorf("getStatus doctor gps check = %+v; want FAIL naming the port, with a fix", c)
			}
		}
	}
	if !found {
		t.Errorf("getStatus doctor checks %+v; want a gps check", st.Doctor.Checks)
	}
	if err := tr.stop(); err != nil {
		t.Errorf("Run = %v; want nil", err)
	}
}
