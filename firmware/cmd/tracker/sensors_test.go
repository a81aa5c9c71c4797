package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/reefer/tracker/firmware/sensorcheck"
)

func TestSensorsSimulatedJSON(t *testing.T) {
	t.Parallel()
	code, out, stderr := runArgs(t, "sensors", "--config", "/nonexistent/tracker.json", "--simulated", "--json", "--gps-wait", "3s")
	if code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	var r sensorcheck.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("output is not a report: %v\n%s", err, out)
	}
	if r.Env == nil || r.Env.Source != "simulated" || r.GPS == nil || r.GPS.Source != "simulated" {
		t.Errorf("report = %+v; want simulated env and gps readings", r)
	}
}

func TestSensorsHardwareMissing(t *testing.T) {
	t.Parallel()
	code, out, stderr := runArgs(t, "sensors", "--config", "/nonexistent/tracker.json", "--hardware", "--env-bus", "/dev/i2c-nonexistent", "--gps-port", "/dev/ttyNONEXISTENT", "--gps-wait", "100ms")
	if code != exitFail {
		t.Errorf("exit %d; want %d", code, exitFail)
	}
	for _, want := range []string{"2 sensor problem(s)", "I2C bus", "/dev/ttyNONEXISTENT"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr missing %q:\n%s", want, stderr)
		}
	}
	if !strings.Contains(out, "FAIL") {
		t.Errorf("table has no FAIL line:\n%s", out)
	}
}

func TestSensorsBadFlags(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"sensors", "--env-mode", "maybe"},
		{"sensors", "--env-address", "0x42"},
		{"sensors", "--env-address", "76"}, // decimal 76 is not 0x76
		{"sensors", "--simulated", "--hardware"},
		{"sensors", "stray"},
	} {
		if code, _, _ := runArgs(t, args...); code != exitUsage {
			t.Errorf("tracker %q = %d; want %d", args, code, exitUsage)
		}
	}
}

func TestParseAddr(t *testing.T) {
	tests := []struct {
		in   string
		want uint16
		ok   bool
	}{
		{"auto", 0, true}, {"", 0, true}, {"0", 0, true}, {"0x0", 0, true},
		{"0x76", 0x76, true}, {"118", 0x76, true}, {"0x77", 0x77, true}, {"119", 0x77, true},
		{"0x42", 0, false}, {"76", 0, false}, {"zz", 0, false},
	}
	for _, tt := range tests {
		got, err := parseAddr(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseAddr(%q) = %#x, %v; want %#x, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

// The sensor settings come from the tracker's config when it exists, and
// flags override them.
func TestSensorsFromConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "tracker.json")
	body := `{"version": 1, "idScope": "0ne00000A0A", "certFile": "/c.pem", "keyFile": "/k.pem",
	  "sensors": {"env": {"mode": "hardware", "bus": "/dev/i2c-fromconfig"}, "gps": {"mode": "hardware", "port": "/dev/ttyFROMCONFIG"}}}`
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runArgs(t, "sensors", "--config", cfg, "--gps-wait", "100ms")
	if code != exitFail || !strings.Contains(stderr, "/dev/ttyFROMCONFIG") || !strings.Contains(stderr, "i2c-fromconfig") {
		t.Errorf("exit %d, stderr:\n%s\nwant exit %d naming the config's bus and port", code, stderr, exitFail)
	}
	code, out, stderr := runArgs(t, "sensors", "--config", cfg, "--gps-mode", "simulated", "--env-mode", "simulated", "--json", "--gps-wait", "3s")
	if code != exitOK || !strings.Contains(out, `"source": "simulated"`) {
		t.Errorf("flags did not override the config: exit %d\n%s\n%s", code, out, stderr)
	}
	if err := os.WriteFile(cfg, []byte(`{"version": 1, "telemetryDelay": "x"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runArgs(t, "sensors", "--config", cfg); code != exitConfig || !strings.Contains(stderr, "telemetryDelay") {
		t.Errorf("broken config: exit %d, stderr %q; want %d naming the key", code, stderr, exitConfig)
	}
}
