package daemon_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reefer/tracker/deploy/emulator/store"
	"github.com/reefer/tracker/firmware/config"
	"github.com/reefer/tracker/firmware/daemon"
)

// A state directory that cannot be used (here a file stands where it
// should be; on a tracker a read-only or vanished filesystem) no longer
// ends the tracker: it samples and sends from memory, says so loudly
// (STATUS=, reported queueInMemory, getStatus with doctor's FAIL), and
// goes back to disk by itself once the directory works, taking the
// backlog along.
func TestUnusableStateDirectoryKeepsSending(t *testing.T) {
	t.Parallel()
	const id = "sensor-thl-001"
	e, cfg := enrolledTracker(t, id)
	if err := os.WriteFile(cfg.StateDir, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	tr := startTracker(t, cfg, id, func(_ *config.Config, dc *daemon.Config) {
		dc.StateQueue.ProbeInterval = 100 * time.Millisecond
	})
	hub := e.HubHost(0)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := e.WaitTelemetry(ctx, hub, id, 2); err != nil {
		t.Fatal(err)
	}
	if st := tr.status(); st.QueueInMemory == nil || st.QueueInMemory.Dir != cfg.StateDir {
		t.Fatalf("status queueInMemory = %+v; want set, naming %s", st.QueueInMemory, cfg.StateDir)
	}
	eventually(t, "STATUS= saying the queue is in memory", func() bool {
		for _, l := range tr.notes.all() {
			if strings.HasPrefix(l, "STATUS=connected") && strings.HasSuffix(l, "; QUEUE IN MEMORY: state directory unusable") {
				return true
			}
		}
		return false
	})
	eventually(t, "reported queueInMemory", func() bool {
		q, _ := reported(t, e, id)["queueInMemory"].(map[string]any)
		return q["stateDir"] == cfg.StateDir && q["reason"] != ""
	})
	res, err := e.InvokeMethod(ctx, hub, id, store.MethodRequest{MethodName: "getStatus", ResponseTimeoutInSeconds: 10})
	if err != nil || res.Status != 200 {
		t.Fatalf("getStatus = %+v, %v", res, err)
	}
	var st struct {
		Doctor struct {
			Checks []struct{ Name, Status, Detail, Fix string } `json:"checks"`
		} `json:"doctor"`
	}
	json.Unmarshal(res.Payload, &st)
	for _, c := range st.Doctor.Checks {
		if c.Name == "queue" && (c.Status != "FAIL" || !strings.Contains(c.Detail, "IN MEMORY") || c.Fix == "") {
			t.Errorf("getStatus doctor queue check = %+v; want FAIL saying in memory, with a fix", c)
		}
	}

	// Offline readings pile up in memory, then the directory works again.
	e.stop()
	eventually(t, "offline", func() bool { return !tr.status().Connected })
	tr.sendNow()
	last := tr.sendNow()
	if err := os.Remove(cfg.StateDir); err != nil {
		t.Fatal(err)
	}
	eventually(t, "back on disk", func() bool { return tr.status().QueueInMemory == nil })
	if _, err := os.Stat(filepath.Join(cfg.StateDir, daemon.QueueFile)); err != nil {
		t.Errorf("queue database after the return: %v", err)
	}
	if n := tr.status().QueueDepth; n < 2 {
		t.Errorf("disk queue holds %d readings; want the in-memory backlog (at least 2) moved in", n)
	}
	e.start()
	eventually(t, "backlog sent from disk", func() bool {
		for _, m := range e.telemetry(id) {
			if decodeBody(t, m).Seq == last {
				return tr.status().QueueDepth == 0
			}
		}
		return false
	})
	eventually(t, "reported queueInMemory deleted", func() bool {
		r := reported(t, e, id)
		_, still := r["queueInMemory"]
		return r != nil && !still
	})
}
