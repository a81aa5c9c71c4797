package azure

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeAz is an az that logs each call (arguments separated by \x1f, one
// call per line) and answers the few queries fleet.sh reads. Resources
// "exist" when their name is listed in $FAKE_AZ_EXISTS; the CA's etag is
// there unless $FAKE_AZ_MISSING names it.
const fakeAz = `#!/usr/bin/env bash
printf '%s\x1f' "$@" >> "$FAKE_AZ_LOG"; echo >> "$FAKE_AZ_LOG"
args="$*"
case "$args" in
*"hub connection-string show"*) echo "HostName=hub-trackers.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=aHVia2V5" ;;
*"dps connection-string show"*) echo "HostName=dps-trackers.azure-devices-provisioning.net;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=ZHBza2V5" ;;
*"linked-hub list"*) ;;
*"certificate show"*"properties.isVerified"*) echo false ;;
*"certificate show"*"--query etag"*)
	case " $FAKE_AZ_MISSING " in *" groupCA-sensors "*) exit 3 ;; esac
	echo etag-1 ;;
*"generate-verification-code"*) printf 'CODE0123456789\netag-2\n' ;;
*"dps show"*"idScope"*) echo 0ne00ABCDEF ;;
*" show "*)
	for r in $FAKE_AZ_EXISTS; do case "$args" in *" $r "*|*" $r") exit 0 ;; esac; done
	exit 3 ;;
esac
`

// fakeFleetctl logs its arguments and whether it got both connection
// strings in its environment; "group show" fails unless the group is in
// $FAKE_FLEETCTL_EXISTS.
const fakeFleetctl = `#!/usr/bin/env bash
printf '%s\x1f' "$@" >> "$FAKE_FLEETCTL_LOG"
printf 'env=%s|%s\n' "${FLEETCTL_DPS_CONNECTION_STRING%%;*}" "${FLEETCTL_HUB_CONNECTION_STRING%%;*}" >> "$FAKE_FLEETCTL_LOG"
if [ "$1 $2" = "group show" ]; then
	case " $FAKE_FLEETCTL_EXISTS " in *" $3 "*) exit 0 ;; esac
	echo "fleetctl group show: not found" >&2; exit 1
fi
`

type fleetRun struct {
	az, fleetctl [][]string // each call's arguments
	fleetEnv     []string   // the connection strings each fleetctl call saw
	stderr       string
	err          error
}

func runFleet(t *testing.T, certs, exists string, args ...string) fleetRun {
	return runFleetEnv(t, certs, exists, nil, args...)
}

func runFleetEnv(t *testing.T, certs, exists string, env []string, args ...string) fleetRun {
	t.Helper()
	bin := t.TempDir()
	for name, script := range map[string]string{"az": fakeAz, "fleetctl": fakeFleetctl} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	logs := t.TempDir()
	azLog, flLog := filepath.Join(logs, "az.log"), filepath.Join(logs, "fleetctl.log")
	cmd := exec.Command("./fleet.sh", append([]string{"--certs", certs}, args...)...)
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "FAKE_AZ_LOG="+azLog, "FAKE_AZ_EXISTS="+exists,
		"FAKE_FLEETCTL_LOG="+flLog, "FAKE_FLEETCTL_EXISTS="+exists,
		// The caller's own settings must not leak into fleet.sh's fleetctl.
		"FLEETCTL_DPS_CONNECTION_STRING=HostName=elsewhere;SharedAccessKeyName=x;SharedAccessKey=eA==", "FLEETCTL_EMULATOR=/tmp/emulator.json")
	cmd.Env = append(cmd.Env, env...)
	var se strings.Builder
	cmd.Stderr = &se
	r := fleetRun{err: cmd.Run()}
	r.stderr = se.String()
	b, _ := os.ReadFile(azLog)
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line != "" {
			r.az = append(r.az, strings.Split(strings.TrimSuffix(line, "\x1f"), "\x1f"))
		}
	}
	b, _ = os.ReadFile(flLog)
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		argv, env, _ := strings.Cut(line, "env=")
		r.fleetctl = append(r.fleetctl, strings.Split(strings.TrimSuffix(argv, "\x1f"), "\x1f"))
		r.fleetEnv = append(r.fleetEnv, env)
	}
	// Every az call, in every test, must be one az documents.
	for _, c := range r.az {
		if err := checkAzCall(c); err != nil {
			t.Errorf("fleet.sh %s: %v\n  call: az %s", strings.Join(args, " "), err, strings.Join(c, " "))
		}
	}
	for i, env := range r.fleetEnv {
		if env != "HostName=dps-trackers.azure-devices-provisioning.net|HostName=hub-trackers.azure-devices.net" {
			t.Errorf("fleetctl %s ran with connection strings %q; want this RG's DPS and hub", strings.Join(r.fleetctl[i], " "), env)
		}
		for _, a := range r.fleetctl[i] {
			if strings.Contains(a, "SharedAccessKey") {
				t.Errorf("a key on fleetctl's command line: %q", a)
			}
		}
	}
	return r
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

// has reports whether some call has all parts as consecutive-or-not
// arguments: each part is "word" or "--flag value".
func has(calls [][]string, parts ...string) bool {
	for _, c := range calls {
		line := "\x1f" + strings.Join(c, "\x1f") + "\x1f"
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(line, "\x1f"+strings.ReplaceAll(p, " ", "\x1f")+"\x1f")
		}
		if ok {
			return true
		}
	}
	return false
}

func show(calls [][]string) string {
	var b strings.Builder
	for _, c := range calls {
		b.WriteString("  " + strings.Join(c, " ") + "\n")
	}
	return b.String()
}

func TestSetupFromScratch(t *testing.T) {
	t.Parallel()
	certs := makeCA(t)
	r := runFleet(t, certs, "", "setup")
	if r.err != nil {
		t.Fatalf("fleet.sh setup: %v\n%s", r.err, r.stderr)
	}
	want := [][]string{
		{"group create", "--name rg-trackers", "--location westeurope"},
		{"iot hub create", "--name hub-trackers", "--sku S1"},
		{"iot dps create", "--name dps-trackers"},
		{"linked-hub create", "--connection-string HostName=hub-trackers.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=aHVia2V5"},
		{"certificate create", "--certificate-name groupCA-sensors", "--path " + certs + "/root.pem"},
		{"generate-verification-code", "--etag etag-1"},
		{"certificate verify", "--path " + certs + "/verification.pem", "--etag etag-2"},
	}
	for _, w := range want {
		if !has(r.az, w...) {
			t.Errorf("no az call with %q; calls:\n%s", w, show(r.az))
		}
	}
	if has(r.az, "enrollment-group") {
		t.Errorf("setup still uses az for the enrollment group; calls:\n%s", show(r.az))
	}
	if !has(r.fleetctl, "group create enrollgroup-sensors", "--ca-name groupCA-sensors", "--iot-hub hub-trackers.azure-devices.net",
		"--allocation-policy static", `--initial-twin {"telemetryDelay":1}`) {
		t.Errorf("no fleetctl group create; calls:\n%s", show(r.fleetctl))
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
	r := runFleet(t, certs, "rg-trackers hub-trackers dps-trackers groupCA-sensors enrollgroup-sensors", "setup")
	if r.err != nil {
		t.Fatalf("fleet.sh setup: %v\n%s", r.err, r.stderr)
	}
	for _, verb := range []string{"group create", "iot hub create", "iot dps create", "certificate create"} {
		if has(r.az, verb) {
			t.Errorf("setup with everything present still ran az %q", verb)
		}
	}
	if has(r.fleetctl, "group create") {
		t.Errorf("setup with the group present still created it:\n%s", show(r.fleetctl))
	}
}

// The data-plane commands are fleetctl's; az only supplies the connection
// strings.
func TestDataPlaneGoesThroughFleetctl(t *testing.T) {
	t.Parallel()
	certs := makeCA(t)
	csv := filepath.Join(t.TempDir(), "port.csv")
	tests := []struct {
		args []string
		want [][]string
	}{
		{[]string{"disenroll", "sensor-thl-002"}, [][]string{{"enrollment disenroll sensor-thl-002", "--cert " + certs + "/devices/sensor-thl-002/sensor-thl-002.pem"}}},
		{[]string{"disenroll", "sensor-thl-009"}, [][]string{{"enrollment disenroll sensor-thl-009"}}},
		{[]string{"reenroll", "sensor-thl-002"}, [][]string{{"enrollment reenroll sensor-thl-002"}}},
		{[]string{"twin", "sensor-thl-001", `{"telemetryDelay":3}`}, [][]string{{"twin update sensor-thl-001", `--desired {"telemetryDelay":3}`}}},
		{[]string{"bulk-disenroll", csv}, [][]string{{"enrollment bulk-disenroll", "--csv " + csv}}},
		{[]string{"bulk-reenroll", csv}, [][]string{{"enrollment bulk-reenroll", "--csv " + csv}}},
		{[]string{"disable-group"}, [][]string{{"group disable enrollgroup-sensors"}, {"device delete", "--group enrollgroup-sensors"}}},
		{[]string{"enable-group"}, [][]string{{"group enable enrollgroup-sensors"}}},
		{[]string{"deprovision-group"}, [][]string{{"group deprovision enrollgroup-sensors"}}},
		{[]string{"--group", "g2", "fleetctl", "registration", "list", "--group", "g2"}, [][]string{{"registration list", "--group g2"}}},
	}
	for _, tt := range tests {
		r := runFleet(t, certs, "", tt.args...)
		if r.err != nil {
			t.Errorf("fleet.sh %q: %v\n%s", tt.args, r.err, r.stderr)
			continue
		}
		for _, w := range tt.want {
			if !has(r.fleetctl, w...) {
				t.Errorf("fleet.sh %q: no fleetctl call with %q; calls:\n%s", tt.args, w, show(r.fleetctl))
			}
		}
		if len(r.fleetctl) != len(tt.want) {
			t.Errorf("fleet.sh %q: %d fleetctl calls; want %d:\n%s", tt.args, len(r.fleetctl), len(tt.want), show(r.fleetctl))
		}
		for _, c := range r.az {
			if !has([][]string{c}, "connection-string show") {
				t.Errorf("fleet.sh %q: az %s; only the connection strings should come from az", tt.args, strings.Join(c, " "))
			}
		}
	}
}

func TestTeardownAndRemoveCA(t *testing.T) {
	t.Parallel()
	certs := makeCA(t)
	r := runFleet(t, certs, "rg-trackers", "teardown")
	if r.err == nil || !strings.Contains(r.stderr, "teardown --yes") || has(r.az, "group delete") {
		t.Errorf("teardown without --yes: %v, %q, calls:\n%s", r.err, r.stderr, show(r.az))
	}
	r = runFleet(t, certs, "rg-trackers", "teardown", "--yes")
	if r.err != nil || !has(r.az, "group delete", "--name rg-trackers", "--yes") {
		t.Errorf("teardown --yes: %v\n%s\ncalls:\n%s", r.err, r.stderr, show(r.az))
	}
	r = runFleet(t, certs, "groupCA-sensors", "remove-ca")
	if r.err != nil || !has(r.az, "iot dps certificate delete", "--certificate-name groupCA-sensors", "--etag etag-1") {
		t.Errorf("remove-ca: %v\n%s\ncalls:\n%s", r.err, r.stderr, show(r.az))
	}
	r = runFleetEnv(t, certs, "", []string{"FAKE_AZ_MISSING=groupCA-sensors"}, "remove-ca")
	if r.err != nil || has(r.az, "certificate delete") || !strings.Contains(r.stderr, "not on dps-trackers") {
		t.Errorf("remove-ca without a CA: %v, %q", r.err, r.stderr)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"setup"}, "run deploy/certs/ca.sh"},
		{[]string{"twin", "sensor-thl-001"}, "usage: twin DEVICE JSON"},
		{[]string{"bulk-disenroll"}, "usage: bulk-disenroll CSV"},
		{[]string{"bogus"}, "unknown command bogus"},
		{[]string{"--nope", "setup"}, "unknown option --nope"},
		{[]string{"--fleetctl", "/nonexistent/fleetctl", "reenroll", "x"}, "fleetctl not found"},
	}
	for _, tt := range tests {
		r := runFleet(t, t.TempDir(), "", tt.args...)
		if r.err == nil || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("fleet.sh %q: err %v, stderr %q; want failure mentioning %q", tt.args, r.err, r.stderr, tt.want)
		}
	}
}

// The checker itself must refuse what az would: an unknown command, an
// undocumented parameter, a missing required one.
func TestAzTableRefusesWrongCalls(t *testing.T) {
	t.Parallel()
	bad := [][]string{
		{"iot", "dps", "enrollment-group", "create", "--dps-name", "d"},                                           // not in the table: fleetctl's job
		{"iot", "dps", "certificate", "verify", "--dps-name", "d", "--certificate-name", "c", "--path", "p"},      // no --etag
		{"iot", "dps", "certificate", "create", "--dps-name", "d", "--certificate-name", "c", "--file", "p"},      // --file is not a parameter
		{"group", "create", "--name", "rg"},                                                                       // no --location
		{"iot", "hub", "connection-string", "show", "--hub-name", "h", "--hub-name", "h"},                         // twice
		{"iot", "dps", "linked-hub", "create", "--resource-group", "rg", "--connection-string", "HostName=h;..."}, // no --dps-name
	}
	for _, c := range bad {
		if err := checkAzCall(c); err == nil {
			t.Errorf("checkAzCall(az %s) = nil; want an error", strings.Join(c, " "))
		}
	}
	good := []string{"iot", "dps", "certificate", "verify", "-n", "c", "--dps-name", "d", "-e", "x", "-p", "v.pem", "-o", "none"}
	if err := checkAzCall(good); err != nil {
		t.Errorf("checkAzCall(az %s) = %v; want nil (aliases)", strings.Join(good, " "), err)
	}
}
