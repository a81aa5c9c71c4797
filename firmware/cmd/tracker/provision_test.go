package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reefer/tracker/deploy/emulator/emulatortest"
	"github.com/reefer/tracker/deploy/emulator/store"
	"github.com/reefer/tracker/provisioning/cache"
	"github.com/reefer/tracker/provisioning/certs"
	"github.com/reefer/tracker/provisioning/certs/certstest"
	"github.com/reefer/tracker/provisioning/opcert"
)

// provisionFixture is a config file with a device certificate and key.
type provisionFixture struct {
	dir, config, cert, key, state string
	device                        *certstest.Cert // the leaf in cert
}

// newProvisionFixture writes a CA-signed device certificate for cn (chain:
// leaf, intermediate) and a config using it with dpsEndpoint.
func newProvisionFixture(t *testing.T, cn, dpsEndpoint string) provisionFixture {
	t.Helper()
	root := certstest.Root(t, "test root", certstest.Options{})
	f := deviceFiles(t, root.Intermediate(t, "test intermediate", certstest.Options{}), cn)
	f.writeConfig(t, map[string]any{
		"version": 1, "idScope": "0ne00000A0A", "dpsEndpoint": dpsEndpoint,
		"certFile": f.cert, "keyFile": f.key, "stateDir": f.state,
	})
	return f
}

// deviceFiles writes a certificate for cn signed by inter (chain: leaf,
// intermediate) and its key into a new directory; the caller writes the
// config.
func deviceFiles(t *testing.T, inter *certstest.Cert, cn string) provisionFixture {
	t.Helper()
	dir := t.TempDir()
	leaf := inter.Leaf(t, cn, certstest.Options{})
	f := provisionFixture{
		dir:    dir,
		config: filepath.Join(dir, "tracker.json"),
		cert:   filepath.Join(dir, cn+"-chain.pem"),
		key:    filepath.Join(dir, cn+".key"),
		state:  filepath.Join(dir, "state"),
		device: leaf,
	}
	certstest.WriteCerts(t, f.cert, leaf.Cert, inter.Cert)
	certstest.WriteKey(t, f.key, leaf.Key, certstest.PKCS8)
	return f
}

func (f provisionFixture) writeConfig(t *testing.T, c map[string]any) {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.config, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestProvisionConfigErrors(t *testing.T) {
	t.Parallel()
	f := newProvisionFixture(t, "sensor-thl-001", "127.0.0.1:1")
	bad := filepath.Join(f.dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"version": 1, "idScope": "x", "certFle": "/a"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  []string
	}{
		{"missing file", []string{"--config", filepath.Join(f.dir, "nope.json")}, exitConfig, []string{"nope.json", "no config file"}},
		{"unknown key", []string{"--config", bad}, exitConfig, []string{`"certFle"`, "unknown key"}},
		{"bad override", []string{"--config", f.config, "--id-scope", "not a scope!"}, exitConfig, []string{"idScope", "--id-scope"}},
		{"relative cert override", []string{"--config", f.config, "--cert", "dev.pem"}, exitConfig, []string{"certFile", "absolute path"}},
		{"stray argument", []string{"--config", f.config, "now"}, exitUsage, []string{`unexpected argument "now"`}},
		{"unknown flag", []string{"--config", f.config, "--frobnicate"}, exitUsage, []string{"frobnicate"}},
		{"zero timeout", []string{"--config", f.config, "--timeout", "0s"}, exitUsage, []string{"--timeout"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, out, stderr := runArgs(t, append([]string{"provision"}, tt.args...)...)
			if code != tt.wantCode {
				t.Errorf("tracker provision %q = %d; want %d\nstderr: %s", tt.args, code, tt.wantCode, stderr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
			if out != "" {
				t.Errorf("stdout = %q; want nothing on a config error", out)
			}
		})
	}
}

func TestProvisionIdentityErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		setup   func(t *testing.T, f provisionFixture) []string // extra args
		wantErr []string
	}{
		{
			name: "key readable by others",
			setup: func(t *testing.T, f provisionFixture) []string {
				if err := os.Chmod(f.key, 0o644); err != nil {
					t.Fatal(err)
				}
				return nil
			},
			wantErr: []string{"device identity refused", "chmod 600"},
		},
		{
			name: "key of another device",
			setup: func(t *testing.T, f provisionFixture) []string {
				other := filepath.Join(f.dir, "other.key")
				certstest.WriteKey(t, other, certstest.NewKey(t, certstest.ECDSA), certstest.PKCS8)
				return []string{"--key", other}
			},
			wantErr: []string{"does not match the certificate", "other.key"},
		},
		{
			name: "leaf without its intermediate",
			setup: func(t *testing.T, f provisionFixture) []string {
				root := certstest.Root(t, "r", certstest.Options{})
				inter := root.Intermediate(t, "i", certstest.Options{})
				leaf := inter.Leaf(t, "sensor-thl-001", certstest.Options{})
				certstest.WriteCerts(t, f.cert, leaf.Cert)
				certstest.WriteKey(t, f.key, leaf.Key, certstest.PKCS8)
				return nil
			},
			wantErr: []string{"missing the leaf's issuer", "chain"},
		},
		{
			name: "uppercase CN",
			setup: func(t *testing.T, f provisionFixture) []string {
				root := certstest.Root(t, "r", certstest.Options{})
				leaf := root.Leaf(t, "Sensor-THL-001", certstest.Options{})
				certstest.WriteCerts(t, f.cert, leaf.Cert, root.Cert)
				certstest.WriteKey(t, f.key, leaf.Key, certstest.PKCS8)
				return nil
			},
			wantErr: []string{"uppercase", "lowercase"},
		},
		{
			name: "expired certificate",
			setup: func(t *testing.T, f provisionFixture) []string {
				root := certstest.Root(t, "r", certstest.Options{NotBefore: time.Now().Add(-72 * time.Hour)})
				leaf := root.Leaf(t, "sensor-thl-001", certstest.Options{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
				certstest.WriteCerts(t, f.cert, leaf.Cert, root.Cert)
				certstest.WriteKey(t, f.key, leaf.Key, certstest.PKCS8)
				return nil
			},
			wantErr: []string{"expired", "device.sh --force sensor-thl-001"},
		},
		{
			name: "missing certificate file",
			setup: func(t *testing.T, f provisionFixture) []string {
				return []string{"--cert", filepath.Join(f.dir, "absent.pem")}
			},
			wantErr: []string{"absent.pem"},
		},
		{
			name: "bad server CA file",
			setup: func(t *testing.T, f provisionFixture) []string {
				ca := filepath.Join(f.dir, "ca.pem")
				if err := os.WriteFile(ca, []byte("not pem"), 0o644); err != nil {
					t.Fatal(err)
				}
				return []string{"--ca", ca}
			},
			wantErr: []string{"ca.pem", "no CERTIFICATE PEM block", "remove caFile from the config"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newProvisionFixture(t, "sensor-thl-001", "127.0.0.1:1")
			extra := tt.setup(t, f)
			args := append([]string{"provision", "--config", f.config, "--timeout", "5s"}, extra...)
			code, _, stderr := runArgs(t, args...)
			if code != exitConfig {
				t.Errorf("tracker %q = %d; want %d\nstderr: %s", args, code, exitConfig, stderr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
			if _, err := os.Stat(cache.Path(f.state)); err == nil {
				t.Error("a cache file was written for a refused identity")
			}
		})
	}
}

// With a valid cached assignment and no --force, provision reports it
// without contacting DPS (the endpoint here is closed).
func TestProvisionUsesCache(t *testing.T) {
	t.Parallel()
	f := newProvisionFixture(t, "sensor-thl-001", "127.0.0.1:1")
	id := loadFixtureIdentity(t, f)
	if err := os.MkdirAll(f.state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := cache.Save(f.state, &cache.Assignment{Hub: "hub-x.azure-devices.net", DeviceID: "sensor-thl-001",
		CertFingerprintSHA256: id, AssignedAt: time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)}); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runArgs(t, "provision", "--config", f.config, "--json")
	if code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	var rep provisionReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	if rep.Source != "cache" || rep.Hub != "hub-x.azure-devices.net" || rep.DeviceID != "sensor-thl-001" || rep.Status != "assigned" {
		t.Errorf("report = %+v; want the cached assignment", rep)
	}
}

// DPS unreachable: the command fails (not with exitConfig) within its
// timeout and says why.
func TestProvisionDPSUnreachable(t *testing.T) {
	t.Parallel()
	f := newProvisionFixture(t, "sensor-thl-001", "127.0.0.1:1")
	start := time.Now()
	code, out, stderr := runArgs(t, "provision", "--config", f.config, "--force", "--timeout", "1s")
	if code != exitFail {
		t.Errorf("exit %d; want %d\nstderr: %s", code, exitFail, stderr)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v with --timeout 1s", d)
	}
	if !strings.Contains(out, "status") || !strings.Contains(out, "error") || !strings.Contains(stderr, "not provisioned") {
		t.Errorf("stdout:\n%s\nstderr:\n%s\nwant a report with the error and 'not provisioned'", out, stderr)
	}
}

func loadFixtureIdentity(t *testing.T, f provisionFixture) string {
	t.Helper()
	id, err := certs.LoadIdentity(f.cert, f.key, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return id.FingerprintSHA256
}

// End to end against the in-process emulator: real DPS over MQTT and TLS.
func TestProvisionEmulator(t *testing.T) {
	t.Parallel()
	e := emulatortest.Start(t)
	root := certstest.Root(t, "groupCA-sensors", certstest.Options{})
	inter := root.Intermediate(t, "groupCA-sensors-intermediate", certstest.Options{})
	if _, err := e.EnrollGroup("enrollgroup-sensors", root.Cert, nil); err != nil {
		t.Fatal(err)
	}
	cn := "sensor-thl-002"
	f := deviceFiles(t, inter, cn)
	f.writeConfig(t, map[string]any{
		"version": 1, "idScope": e.IDScope(), "dpsEndpoint": e.DPSEndpoint(), "caFile": e.Info().CACertPath,
		"certFile": f.cert, "keyFile": f.key, "stateDir": f.state,
	})
	provision := func(args ...string) (int, string, string) {
		return runArgs(t, append([]string{"provision", "--config", f.config, "--timeout", "30s"}, args...)...)
	}

	// Assigned: table output names the hub and device id; the cache is written.
	code, out, stderr := provision()
	if code != exitOK {
		t.Fatalf("provision = %d; want 0\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	for _, want := range []string{"status           assigned", "substatus        initialAssignment",
		"hub              " + e.HubHost(0), "device id        " + cn, "source           dps"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	if a, err := cache.Load(f.state); err != nil || a.Hub != e.HubHost(0) || a.DeviceID != cn {
		t.Errorf("cache = %+v, %v; want %s as %s", a, err, e.HubHost(0), cn)
	}
	if _, err := e.Store().GetDevice(e.HubHost(0), cn); err != nil {
		t.Errorf("DPS did not create the hub identity: %v", err)
	}

	// Disabled by an individual enrollment: --force asks DPS, which refuses.
	if _, err := e.EnrollDevice(f.device.Cert, func(en *store.IndividualEnrollment) { en.ProvisioningStatus = store.StatusDisabled }); err != nil {
		t.Fatal(err)
	}
	code, out, stderr = provision("--force", "--json")
	if code != exitFail {
		t.Errorf("provision (disabled) = %d; want %d\nstderr:\n%s", code, exitFail, stderr)
	}
	var rep provisionReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	const meaning = "enrollment disabled: re-enable it or delete the disabling individual enrollment"
	if rep.Status != "disabled" || rep.Hub != "" || !strings.Contains(rep.Meaning, meaning) {
		t.Errorf("report = %+v; want status disabled, no hub, meaning %q", rep, meaning)
	}
	if !strings.Contains(stderr, "not provisioned: "+meaning) {
		t.Errorf("stderr lacks the meaning:\n%s", stderr)
	}

	// Without --force a valid cache still answers (the daemon would find
	// out from the hub; the technician sees where it points).
	code, out, _ = provision("--json")
	if code != exitOK || !strings.Contains(out, `"source": "cache"`) {
		t.Errorf("provision (cached) = %d\n%s; want 0 from the cache", code, out)
	}
}

// With certificateIssuance: DPS issues the hub certificate with the
// registration, the report says until when, and it waits as the pending
// bundle for the tracker's first hub connection.
func TestProvisionIssuesHubCertificate(t *testing.T) {
	t.Parallel()
	e := emulatortest.Start(t)
	pol := emulatortest.CredentialPolicy(t, e, "trackers", time.Hour)
	root := certstest.Root(t, "groupCA-sensors", certstest.Options{})
	inter := root.Intermediate(t, "groupCA-sensors-intermediate", certstest.Options{})
	if _, err := e.EnrollGroup("enrollgroup-sensors", root.Cert, func(g *store.EnrollmentGroup) { g.CredentialPolicyName = pol.Name }); err != nil {
		t.Fatal(err)
	}
	cn := "sensor-thl-003"
	f := deviceFiles(t, inter, cn)
	f.writeConfig(t, map[string]any{
		"version": 1, "idScope": e.IDScope(), "dpsEndpoint": e.DPSEndpoint(), "caFile": e.Info().CACertPath,
		"certFile": f.cert, "keyFile": f.key, "stateDir": f.state, "certificateIssuance": map[string]any{"enabled": true},
	})
	code, out, stderr := runArgs(t, "provision", "--config", f.config, "--timeout", "30s")
	if code != exitOK {
		t.Fatalf("provision = %d; want 0\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	id, err := opcert.Store{Dir: f.state}.Pending()
	if err != nil {
		t.Fatalf("pending bundle: %v", err)
	}
	if want := "hub certificate  issued by DPS, valid until " + id.Leaf.NotAfter.UTC().Format(time.RFC3339); !strings.Contains(out, want) {
		t.Errorf("stdout lacks %q:\n%s", want, out)
	}
	if err := id.Leaf.CheckSignatureFrom(pol.IssuingCA); err != nil || id.RegistrationID != cn {
		t.Errorf("issued %q, signature %v; want CN %s from the policy's CA", id.RegistrationID, err, cn)
	}
	if a, err := cache.Load(f.state); err != nil || a.CertFingerprintSHA256 != id.FingerprintSHA256 {
		t.Errorf("cache %+v, %v; want it bound to the issued certificate", a, err)
	}
}
