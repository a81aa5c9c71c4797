package cli

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/reefer/tracker/deploy/emulator/pki"
	"github.com/reefer/tracker/deploy/fleetctl/azrest"
)

// Credential policies on the emulator: created, shown, named by a group
// and an individual enrollment, kept through disable/enable and
// disenroll, removed.
func TestCredentialPolicyOnEmulator(t *testing.T) {
	t.Parallel()
	fe := newFleetEnv(t)
	st := fe.e.Store()
	fe.ok(t, "ca", "upload", "root", "--cert", fe.file(t, "root.pem", fe.root.PEM()), "--verified")

	p := decode[azrest.CredentialPolicy](t, fe.ok(t, "credential-policy", "create", "trackers", "--validity", "2m", "-o", "json"))
	if p.Name != "trackers" || p.ValiditySeconds != 120 {
		t.Fatalf("created %+v; want trackers, 120 s", p)
	}
	issuing, root := parsePEM(t, p.IssuingCertificate), parsePEM(t, p.RootCertificate)
	if err := issuing.CheckSignatureFrom(root); err != nil {
		t.Errorf("the policy's issuing CA is not signed by its root: %v", err)
	}
	if out := fe.ok(t, "credential-policy", "show", "trackers"); !strings.Contains(out, "trackers  2m0s") || !strings.Contains(out, issuing.Subject.String()) {
		t.Errorf("credential-policy show:\n%s", out)
	}
	if ps := decode[[]azrest.CredentialPolicy](t, fe.ok(t, "credential-policy", "list", "-o", "json")); len(ps) != 1 || ps[0].Name != "trackers" {
		t.Errorf("credential-policy list = %+v", ps)
	}
	fe.fails(t, ExitFailed, "already exists", "credential-policy", "create", "trackers")
	fe.fails(t, ExitUsage, "whole number of seconds", "credential-policy", "create", "x", "--validity", "1500ms")
	if sp, err := st.GetCredentialPolicy("trackers"); err != nil || sp.ValiditySeconds != 120 {
		t.Errorf("second create changed the policy: %+v, %v", sp, err)
	}

	// A group naming it; a typo is refused before anything is written.
	fe.fails(t, ExitFailed, "no such credential policy", "group", "create", "typo", "--ca-name", "root", "--credential-policy", "trakers")
	if _, err := st.GetEnrollmentGroup("typo"); err == nil {
		t.Error("the group with an unknown policy was created")
	}
	out := fe.ok(t, "group", "create", "fleet", "--ca-name", "root", "--credential-policy", "trackers")
	if !strings.Contains(out, "CREDENTIAL POLICY") || !strings.Contains(out, "trackers") {
		t.Errorf("group create output lacks the policy:\n%s", out)
	}
	groupPolicy := func(want, status string) {
		t.Helper()
		g, err := st.GetEnrollmentGroup("fleet")
		if err != nil || g.CredentialPolicyName != want || g.ProvisioningStatus != status {
			t.Errorf("group in the emulator: policy %q status %q (%v); want %q %q", g.CredentialPolicyName, g.ProvisioningStatus, err, want, status)
		}
	}
	groupPolicy("trackers", "enabled")
	fe.ok(t, "group", "disable", "fleet")
	groupPolicy("trackers", "disabled")
	fe.ok(t, "group", "enable", "fleet")
	groupPolicy("trackers", "enabled")
	if g := decode[azrest.EnrollmentGroup](t, fe.ok(t, "group", "show", "fleet", "-o", "json")); g.CredentialPolicyName != "trackers" {
		t.Errorf("group show -o json: credentialPolicyName %q", g.CredentialPolicyName)
	}
	fe.ok(t, "group", "set-credential-policy", "fleet", "--none")
	groupPolicy("", "enabled")
	fe.fails(t, ExitUsage, "NAME or --none", "group", "set-credential-policy", "fleet")
	fe.ok(t, "group", "set-credential-policy", "fleet", "trackers")
	groupPolicy("trackers", "enabled")

	// One device enrolled on its own with the policy, then disenrolled:
	// the disabled entry keeps it.
	leaf, err := fe.inter.NewClient("solo-1", pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cert := fe.file(t, "solo-1.pem", leaf.PEM())
	if out := fe.ok(t, "enrollment", "create", "solo-1", "--cert", cert, "--credential-policy", "trackers", "--initial-twin", `{"telemetryDelay":5}`); !strings.Contains(out, "trackers") {
		t.Errorf("enrollment create output lacks the policy:\n%s", out)
	}
	fe.fails(t, ExitFailed, "already exists", "enrollment", "create", "solo-1", "--cert", cert)
	fe.fails(t, ExitUsage, "--cert is required", "enrollment", "create", "solo-2")
	fe.ok(t, "enrollment", "disenroll", "solo-1", "--keep-identity")
	ie, err := st.GetIndividualEnrollment("solo-1")
	if err != nil || ie.CredentialPolicyName != "trackers" || ie.ProvisioningStatus != "disabled" || ie.Attestation.Type != "x509" {
		t.Errorf("individual enrollment after disenroll: policy %q status %q attestation %q (%v)", ie.CredentialPolicyName, ie.ProvisioningStatus, ie.Attestation.Type, err)
	}
	if out := fe.ok(t, "enrollment", "show", "solo-1"); !strings.Contains(out, "disabled  x509         trackers") {
		t.Errorf("enrollment show:\n%s", out)
	}

	fe.ok(t, "credential-policy", "delete", "trackers")
	fe.fails(t, ExitFailed, "404207", "credential-policy", "show", "trackers")
}

func parsePEM(t *testing.T, s string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode([]byte(s))
	if b == nil {
		t.Fatalf("no PEM in %q", s)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// fakeAzureDPS keeps enrollment groups and individual enrollments the way
// the DPS service API's versions define them: credentialPolicyName exists
// only under 2025-07-01-preview, so a GET under an older version does not
// show it and a PUT under one stores the enrollment without it
// (docs/protocol.md D "Enrollment api-version"). It has no
// /credentialPolicies routes (ADR resources on Azure).
type fakeAzureDPS struct {
	mu       sync.Mutex
	items    map[string]map[string]any // path -> stored JSON object
	versions map[string]string         // "METHOD path" -> api-version of the last call
}

func (f *fakeAzureDPS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v := r.URL.Query().Get("api-version")
	f.versions[r.Method+" "+r.URL.Path] = v
	preview := v == "2025-07-01-preview"
	if !strings.HasPrefix(r.URL.Path, "/enrollmentGroups/") && !strings.HasPrefix(r.URL.Path, "/enrollments/") {
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"errorCode":404000,"message":"The requested resource was not found."}`)
		return
	}
	switch r.Method {
	case http.MethodGet:
		item, ok := f.items[r.URL.Path]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"errorCode":404202,"message":"not found"}`)
			return
		}
		out := map[string]any{}
		for k, x := range item {
			if k != "credentialPolicyName" || preview {
				out[k] = x
			}
		}
		json.NewEncoder(w).Encode(out)
	case http.MethodPut:
		var item map[string]any
		json.NewDecoder(r.Body).Decode(&item)
		if !preview {
			delete(item, "credentialPolicyName")
		}
		item["etag"] = "\"1\""
		f.items[r.URL.Path] = item
		json.NewEncoder(w).Encode(item)
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}

// Against a service that drops credentialPolicyName outside the preview
// api-version (as Azure's versions define it), fleetctl's
// read-modify-writes keep it; the emulator-only commands say where
// policies live on Azure.
func TestCredentialPolicyKeptOnAzure(t *testing.T) {
	t.Parallel()
	fake := &fakeAzureDPS{items: map[string]map[string]any{}, versions: map[string]string{}}
	srv := httptest.NewTLSServer(fake)
	t.Cleanup(srv.Close)
	fe := &fleetEnv{dir: t.TempDir()}
	caFile := fe.file(t, "ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})))
	root, err := pki.NewRootCA("Azure Test Root", pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := root.NewClient("dev-1", pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	conn := []string{"--dps-connection-string", "HostName=dps-x.azure-devices-provisioning.net;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=a2V5",
		"--service-url", srv.URL, "--ca-file", caFile}
	ok := func(args ...string) string {
		t.Helper()
		code, out, errs := fe.run(t, append(args, conn...)...)
		if code != ExitOK {
			t.Fatalf("fleetctl %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
		}
		return out
	}
	stored := func(path string) any {
		fake.mu.Lock()
		defer fake.mu.Unlock()
		return fake.items[path]["credentialPolicyName"]
	}

	ok("group", "create", "fleet", "--signing-cert", fe.file(t, "root.pem", root.PEM()), "--credential-policy", "adr-trackers")
	ok("group", "disable", "fleet")
	ok("group", "enable", "fleet")
	if got := stored("/enrollmentGroups/fleet"); got != "adr-trackers" {
		t.Errorf("after disable/enable the group's credentialPolicyName is %v; want adr-trackers", got)
	}
	if out := ok("group", "show", "fleet"); !strings.Contains(out, "adr-trackers") {
		t.Errorf("group show:\n%s", out)
	}
	ok("enrollment", "create", "dev-1", "--cert", fe.file(t, "dev-1.pem", leaf.PEM()), "--credential-policy", "adr-trackers")
	ok("enrollment", "disenroll", "dev-1", "--keep-identity")
	if got := stored("/enrollments/dev-1"); got != "adr-trackers" {
		t.Errorf("after disenroll the enrollment's credentialPolicyName is %v; want adr-trackers", got)
	}
	fake.mu.Lock()
	for k, v := range fake.versions {
		if strings.Contains(k, "/enrollment") && v != azrest.DPSEnrollmentAPIVersion {
			t.Errorf("%s went out with api-version %q; want %s", k, v, azrest.DPSEnrollmentAPIVersion)
		}
	}
	fake.mu.Unlock()

	for _, args := range [][]string{{"credential-policy", "create", "p"}, {"credential-policy", "show", "p"}, {"credential-policy", "list"}, {"credential-policy", "delete", "p"}} {
		code, _, errs := fe.run(t, append(args, conn...)...)
		if code != ExitFailed || !strings.Contains(errs, "not supported by this service") || !strings.Contains(errs, "Azure Device Registry") {
			t.Errorf("fleetctl %s on Azure: exit %d, %q; want 1 naming Azure Device Registry", strings.Join(args, " "), code, errs)
		}
	}
}
