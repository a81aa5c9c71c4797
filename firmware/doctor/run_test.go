package doctor

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reefer/tracker/firmware/config"
	"github.com/reefer/tracker/firmware/lifecycle"
	"github.com/reefer/tracker/firmware/queue"
	"github.com/reefer/tracker/provisioning/cache"
	"github.com/reefer/tracker/provisioning/certs/certstest"
)

// noNet fails the test on any network use.
type noNet struct{ t *testing.T }

func (n noNet) LookupHost(context.Context, string) ([]string, error) {
	n.t.Error("resolver used")
	return nil, errors.New("no network in this test")
}
func (n noNet) DialContext(context.Context, string, string) (net.Conn, error) {
	n.t.Error("dialer used")
	return nil, errors.New("no network in this test")
}
func (n noNet) probe(context.Context, string, string, *tls.Config) error {
	n.t.Error("hub probe used")
	return errors.New("no network in this test")
}

// provisioned writes a config for a device with a cached assignment.
func provisioned(t *testing.T) (cfgPath, stateDir string) {
	t.Helper()
	dev := newDevice(t, "tracker-0042", certstest.Options{NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(90 * day)})
	stateDir = t.TempDir()
	id := CheckCertificate(dev.certFile, dev.keyFile, time.Now()).Identity
	save(t, stateDir, &cache.Assignment{Hub: "hub.test", DeviceID: "tracker-0042", CertFingerprintSHA256: id.FingerprintSHA256, AssignedAt: time.Now()})
	cfgPath = filepath.Join(t.TempDir(), "tracker.json")
	writeConfig(t, cfgPath, map[string]any{"idScope": "0ne00000A0A", "certFile": dev.certFile, "keyFile": dev.keyFile,
		"stateDir": stateDir, "dpsEndpoint": "dps.test:8883"})
	return cfgPath, stateDir
}

func names(cs []Check) string {
	n := make([]string, len(cs))
	for i, c := range cs {
		n[i] = c.Name + "=" + string(c.Status)
	}
	return strings.Join(n, ",")
}

func TestRunOffline(t *testing.T) {
	t.Parallel()
	cfgPath, _ := provisioned(t)
	nn := noNet{t}
	r := Run(context.Background(), Inputs{ConfigPath: cfgPath, Offline: true, Resolver: nn, Dialer: nn, ProbeHub: nn.probe,
		Synced: func() (bool, error) { return true, nil }})
	const want = "config=OK,key file=OK,certificate id=OK,certificate chain=OK,certificate dates=OK,clock=OK,assignment=OK,queue=OK"
	if got := names(r.Checks); got != want {
		t.Errorf("Run offline checks = %s; want %s", got, want)
	}
	if len(r.Skipped) != 3 || r.Skipped[1] != (Skip{"dps endpoint", "--offline"}) || r.Skipped[2] != (Skip{"hub", "--offline"}) {
		t.Errorf("Skipped = %v; want sensors, dps endpoint and hub", r.Skipped)
	}
}

func TestRunLeavesARunningTrackersHubConnection(t *testing.T) {
	t.Parallel()
	cfgPath, state := provisioned(t)
	q, err := queue.Open(filepath.Join(state, DefaultQueueFile), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	nn := noNet{t}
	r := Run(context.Background(), Inputs{ConfigPath: cfgPath, ProbeHub: nn.probe, Synced: func() (bool, error) { return true, nil },
		Resolver: hostsResolver{}, Timeout: time.Second})
	var hub *Skip
	for i := range r.Skipped {
		if r.Skipped[i].Name == "hub" {
			hub = &r.Skipped[i]
		}
	}
	if hub == nil || !strings.Contains(hub.Reason, "running tracker") {
		t.Errorf("Skipped = %v; want hub skipped because the tracker runs", r.Skipped)
	}
	if last := r.Checks[len(r.Checks)-1]; last.Name != "queue" || last.Status != OK || !strings.Contains(last.Detail, "in use") {
		t.Errorf("last check = %+v; want queue OK in use", last)
	}
}

func TestRunConfigMissing(t *testing.T) {
	t.Parallel()
	nn := noNet{t}
	r := Run(context.Background(), Inputs{ConfigPath: filepath.Join(t.TempDir(), "none.json"), Resolver: nn, Dialer: nn, ProbeHub: nn.probe,
		BuildTime: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Now: func() time.Time { return time.Unix(5, 0) },
		Synced: func() (bool, error) { return false, nil }})
	if got, want := names(r.Checks), "config=FAIL,clock=FAIL"; got != want {
		t.Errorf("checks = %s; want %s", got, want)
	}
	if !r.Failed() || len(r.Skipped) != 5 {
		t.Errorf("Failed() = %v, Skipped = %v; want true and 5 skipped", r.Failed(), r.Skipped)
	}
}

// The agent passes its loaded config and skips the slow checks.
func TestRunWithLoadedConfig(t *testing.T) {
	t.Parallel()
	cfgPath, _ := provisioned(t)
	c, err := config.Load(cfgPath, nil, config.Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	nn := noNet{t}
	r := Run(context.Background(), Inputs{Config: c, Offline: true, SkipSensors: true, Resolver: nn, Dialer: nn, ProbeHub: nn.probe,
		Synced: func() (bool, error) { return true, nil }})
	if c0 := r.Checks[0]; c0.Status != OK || c0.Detail != cfgPath+" loaded by the running tracker" {
		t.Errorf("config check = %+v; want OK loaded by the running tracker", c0)
	}
	if r.Failed() {
		t.Errorf("Failed() = true: %s", names(r.Checks))
	}
}

// The clock check uses the floor the daemon waits for: a clock before
// lifecycle.MinClock fails even when nothing else (an unknown build time,
// an old certificate) says so.
func TestRunClockBelowTrackerFloor(t *testing.T) {
	t.Parallel()
	dev := newDevice(t, "tracker-0042", certstest.Options{NotBefore: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Now().Add(90 * day)})
	cfgPath := filepath.Join(t.TempDir(), "tracker.json")
	writeConfig(t, cfgPath, map[string]any{"idScope": "0ne00000A0A", "certFile": dev.certFile, "keyFile": dev.keyFile,
		"stateDir": t.TempDir(), "dpsEndpoint": "dps.test:8883"})
	early := lifecycle.MinClock.Add(-24 * time.Hour)
	r := Run(context.Background(), Inputs{ConfigPath: cfgPath, Offline: true, SkipSensors: true,
		Now: func() time.Time { return early }, Synced: func() (bool, error) { return true, nil }})
	for _, c := range r.Checks {
		if c.Name == "clock" {
			if c.Status != Fail || !strings.Contains(c.Detail, "earliest date this firmware accepts") {
				t.Errorf("clock check at %s = %+v; want FAIL naming the firmware's floor", early, c)
			}
			return
		}
	}
	t.Errorf("no clock check in %s", names(r.Checks))
}
