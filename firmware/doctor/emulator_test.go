package doctor

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/reefer/tracker/deploy/emulator/emulatortest"
	"github.com/reefer/tracker/firmware/config"
	"github.com/reefer/tracker/provisioning/cache"
	"github.com/reefer/tracker/provisioning/certs"
	"github.com/reefer/tracker/provisioning/certs/certstest"
)

// TestHubAgainstEmulator connects to the emulator's IoT Hub as a device
// with an identity (OK), then as the same device after its identity was
// disabled and deleted (FAIL, refused), as an operator would do in Azure.
func TestHubAgainstEmulator(t *testing.T) {
	t.Parallel()
	e := emulatortest.Start(t)
	hub := e.HubHost(0)
	dev := newDevice(t, "tracker-hub-1", certstest.Options{})
	if _, err := e.CreateDevice(hub, "tracker-hub-1", dev.leaf.Cert); err != nil {
		t.Fatal(err)
	}
	id, err := certs.LoadIdentity(dev.certFile, dev.keyFile, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg := certs.TLSConfig(id, e.CACertPool(), "")
	ctx := context.Background()

	ck := CheckHub(ctx, hub, "tracker-hub-1", tlsCfg, nil, 5*time.Second)
	wantCheck(t, ck, "hub", OK, "accepts device", "")
	// The broker notices the DISCONNECT asynchronously.
	for deadline := time.Now().Add(3 * time.Second); e.IsConnected(hub, "tracker-hub-1"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the probe is still connected after the check; want it closed")
		}
	}

	if err := e.SetDeviceStatus(hub, "tracker-hub-1", "disabled"); err != nil {
		t.Fatal(err)
	}
	ck = CheckHub(ctx, hub, "tracker-hub-1", tlsCfg, nil, 5*time.Second)
	wantCheck(t, ck, "hub", Fail, "hub refuses the device: deleted or disabled identity", "re-provision by itself")

	if err := e.Store().DeleteDevice(hub, "tracker-hub-1", "*"); err != nil {
		t.Fatal(err)
	}
	ck = CheckHub(ctx, hub, "tracker-hub-1", tlsCfg, nil, 5*time.Second)
	wantCheck(t, ck, "hub", Fail, "hub refuses the device: deleted or disabled identity", "re-provision by itself")
}

// TestRunAgainstEmulator runs every check but the sensors against the
// emulator: a provisioned device with a cached assignment is all OK
// except the clock, which depends on this machine.
func TestRunAgainstEmulator(t *testing.T) {
	t.Parallel()
	e := emulatortest.Start(t)
	hub := e.HubHost(0)
	dev := newDevice(t, "tracker-run-1", certstest.Options{NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(90 * day)})
	if _, err := e.CreateDevice(hub, "tracker-run-1", dev.leaf.Cert); err != nil {
		t.Fatal(err)
	}
	id, err := certs.LoadIdentity(dev.certFile, dev.keyFile, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	save(t, state, &cache.Assignment{Hub: hub, DeviceID: "tracker-run-1", CertFingerprintSHA256: id.FingerprintSHA256, AssignedAt: time.Now().Add(-time.Hour)})
	cfgPath := filepath.Join(t.TempDir(), "tracker.json")
	writeConfig(t, cfgPath, map[string]any{
		"idScope": e.IDScope(), "dpsEndpoint": e.DPSEndpoint(), "caFile": e.Info().CACertPath,
		"certFile": dev.certFile, "keyFile": dev.keyFile, "stateDir": state,
	})

	r := Run(context.Background(), Inputs{ConfigPath: cfgPath, SkipSensors: true, Synced: func() (bool, error) { return true, nil }, Timeout: 5 * time.Second})
	want := []string{"config", "key file", "certificate id", "certificate chain", "certificate dates", "clock", "dps endpoint", "assignment", "hub", "queue"}
	if len(r.Checks) != len(want) {
		t.Fatalf("Run gave checks %+v; want %v", r.Checks, want)
	}
	for i, ck := range r.Checks {
		if ck.Name != want[i] || ck.Status != OK {
			t.Errorf("check %d = %+v; want %s OK", i, ck, want[i])
		}
	}
	if r.Failed() || len(r.Skipped) != 1 || r.Skipped[0].Name != "sensors" {
		t.Errorf("Failed() = %v, Skipped = %v; want false, [sensors]", r.Failed(), r.Skipped)
	}

	// The emulator deletes the device: the hub line turns FAIL.
	if err := e.Store().DeleteDevice(hub, "tracker-run-1", "*"); err != nil {
		t.Fatal(err)
	}
	r = Run(context.Background(), Inputs{ConfigPath: cfgPath, SkipSensors: true, Synced: func() (bool, error) { return true, nil }, Timeout: 5 * time.Second})
	if !r.Failed() {
		t.Errorf("Run after deleting the device: Failed() = false; want true\n%+v", r.Checks)
	}
}

func writeConfig(t *testing.T, path string, keys map[string]any) {
	t.Helper()
	keys["version"] = config.Version
	b, err := jsonMarshal(keys)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
