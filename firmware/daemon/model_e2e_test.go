package daemon_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/reefer/tracker/deploy/emulator/store"
	"github.com/reefer/tracker/firmware/config"
	"github.com/reefer/tracker/firmware/daemon"
	"github.com/reefer/tracker/firmware/model"
	"github.com/reefer/tracker/firmware/telemetry"
	"github.com/reefer/tracker/provisioning/dps"
)

// The Plug and Play model against the real tracker on the emulator: it
// registers with the model id in the DPS payload, the hub shows the id
// announced at CONNECT on the twin, every telemetry message
// and the whole reported section fit the model and use every declared
// telemetry and property, and every declared command is answered (an
// undeclared one is not).
func TestTrackerMatchesItsModel(t *testing.T) {
	t.Parallel()
	in, err := model.Load()
	if err != nil {
		t.Fatal(err)
	}
	const id = "sensor-thl-014"
	e, cfg := enrolledTracker(t, id)
	// A damaged queue file makes the tracker report queueRecovered.
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.StateDir, daemon.QueueFile), bytes.Repeat([]byte{0xde, 0xad}, 8<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	// What the tracker hands the DPS client (whose tests show the payload
	// on the wire, docs/protocol.md A.3).
	var payloads sync.Map
	startTracker(t, cfg, id, func(_ *config.Config, dc *daemon.Config) {
		dc.Lifecycle.Register = func(ctx context.Context, c dps.Config) (*dps.Result, error) {
			payloads.Store(string(c.Payload), true)
			return dps.Register(ctx, c)
		}
	})
	hub := e.HubHost(0)
	eventually(t, "registered through DPS", func() bool {
		n := 0
		payloads.Range(func(k, _ any) bool {
			n++
			if k != string(model.DPSPayload()) {
				t.Errorf("DPS register payload %s; want %s", k, model.DPSPayload())
			}
			return true
		})
		return n > 0
	})

	eventually(t, "modelId on the twin", func() bool {
		tw, err := e.Store().GetTwin(hub, id)
		return err == nil && tw.ModelID == model.ID
	})

	// A rejected desired value makes it report lastDesiredError.
	if _, err := e.UpdateDesired(hub, id, map[string]any{"telemetryDelay": "fast"}); err != nil {
		t.Fatal(err)
	}
	// A C2D command makes it report lastCommand and, for a timed interval
	// override, telemetryIntervalOverride with its end.
	if _, err := e.SendC2D(hub, id, []byte(`{"command":"setTelemetryInterval","seconds":1,"durationSeconds":3600}`), nil); err != nil {
		t.Fatal(err)
	}
	// queueInMemory appears only while the state directory fails; the
	// model test checks it against statequeue's real value.
	var doc []byte
	eventually(t, "every declared property reported", func() bool {
		doc, _ = json.Marshal(reported(t, e, id))
		return slices.Equal(in.Unused("Property", doc), []string{daemon.PropQueueInMemory})
	})
	if err := in.CheckReported(doc); err != nil {
		t.Errorf("twin reported %s:\n%v", doc, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	res, err := e.InvokeMethod(ctx, hub, id, store.MethodRequest{MethodName: daemon.MethodSendNow, ResponseTimeoutInSeconds: 10})
	if err != nil || res.Status != 200 {
		t.Fatalf("sendNow = %+v, %v", res, err)
	}
	msgs, err := e.WaitTelemetry(ctx, hub, id, 2)
	if err != nil {
		t.Fatal(err)
	}
	var bodies [][]byte
	for _, m := range msgs {
		if err := in.CheckTelemetry(m.Body); err != nil {
			t.Errorf("message %s body %s:\n%v", m.MessageID, m.Body, err)
		}
		bodies = append(bodies, m.Body)
	}
	// No alert is raised here: the members only alert bodies have are
	// checked by the model test on telemetry.BuildAlert's bodies.
	alertOnly := jsonNames(telemetry.AlertBody{})
	for _, n := range jsonNames(telemetry.Body{}) {
		alertOnly = slices.DeleteFunc(alertOnly, func(a string) bool { return a == n })
	}
	missing := slices.DeleteFunc(in.Unused("Telemetry", bodies...), func(n string) bool { return slices.Contains(alertOnly, n) })
	if len(missing) > 0 {
		t.Errorf("telemetry %v declared; no message from the simulated tracker carries it", missing)
	}

	// Every declared command is a method the tracker answers, with a
	// payload that fits; a name the model does not declare is not found.
	cmds := in.Names("Command")
	if want := []string{daemon.MethodGetStatus, daemon.MethodSendNow}; !slices.Equal(cmds, want) {
		t.Errorf("model commands %v; the daemon registers %v", cmds, want)
	}
	for _, c := range append(cmds, "notDeclared") {
		res, err := e.InvokeMethod(ctx, hub, id, store.MethodRequest{MethodName: c, ResponseTimeoutInSeconds: 10})
		if err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		declared := c != "notDeclared"
		if declared != (res.Status == 200) {
			t.Errorf("%s answered %d %s", c, res.Status, res.Payload)
			continue
		}
		if declared {
			if err := in.CheckResponse(c, res.Payload); err != nil {
				t.Errorf("%s payload %s:\n%v", c, res.Payload, err)
			}
		}
	}
}

// jsonNames lists the JSON member names of a struct's fields.
func jsonNames(v any) []string {
	var out []string
	rt := reflect.TypeOf(v)
	for i := range rt.NumField() {
		name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			out = append(out, name)
		}
	}
	return out
}
