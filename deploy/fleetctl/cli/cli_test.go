package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reefer/tracker/deploy/emulator"
	"github.com/reefer/tracker/deploy/emulator/emulatortest"
	"github.com/reefer/tracker/deploy/emulator/pki"
	"github.com/reefer/tracker/internal/ctxtime"
	"github.com/reefer/tracker/provisioning/dps"
	"github.com/reefer/tracker/provisioning/iothub"
)

// fleetEnv is an emulator with a verified CA, ready for fleetctl.
type fleetEnv struct {
	e           *emulator.Emulator
	info        string // emulator.json
	root, inter *pki.Cert
	dir         string
}

func newFleetEnv(t *testing.T) *fleetEnv {
	t.Helper()
	e := emulatortest.Start(t)
	root, err := pki.NewRootCA("Operator Test Root", pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediateCA("Operator Test Intermediate", pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fe := &fleetEnv{e: e, info: filepath.Join(filepath.Dir(e.Info().CACertPath), "emulator.json"), root: root, inter: inter, dir: t.TempDir()}
	if _, err := os.Stat(fe.info); err != nil {
		t.Fatalf("emulator.json: %v", err)
	}
	return fe
}

// run runs fleetctl against the emulator (connection strings, address and
// CA from its emulator.json) and returns the exit code and both outputs.
func (fe *fleetEnv) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	getenv := func(k string) string {
		if k == EnvEmulator {
			return fe.info
		}
		return ""
	}
	code := Main(context.Background(), args, &out, &errb, getenv)
	return code, out.String(), errb.String()
}

// ok runs fleetctl and fails the test unless it exits 0.
func (fe *fleetEnv) ok(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errs := fe.run(t, args...)
	if code != ExitOK {
		t.Fatalf("fleetctl %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

// fails runs fleetctl and checks the exit code and that stderr says want.
func (fe *fleetEnv) fails(t *testing.T, code int, want string, args ...string) {
	t.Helper()
	got, out, errs := fe.run(t, args...)
	if got != code || !strings.Contains(errs, want) {
		t.Errorf("fleetctl %s: exit %d, stderr %q (stdout %q); want exit %d mentioning %q", strings.Join(args, " "), got, errs, out, code, want)
	}
	if strings.Contains(errs, "goroutine ") || strings.Contains(errs, "panic") {
		t.Errorf("fleetctl %s printed a stack trace:\n%s", strings.Join(args, " "), errs)
	}
}

func (fe *fleetEnv) file(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(fe.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func decode[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("output is not the JSON expected: %v\n%s", err, s)
	}
	return v
}

// register runs a real DPS registration of a device of the intermediate.
func (fe *fleetEnv) register(t *testing.T, id string) (*dps.Result, error) {
	t.Helper()
	leaf, err := fe.inter.NewClient(id, pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return dps.Register(ctx, dps.Config{Endpoint: fe.e.DPSEndpoint(), IDScope: fe.e.IDScope(), RegistrationID: id,
		TLS: fe.e.ClientTLSConfig(leaf.TLS()), MaxAttempts: 1,
		// The client's 2 s polling floor is for Azure; the emulator
		// answers at once.
		Sleep: func(ctx context.Context, d time.Duration) error {
			return ctxtime.Sleep(ctx, min(d, 20*time.Millisecond))
		}})
}

// The whole life of a group through fleetctl, with real registrations
// showing each step's effect on DPS.
func TestGroupLifecycle(t *testing.T) {
	t.Parallel()
	fe := newFleetEnv(t)
	root := fe.file(t, "root.pem", fe.root.PEM())

	// CA with proof of possession (emulator routes).
	fe.ok(t, "ca", "upload", "groupCA", "--cert", root)
	code := decode[struct {
		Properties struct{ VerificationCode string }
	}](t, fe.ok(t, "ca", "code", "groupCA", "-o", "json")).Properties.VerificationCode
	proof, err := fe.root.NewVerification(code)
	if err != nil {
		t.Fatal(err)
	}
	v := decode[struct {
		Properties struct{ IsVerified bool }
	}](t, fe.ok(t, "ca", "verify", "groupCA", "--cert", fe.file(t, "proof.pem", proof.PEM()), "-o", "json"))
	if !v.Properties.IsVerified {
		t.Fatal("CA not verified after proof of possession")
	}

	hub := fe.e.HubHost(0)
	out := fe.ok(t, "group", "create", "fleet-a", "--ca-name", "groupCA", "--iot-hub", hub, "--initial-twin", `{"telemetryDelay":1}`)
	if !strings.Contains(out, "fleet-a") || !strings.Contains(out, "static") || !strings.Contains(out, `{"telemetryDelay":1}`) {
		t.Errorf("group create table:\n%s", out)
	}
	fe.fails(t, ExitFailed, "already exists", "group", "create", "fleet-a", "--ca-name", "groupCA")
	// A group whose devices get their hub certificates issued by DPS
	// (the policy must exist on the emulator).
	fe.ok(t, "credential-policy", "create", "trackers")
	fe.ok(t, "group", "create", "fleet-issued", "--ca-name", "groupCA", "--credential-policy", "trackers", "--disabled")
	if g, err := fe.e.Store().GetEnrollmentGroup("fleet-issued"); err != nil || g.CredentialPolicyName != "trackers" {
		t.Errorf("fleet-issued: credentialPolicyName %q, %v; want trackers", g.CredentialPolicyName, err)
	}
	fe.ok(t, "group", "delete", "fleet-issued")

	for _, id := range []string{"box-1", "box-2"} {
		if res, err := fe.register(t, id); err != nil || res.DeviceID != id {
			t.Fatalf("register %s: %+v, %v", id, res, err)
		}
	}
	// The initial twin reached the hub; twin update by query and by id.
	tw := decode[struct {
		Properties struct{ Desired map[string]any }
	}](t, fe.ok(t, "twin", "show", "box-1", "-o", "json"))
	if fmt.Sprint(tw.Properties.Desired["telemetryDelay"]) != "1" {
		t.Errorf("initial twin not applied: %v", tw.Properties.Desired)
	}
	fe.ok(t, "twin", "update", "--where", "properties.desired.telemetryDelay = 1", "--desired", `{"telemetryDelay":5}`)
	twins := decode[[]struct{ DeviceID string }](t, fe.ok(t, "device", "list", "--where", "properties.desired.telemetryDelay = 5", "-o", "json"))
	if len(twins) != 2 {
		t.Errorf("after twin update --where: %d devices with telemetryDelay 5; want 2", len(twins))
	}
	fe.ok(t, "twin", "update", "box-2", "--desired", `{"telemetryDelay":7}`)
	if n := len(decode[[]any](t, fe.ok(t, "device", "list", "--where", "properties.desired.telemetryDelay = 7", "-o", "json"))); n != 1 {
		t.Errorf("twin update box-2: %d devices at 7; want 1", n)
	}
	fe.fails(t, ExitFailed, "404103", "method", "invoke", "box-1", "getStatus") // registered, never connected

	// Disenroll one device: refused by DPS, identity gone; re-enroll: back.
	fe.ok(t, "enrollment", "disenroll", "box-2")
	if _, err := fe.register(t, "box-2"); !errors.Is(err, dps.ErrDisabled) {
		t.Errorf("register after disenroll = %v; want ErrDisabled", err)
	}
	fe.fails(t, ExitFailed, "404001", "device", "show", "box-2")
	fe.ok(t, "enrollment", "reenroll", "box-2")
	if _, err := fe.register(t, "box-2"); err != nil {
		t.Errorf("register after re-enroll = %v; want assigned", err)
	}

	// Registration records, then the group's end of life step by step.
	recs := decode[[]struct{ RegistrationID, Status string }](t, fe.ok(t, "registration", "list", "--group", "fleet-a", "-o", "json"))
	if len(recs) != 2 {
		t.Fatalf("registration list = %+v; want 2 records", recs)
	}
	fe.ok(t, "group", "disable", "fleet-a")
	if _, err := fe.register(t, "box-1"); !errors.Is(err, dps.ErrDisabled) {
		t.Errorf("register under a disabled group = %v; want ErrDisabled", err)
	}
	fe.ok(t, "device", "delete", "--group", "fleet-a")
	fe.ok(t, "registration", "delete", "--group", "fleet-a")
	if n := len(decode[[]any](t, fe.ok(t, "registration", "list", "--group", "fleet-a", "-o", "json"))); n != 0 {
		t.Errorf("%d registration records left", n)
	}
	if n := len(decode[[]any](t, fe.ok(t, "device", "list", "-o", "json"))); n != 0 {
		t.Errorf("%d hub identities left", n)
	}
	fe.ok(t, "group", "delete", "fleet-a")
	fe.fails(t, ExitFailed, "not found", "group", "show", "fleet-a")
	fe.ok(t, "ca", "delete", "groupCA")
	fe.fails(t, ExitFailed, "404", "ca", "show", "groupCA")
}

// A port call from a CSV: bulk disenroll writes disabled entries in DPS
// bulk operations of at most 10 and deletes identities; bulk re-enroll
// removes the entries.
func TestBulkFromCSV(t *testing.T) {
	t.Parallel()
	fe := newFleetEnv(t)
	fe.ok(t, "ca", "upload", "root", "--cert", fe.file(t, "root.pem", fe.root.PEM()), "--verified")
	fe.ok(t, "group", "create", "port", "--ca-name", "root")
	var csv strings.Builder
	csv.WriteString("container,deviceId\n")
	var ids []string
	for i := range 23 {
		id := fmt.Sprintf("reefer-%03d", i)
		ids = append(ids, id)
		fmt.Fprintf(&csv, "MSCU%07d,%s\n", i, id)
	}
	path := fe.file(t, "port.csv", csv.String())
	if _, err := fe.register(t, ids[3]); err != nil {
		t.Fatal(err)
	}

	s := decode[[]struct {
		Step        string
		Total, Done int
	}](t, fe.ok(t, "enrollment", "bulk-disenroll", "--csv", path, "-o", "json"))
	if len(s) != 2 || s[0].Done != 23 || s[1].Done != 23 {
		t.Fatalf("bulk-disenroll summary = %+v; want 23 disenrolled and 23 identities handled", s)
	}
	for _, id := range []string{ids[0], ids[22]} {
		e := decode[struct{ ProvisioningStatus string }](t, fe.ok(t, "enrollment", "show", id, "-o", "json"))
		if e.ProvisioningStatus != "disabled" {
			t.Errorf("%s: provisioningStatus %q; want disabled", id, e.ProvisioningStatus)
		}
	}
	if _, err := fe.register(t, ids[3]); !errors.Is(err, dps.ErrDisabled) {
		t.Errorf("register after bulk disenroll = %v; want ErrDisabled", err)
	}
	fe.fails(t, ExitFailed, "404", "device", "show", ids[3])

	fe.ok(t, "enrollment", "bulk-reenroll", "--csv", path)
	fe.fails(t, ExitFailed, "not found", "enrollment", "show", ids[0])
	if _, err := fe.register(t, ids[3]); err != nil {
		t.Errorf("register after bulk re-enroll = %v; want assigned", err)
	}
	// Re-enrolling again is harmless: nothing left to delete.
	fe.ok(t, "enrollment", "bulk-reenroll", ids[0], ids[1])
}

func TestDryRunSendsNoChange(t *testing.T) {
	t.Parallel()
	fe := newFleetEnv(t)
	fe.ok(t, "ca", "upload", "root", "--cert", fe.file(t, "root.pem", fe.root.PEM()), "--verified")
	fe.ok(t, "group", "create", "g", "--ca-name", "root")
	out := fe.ok(t, "--dry-run", "group", "disable", "g")
	for _, want := range []string{"PUT https://", "/enrollmentGroups/g?api-version=2025-07-01-preview", "If-Match: ", `"provisioningStatus": "disabled"`, "sig=<redacted>"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run output lacks %q:\n%s", want, out)
		}
	}
	g := decode[struct{ ProvisioningStatus string }](t, fe.ok(t, "group", "show", "g", "-o", "json"))
	if g.ProvisioningStatus != "enabled" {
		t.Errorf("after a dry run the group is %q; want still enabled", g.ProvisioningStatus)
	}
	out = fe.ok(t, "enrollment", "bulk-disenroll", "a-1", "a-2", "a-3", "a-4", "--dry-run")
	if !strings.Contains(out, "POST https://") || !strings.Contains(out, `"mode": "update"`) || strings.Count(out, "DELETE https://") != 4 {
		t.Errorf("bulk dry run:\n%s", out)
	}
	// Requests printed from parallel workers stay whole.
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "DELETE ") && (i+2 >= len(lines) || !strings.HasPrefix(lines[i+1], "Authorization: ") || !strings.HasPrefix(lines[i+2], "If-Match: ")) {
			t.Errorf("dry-run request %d not printed whole:\n%s", i, out)
		}
	}
	fe.fails(t, ExitFailed, "not found", "enrollment", "show", "a-1")
}

func TestErrors(t *testing.T) {
	t.Parallel()
	fe := newFleetEnv(t)
	inf := decode[emulatorInfo](t, mustRead(t, fe.info))
	wrongKey := strings.Replace(inf.DPS.ConnectionString, "SharedAccessKey=", "SharedAccessKey=AAAA", 1)
	tests := []struct {
		code int
		want string
		args []string
	}{
		{ExitUsage, "SharedAccessKey is missing", []string{"--dps-connection-string", "HostName=x;SharedAccessKeyName=p", "group", "list"}},
		{ExitUsage, "device connection string", []string{"--hub-connection-string", "HostName=h;DeviceId=d;SharedAccessKey=a2V5", "device", "list"}},
		{ExitUsage, "not base64", []string{"--dps-connection-string", "HostName=x;SharedAccessKeyName=p;SharedAccessKey=!!", "group", "list"}},
		{ExitFailed, "refused the shared access signature", []string{"--dps-connection-string", wrongKey, "group", "list"}},
		{ExitFailed, "404202", []string{"group", "show", "nope"}},
		{ExitFailed, "not found", []string{"registration", "show", "nope"}},
		{ExitUsage, "unknown command", []string{"group", "explode"}},
		{ExitUsage, "--output must be table or json", []string{"group", "list", "-o", "xml"}},
		{ExitUsage, "usage: fleetctl group show GROUP", []string{"group", "show"}},
		{ExitUsage, "exactly one of --ca-name or --signing-cert", []string{"group", "create", "g"}},
		{ExitUsage, "must be a JSON object", []string{"twin", "update", "d", "--desired", "3"}},
		{ExitUsage, "not a valid device id", []string{"device", "delete", "bad id!"}},
		{ExitFailed, "line 3", []string{"enrollment", "bulk-reenroll", "--csv", fe.file(t, "bad.csv", "deviceId\nok-1\nnot ok\n")}},
	}
	for _, tt := range tests {
		fe.fails(t, tt.code, tt.want, tt.args...)
	}
	// No connection string at all.
	var out, errb bytes.Buffer
	if code := Main(context.Background(), []string{"group", "list"}, &out, &errb, func(string) string { return "" }); code != ExitConnect || !strings.Contains(errb.String(), EnvDPS) {
		t.Errorf("without a connection string: exit %d, %q", code, errb.String())
	}
	// An unreachable service.
	dead := "HostName=127.0.0.1:1;SharedAccessKeyName=p;SharedAccessKey=a2V5"
	fe.fails(t, ExitFailed, "cannot reach DPS", "--emulator", "", "--dps-connection-string", dead, "--service-url", "https://127.0.0.1:1", "group", "list")
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A connected device: fleetctl watches its telemetry on the emulator's
// stream and invokes a direct method it answers; group deprovision then
// takes the whole group down.
func TestMonitorMethodAndDeprovision(t *testing.T) {
	t.Parallel()
	fe := newFleetEnv(t)
	fe.ok(t, "ca", "upload", "root", "--cert", fe.file(t, "root.pem", fe.root.PEM()), "--verified")
	fe.ok(t, "group", "create", "trip", "--ca-name", "root", "--initial-tags", `{"trip":"T42"}`)
	leaf, err := fe.inter.NewClient("box-9", pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := dps.Register(ctx, dps.Config{Endpoint: fe.e.DPSEndpoint(), IDScope: fe.e.IDScope(), RegistrationID: "box-9",
		TLS: fe.e.ClientTLSConfig(leaf.TLS()), MaxAttempts: 1,
		Sleep: func(ctx context.Context, d time.Duration) error {
			return ctxtime.Sleep(ctx, min(d, 20*time.Millisecond))
		}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fe.register(t, "box-10"); err != nil {
		t.Fatal(err)
	}
	// A short back-off: after the identity is deleted the client gives up
	// only after NotAuthorizedLimit refused reconnects, which with the 1 s
	// default (doubling, jittered) took more than the 10 s below under load.
	c, err := iothub.New(iothub.Config{Hub: res.AssignedHub, DeviceID: res.DeviceID, TLS: fe.e.ClientTLSConfig(leaf.TLS()),
		BackoffBase: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.HandleMethod("getStatus", func(_ context.Context, payload json.RawMessage) (int, any) {
		return 200, map[string]any{"echo": json.RawMessage(payload), "ok": true}
	})
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	// The initial twin's tag selects the devices of the trip.
	if n := len(decode[[]any](t, fe.ok(t, "device", "list", "--where", "tags.trip = 'T42'", "-o", "json"))); n != 2 {
		t.Errorf("devices tagged T42: %d; want 2", n)
	}
	out := fe.ok(t, "method", "invoke", "box-9", "getStatus", "--payload", `{"verbose":true}`, "-o", "json")
	m := decode[struct {
		Status  int
		Payload struct {
			Echo map[string]any
			OK   bool
		}
	}](t, out)
	if m.Status != 200 || !m.Payload.OK || m.Payload.Echo["verbose"] != true {
		t.Errorf("method answer %s", out)
	}

	done := make(chan string, 1)
	go func() { done <- fe.ok(t, "monitor", "--device", "box-9", "--count", "2", "--duration", "20s") }()
	// The stream starts from now, so keep sending until monitor has its 2.
	var mon string
	for i := 0; mon == ""; i++ {
		if err := c.Send(ctx, iothub.Message{Body: fmt.Appendf(nil, `{"seq":%d}`, i), Properties: map[string]string{"temperatureAlert": "false"}}); err != nil {
			t.Fatal(err)
		}
		select {
		case mon = <-done:
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("monitor did not end after 2 messages")
		}
	}
	if strings.Count(mon, "box-9") < 1 || !strings.Contains(mon, `"temperatureAlert":"false"`) {
		t.Errorf("monitor output:\n%s", mon)
	}

	out = fe.ok(t, "group", "deprovision", "trip")
	for _, want := range []string{"delete hub identities", "delete registration records", "delete enrollment group"} {
		if !strings.Contains(out, want) {
			t.Errorf("deprovision summary lacks %q:\n%s", want, out)
		}
	}
	select {
	case <-c.Done(): // the hub closed the deleted identity's connection
	case <-time.After(10 * time.Second):
		t.Error("the device stayed connected after its identity was deleted")
	}
	fe.fails(t, ExitFailed, "not found", "group", "show", "trip")
	if n := len(decode[[]any](t, fe.ok(t, "registration", "list", "--group", "trip", "-o", "json"))); n != 0 {
		t.Errorf("%d registration records left", n)
	}
	if n := len(decode[[]any](t, fe.ok(t, "device", "list", "-o", "json"))); n != 0 {
		t.Errorf("%d identities left", n)
	}
}

// A group word alone, or with -h, lists that group's commands instead of
// calling the group an unknown command.
func TestGroupAloneListsItsCommands(t *testing.T) {
	t.Parallel()
	none := func(string) string { return "" }
	tests := []struct {
		args       []string
		code       int
		toStdout   bool
		want, deny string
	}{
		{[]string{"credential-policy", "-h"}, ExitOK, true, "credential-policy create NAME", "group create"},
		{[]string{"group", "--help"}, ExitOK, true, "group set-credential-policy GROUP", "credential-policy create"},
		{[]string{"group"}, ExitUsage, false, "which command?", "enrollment create"},
		{[]string{"group", "explode"}, ExitUsage, false, "unknown command \"group explode\"; the group commands are:\n  group create", "credential-policy create"},
		{[]string{"nope", "-h"}, ExitUsage, false, "unknown command \"nope\"; run fleetctl help", "group"},
	}
	for _, tt := range tests {
		var out, errb bytes.Buffer
		code := Main(context.Background(), tt.args, &out, &errb, none)
		got, other := errb.String(), out.String()
		if tt.toStdout {
			got, other = other, got
		}
		if code != tt.code || !strings.Contains(got, tt.want) || strings.Contains(got, tt.deny) || other != "" {
			t.Errorf("fleetctl %s: exit %d, stdout %q, stderr %q; want exit %d and %q (not %q) on one stream", strings.Join(tt.args, " "), code, out.String(), errb.String(), tt.code, tt.want, tt.deny)
		}
	}
}
