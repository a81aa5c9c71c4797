package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reefer/tracker/firmware/doctor"
	"github.com/reefer/tracker/provisioning/certs/certstest"
)

// simulatedTracker writes a config with simulated sensors and a fresh
// device certificate, as on a bench without hardware, and returns its path
// and key file.
func simulatedTracker(t *testing.T, dpsEndpoint string) (cfgPath, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	year := certstest.Options{NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour)}
	root := certstest.Root(t, "Test Root CA", year)
	inter := root.Intermediate(t, "Test Intermediate CA", year)
	leaf := inter.Leaf(t, "tracker-0042", year)
	certFile, keyFile := filepath.Join(dir, "device-chain.pem"), filepath.Join(dir, "device.key")
	certstest.WriteCerts(t, certFile, leaf.Cert, inter.Cert)
	certstest.WriteKey(t, keyFile, leaf.Key, certstest.PKCS8)
	cfg := fmt.Sprintf(`{"version": 1, "idScope": "0ne00000A0A", "dpsEndpoint": %q,
  "certFile": %q, "keyFile": %q, "stateDir": %q,
  "sensors": {"env": {"mode": "simulated"}, "gps": {"mode": "simulated"}}}`, dpsEndpoint, certFile, keyFile, filepath.Join(dir, "state"))
	if err := os.Mkdir(filepath.Join(dir, "state"), 0o700); err != nil {
		t.Fatal(err)
	}
	cfgPath = filepath.Join(dir, "tracker.json")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfgPath, keyFile
}

// report is doctor's JSON output.
type report struct {
	doctor.Report
	Failed bool `json:"failed"`
}

func (r report) check(name string) doctor.Check {
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	return doctor.Check{}
}

func TestDoctorSimulatedOffline(t *testing.T) {
	t.Parallel()
	cfgPath, _ := simulatedTracker(t, "global.azure-devices-provisioning.net:8883")
	code, out, stderr := runArgs(t, "doctor", "--config", cfgPath, "--offline", "--json", "--gps-wait", "3s")
	if code != exitOK {
		t.Fatalf("exit %d; want %d; stderr:\n%s\nstdout:\n%s", code, exitOK, stderr, out)
	}
	var r report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("--json output does not parse: %v\n%s", err, out)
	}
	if r.Failed {
		t.Errorf("failed = true; want false:\n%s", out)
	}
	for name, st := range map[string]doctor.Status{"config": doctor.OK, "key file": doctor.OK, "certificate id": doctor.OK,
		"certificate chain": doctor.OK, "certificate dates": doctor.OK, "env sensor": doctor.Warn, "gps": doctor.Warn,
		"assignment": doctor.Warn, "queue": doctor.OK} {
		if got := r.check(name); got.Status != st {
			t.Errorf("check %q = %+v; want %s", name, got, st)
		}
	}
	if d := r.check("env sensor").Detail; !strings.Contains(d, "simulated") {
		t.Errorf("env sensor detail = %q; want it to say simulated", d)
	}
	skipped := map[string]bool{}
	for _, s := range r.Skipped {
		skipped[s.Name] = true
	}
	if !skipped["dps endpoint"] || !skipped["hub"] {
		t.Errorf("skipped = %v; want dps endpoint and hub skipped with --offline", r.Skipped)
	}
}

func TestDoctorFails(t *testing.T) {
	t.Parallel()
	closed := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}()
	tests := []struct {
		name  string
		setup func(t *testing.T, keyFile string)
		args  []string
		want  []string
	}{
		{"key readable by all", func(t *testing.T, key string) {
			if err := os.Chmod(key, 0o644); err != nil {
				t.Fatal(err)
			}
		}, []string{"--offline"}, []string{"FAIL  key file", "fix: chmod 600 "}},
		{"dps unreachable", nil, nil, []string{"FAIL  dps endpoint", "does not answer", "fix: outbound TCP 8883"}},
		{"bad override", nil, []string{"--offline", "--gps-baud", "1234"}, []string{"FAIL  config", `"sensors.gps.baud" (set by flag --gps-baud): must be one of`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfgPath, key := simulatedTracker(t, closed)
			if tt.setup != nil {
				tt.setup(t, key)
			}
			args := append([]string{"doctor", "--config", cfgPath, "--no-sensors", "--timeout", "2s"}, tt.args...)
			code, out, stderr := runArgs(t, args...)
			if code != exitFail {
				t.Errorf("tracker %q exit %d; want %d", args, code, exitFail)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output missing %q:\n%s", w, out)
				}
			}
			if !strings.Contains(stderr, "some checks failed") {
				t.Errorf("stderr = %q; want the failure summary", stderr)
			}
		})
	}
}

func TestDoctorUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"doctor", "stray"}, {"doctor", "--no-such-flag"}} {
		if code, _, _ := runArgs(t, args...); code != exitUsage {
			t.Errorf("tracker %q = %d; want %d", args, code, exitUsage)
		}
	}
}
