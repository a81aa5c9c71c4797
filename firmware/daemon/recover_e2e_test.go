package daemon_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/reefer/tracker/deploy/emulator/store"
	"github.com/reefer/tracker/firmware/daemon"
)

// A queue.db the SD card damaged while the tracker was off: the tracker
// moves it aside and comes back instead of failing every start, keeps
// its sequence numbers above every one it issued, and tells the cloud.
func TestCorruptQueueIsRecovered(t *testing.T) {
	t.Parallel()
	const id = "sensor-thl-009"
	e, cfg := enrolledTracker(t, id)
	tr := startTracker(t, cfg, id)
	before := tr.sendNow()
	if err := tr.stop(); err != nil {
		t.Fatalf("Run = %v", err)
	}
	last := tr.status().LastSeq
	if last < before {
		last = before
	}
	qpath := filepath.Join(cfg.StateDir, daemon.QueueFile)
	if err := os.WriteFile(qpath, bytes.Repeat([]byte{0xa5, 0x5a, 0x00, 0xff}, 16<<10), 0o600); err != nil {
		t.Fatal(err)
	}

	tr = startTracker(t, cfg, id)
	st := tr.status()
	if st.QueueRecovered == nil || st.QueueRecovered.Aside == "" {
		t.Fatalf("Status().QueueRecovered = %+v; want the moved-aside file", st.QueueRecovered)
	}
	if _, err := os.Stat(st.QueueRecovered.Aside); err != nil {
		t.Errorf("moved-aside file: %v", err)
	}
	if n := countLines(tr.logs.String(), "level=ERROR", "queue database corrupt", st.QueueRecovered.Aside); n != 1 {
		t.Errorf("%d ERROR lines naming %s; want 1", n, st.QueueRecovered.Aside)
	}
	if seq := tr.sendNow(); seq <= last {
		t.Fatalf("seq after recovery = %d; want > %d (ids must not repeat)", seq, last)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := e.WaitTelemetry(ctx, e.HubHost(0), id, 2); err != nil {
		t.Fatal(err)
	}
	// getStatus: doctor's queue check uses the running queue's figures
	// (no second open of the locked file) and warns of the loss.
	res, err := e.InvokeMethod(ctx, e.HubHost(0), id, store.MethodRequest{MethodName: daemon.MethodGetStatus, ResponseTimeoutInSeconds: 10})
	if err != nil || res.Status != 200 {
		t.Fatalf("getStatus = %+v, %v", res, err)
	}
	var ans struct {
		Doctor struct {
			Checks []struct{ Name, Status, Detail string } `json:"checks"`
		} `json:"doctor"`
	}
	if err := json.Unmarshal(res.Payload, &ans); err != nil {
		t.Fatalf("getStatus payload %s: %v", res.Payload, err)
	}
	found := false
	for _, c := range ans.Doctor.Checks {
		if c.Name == "queue" {
			found = c.Status == "WARN" && strings.Contains(c.Detail, st.QueueRecovered.Aside) && strings.Contains(c.Detail, "readings queued")
		}
	}
	if !found {
		t.Errorf("getStatus doctor checks %s; want queue WARN with the figures and %s", res.Payload, st.QueueRecovered.Aside)
	}
	eventually(t, "queueRecovered reported", func() bool {
		r, ok := reported(t, e, id)[daemon.PropQueueRecovered].(map[string]any)
		return ok && r["aside"] == st.QueueRecovered.Aside
	})
}
