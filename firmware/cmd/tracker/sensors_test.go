package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/reefer/tracker/firmware/sensorcheck"
)

func TestSensorsSimulatedJSON(t *testing.T) {
	t.Parallel()
	code, out, stderr := runArgs(t, "sensors", "--simulated", "--json", "--gps-wait", "3s")
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
	code, out, stderr := runArgs(t, "sensors", "--hardware", "--env-bus", "/dev/i2c-nonexistent", "--gps-port", "/dev/ttyNONEXISTENT", "--gps-wait", "100ms")
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
		{"sensors", "--simulated", "--hardware"},
		{"sensors", "stray"},
	} {
		if code, _, _ := runArgs(t, args...); code != exitUsage {
			t.Errorf("tracker %q = %d; want %d", args, code, exitUsage)
		}
	}
}
