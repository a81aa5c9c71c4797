package azure

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeAz is an az that logs its arguments one call per line and answers the
// few queries fleet.sh reads. Resources "exist" when their name is listed in
// $FAKE_AZ_EXISTS.
const fakeAz = `#!/usr/bin/env bash
echo "$*" >> "$FAKE_AZ_LOG"
args="$*"
case "$args" in
*"connection-string show"*) echo "HostName=hub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=a2V5" ;;
*"linked-hub list"*) ;;
*"certificate show"*"properties.isVerified"*) echo false ;;
*"certificate show"*"--query etag"*) echo etag-1 ;;
*"generate-verification-code"*) printf 'CODE0123456789\netag-2\n' ;;
*"registration list"*) printf 'sensor-thl-001\nsensor-thl-002\n' ;;
*"dps show"*"idScope"*) echo 0ne00ABCDEF ;;
*" show "*)
	for r in $FAKE_AZ_EXISTS; do case "$args" in *" $r "*|*" $r") exit 0 ;; esac; done
	exit 3 ;;
esac
`

func runFleet(t *testing.T, certs, exists string, args ...string) (calls []string, stderr string, err error) {
	t.Helper()
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "az"), []byte(fakeAz), 0o755); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(t.TempDir(), "az.log")
	cmd := exec.Command("./fleet.sh", append([]string{"--certs", certs}, args...)...)
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "FAKE_AZ_LOG="+log, "FAKE_AZ_EXISTS="+exists)
	var se strings.Builder
	cmd.Stderr = &se
	err = cmd.Run()
	b, _ := os.ReadFile(log)
	if s := strings.TrimSpace(string(b)); s != "" {
		calls = strings.Split(s, "\n")
	}
	return calls, se.String(), err
}

func makeCA(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	dir := t.TempDir()
	for _, args := range [][]string{{"../certs/ca.sh", "--dir", dir}, {"../certs/device.sh", "--dir", dir, "sensor-thl-002"}} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	return dir
}

func hasCall(calls []string, parts ...string) bool {
	for _, c := range calls {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(c, p)
		}
		if ok {
			return true
		}
	}
	return false
}

func TestSetupFromScratch(t *testing.T) {
	t.Parallel()
	certs := makeCA(t)
	calls, stderr, err := runFleet(t, certs, "", "setup")
	if err != nil {
		t.Fatalf("fleet.sh setup: %v\n%s", err, stderr)
	}
	want := [][]string{
		{"group create", "--name rg-trackers"},
		{"iot hub create", "--sku S1"},
		{"iot dps create"},
		{"linked-hub create", "--connection-string HostName=hub.azure-devices.net"},
		{"certificate create", "--certificate-name groupCA-sensors", "--path " + certs + "/root.pem"},
		{"generate-verification-code", "--etag etag-1"},
		{"certificate verify", "--path " + certs + "/verification.pem", "--etag etag-2"},
		{"enrollment-group create", "--enrollment-id enrollgroup-sensors", "--root-ca-name groupCA-sensors", "--allocation-policy static", `{"telemetryDelay":1}`},
	}
	for _, w := range want {
		if !hasCall(calls, w...) {
			t.Errorf("no az call with %q; calls:\n%s", w, strings.Join(calls, "\n"))
		}
	}
	// The verification certificate must carry the code DPS handed out.
	out, err := exec.Command("openssl", "x509", "-noout", "-subject", "-in", filepath.Join(certs, "verification.pem")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "CODE0123456789") {
		t.Errorf("verification.pem subject = %q, %v; want CN CODE0123456789", out, err)
	}
}

func TestSetupIsIdempotent(t *testing.T) {
	t.Parallel()
	certs := makeCA(t)
	calls, stderr, err := runFleet(t, certs, "rg-trackers hub-trackers dps-trackers groupCA-sensors enrollgroup-sensors", "setup")
	if err != nil {
		t.Fatalf("fleet.sh setup: %v\n%s", err, stderr)
	}
	for _, verb := range []string{"group create", "iot hub create", "iot dps create", "certificate create", "enrollment-group create"} {
		if hasCall(calls, verb) {
			t.Errorf("setup with everything present still ran %q", verb)
		}
	}
}

func TestDisenrollAndReenroll(t *testing.T) {
	t.Parallel()
	certs := makeCA(t)
	calls, stderr, err := runFleet(t, certs, "sensor-thl-002", "disenroll", "sensor-thl-002")
	if err != nil {
		t.Fatalf("disenroll: %v\n%s", err, stderr)
	}
	// The enrollment "exists" in this fake, so it is updated to disabled, and
	// the hub identity is deleted as well (spec C: both steps are needed).
	if !hasCall(calls, "enrollment update", "--enrollment-id sensor-thl-002", "--provisioning-status disabled") {
		t.Errorf("disenroll did not disable the individual enrollment; calls:\n%s", strings.Join(calls, "\n"))
	}
	if !hasCall(calls, "device-identity delete", "--device-id sensor-thl-002") {
		t.Errorf("disenroll did not delete the hub identity; calls:\n%s", strings.Join(calls, "\n"))
	}

	calls, _, err = runFleet(t, certs, "", "disenroll", "sensor-thl-002")
	if err != nil || !hasCall(calls, "enrollment create", "--attestation-type x509", "--certificate-path "+certs+"/devices/sensor-thl-002/sensor-thl-002.pem", "--provisioning-status disabled") {
		t.Errorf("disenroll of a new device: %v; calls:\n%s", err, strings.Join(calls, "\n"))
	}

	calls, _, err = runFleet(t, certs, "sensor-thl-002", "reenroll", "sensor-thl-002")
	if err != nil || !hasCall(calls, "enrollment delete", "--enrollment-id sensor-thl-002") {
		t.Errorf("reenroll: %v; calls:\n%s", err, strings.Join(calls, "\n"))
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"setup"}, "run deploy/certs/ca.sh"},
		{[]string{"disenroll", "sensor-thl-404"}, "no certificate"},
		{[]string{"twin", "sensor-thl-001"}, "usage: twin DEVICE JSON"},
		{[]string{"bogus"}, "unknown command bogus"},
		{[]string{"--nope", "setup"}, "unknown option --nope"},
	}
	for _, tt := range tests {
		_, stderr, err := runFleet(t, t.TempDir(), "", tt.args...)
		if err == nil || !strings.Contains(stderr, tt.want) {
			t.Errorf("fleet.sh %q: err %v, stderr %q; want failure mentioning %q", tt.args, err, stderr, tt.want)
		}
	}
}
