package emulator

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/reefer/tracker/deploy/emulator/store"
)

// csrAPI is the DPS api-version with certificate issuance (docs/protocol.md A.5).
const csrAPI = "2025-07-01-preview"

// newCSR makes a key and a DER PKCS#10 request with subject CN = cn, as a
// device does before registering.
func newCSR(t *testing.T, cn string) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, k)
	if err != nil {
		t.Fatal(err)
	}
	return k, der
}

func registerBody(rid string, csrDER []byte) []byte {
	b, _ := json.Marshal(map[string]any{"registrationId": rid, "csr": base64.StdEncoding.EncodeToString(csrDER)})
	return b
}

// issued is a registration's issuedCertificateChain, decoded.
type issued struct {
	leaf  *x509.Certificate
	chain []*x509.Certificate // leaf first
}

// tls is what the device presents to the hub: the issued leaf and the
// issuing CA (not the root), with the device's own key.
func (i issued) tls(key crypto.Signer) tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{i.chain[0].Raw, i.chain[1].Raw}, PrivateKey: key, Leaf: i.leaf}
}

func decodeIssued(t *testing.T, rs map[string]any) issued {
	t.Helper()
	raw, ok := rs["issuedCertificateChain"].([]any)
	if !ok || len(raw) != 3 {
		t.Fatalf("issuedCertificateChain = %v; want 3 base64 certificates", rs["issuedCertificateChain"])
	}
	var out issued
	for i, r := range raw {
		s, _ := r.(string)
		der, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			t.Fatalf("chain[%d] is not base64: %v", i, err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatalf("chain[%d] is not a DER certificate: %v", i, err)
		}
		out.chain = append(out.chain, c)
	}
	out.leaf = out.chain[0]
	return out
}

// registerCSR registers with a csr and polls to the terminal answer,
// returning its registrationState.
func registerCSR(t *testing.T, e *Emulator, rid string, onboarding tls.Certificate, csrDER []byte) map[string]any {
	t.Helper()
	c := dpsDialVersion(t, e, rid, onboarding, csrAPI)
	defer c.close()
	r := c.dpsRequest(t, registerTopic("1"), registerBody(rid, csrDER))
	if r.status != 202 {
		t.Fatalf("register %s with csr = %d %s; want 202", rid, r.status, r.raw)
	}
	if _, ok := r.body["registrationState"]; ok {
		t.Errorf("202 carries a registration state: %s", r.raw)
	}
	p := c.dpsRequest(t, pollTopic("2", r.body["operationId"].(string)), nil)
	if p.status != 200 || p.body["status"] != "assigned" {
		t.Fatalf("poll %s = %d %s; want 200 assigned", rid, p.status, p.raw)
	}
	return p.body["registrationState"].(map[string]any)
}

func twinGet(t *testing.T, hc *client) {
	t.Helper()
	hc.subscribe(t, "$iothub/twin/res/#")
	if err := hc.publish(t, "$iothub/twin/GET/?$rid=g", 0, nil); err != nil {
		t.Fatal(err)
	}
	if m := hc.next(t); !strings.HasPrefix(m.Topic(), "$iothub/twin/res/200/") {
		t.Fatalf("twin GET = %s %s", m.Topic(), m.Payload())
	}
}

// TestDPSIssuesCertificate: a group naming a credential policy gets a csr
// signed (docs/protocol.md A.5): the chain is base64 DER, leaf first, the
// leaf carries the device's key and CN for the policy's validity and
// verifies to the credential root; the hub admits it (certificateAuthority
// identity) and no longer admits the onboarding certificate; a renewal
// issues a new certificate and both work; a csr in the poll is ignored.
func TestDPSIssuesCertificate(t *testing.T) {
	t.Parallel()
	e := StartForTest(t)
	pol, err := e.CreateCredentialPolicy("trackers", 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	ica, root, err := pol.Certificates()
	if err != nil {
		t.Fatal(err)
	}
	f := newFleet(t)
	if _, err := e.EnrollGroup("fleet", f.root.Cert, func(g *store.EnrollmentGroup) { g.CredentialPolicyName = "trackers" }); err != nil {
		t.Fatal(err)
	}
	onboarding := f.leaf(t, "sensor-thl-001")
	key, csrDER := newCSR(t, "sensor-thl-001")

	c := dpsDialVersion(t, e, "sensor-thl-001", onboarding.TLS(), csrAPI)
	r := c.dpsRequest(t, registerTopic("1"), registerBody("sensor-thl-001", csrDER))
	if r.status != 202 {
		t.Fatalf("register = %d %s; want 202", r.status, r.raw)
	}
	op := r.body["operationId"].(string)
	// The poll's payload is never read: a csr there issues nothing.
	_, otherCSR := newCSR(t, "sensor-thl-001")
	p := c.dpsRequest(t, pollTopic("2", op), registerBody("sensor-thl-001", otherCSR))
	if p.status != 200 || p.body["status"] != "assigned" {
		t.Fatalf("poll = %d %s; want 200 assigned", p.status, p.raw)
	}
	rs := p.body["registrationState"].(map[string]any)
	got := decodeIssued(t, rs)
	again := c.dpsRequest(t, pollTopic("3", op), nil)
	if again.status != 200 || !bytes.Equal(decodeIssued(t, again.body["registrationState"].(map[string]any)).leaf.Raw, got.leaf.Raw) {
		t.Errorf("second poll = %d %s; want the same issued leaf", again.status, again.raw)
	}
	c.close()

	leaf := got.leaf
	if !leaf.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) {
		t.Error("issued leaf does not carry the CSR's key (the poll's csr was used?)")
	}
	if leaf.Subject.CommonName != "sensor-thl-001" || leaf.NotAfter.Sub(leaf.NotBefore) != 10*time.Minute ||
		len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth || leaf.IsCA {
		t.Errorf("issued leaf: CN %q, validity %v, usage %v, CA %v", leaf.Subject.CommonName, leaf.NotAfter.Sub(leaf.NotBefore), leaf.ExtKeyUsage, leaf.IsCA)
	}
	if !got.chain[1].Equal(ica) || !got.chain[2].Equal(root) || !root.Equal(e.Store().CredentialRoot()) {
		t.Error("chain is not [leaf, policy issuing CA, credential root]")
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(got.chain[2])
	inter.AddCert(got.chain[1])
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("issued chain does not verify: %v", err)
	}
	if d, err := e.Store().GetDevice(e.HubHost(0), "sensor-thl-001"); err != nil || d.Authentication.Type != store.AuthCertificateAuthority {
		t.Errorf("hub identity = %+v, %v; want certificateAuthority", d.Authentication, err)
	}
	// The registration record (service view) does not carry the chain.
	if rec, err := e.Store().GetRegistration("sensor-thl-001"); err != nil || rec.Status != store.RegAssigned {
		t.Errorf("registration record = %+v, %v", rec, err)
	}

	hc := mustHubDial(t, e, 0, "sensor-thl-001", got.tls(key))
	twinGet(t, hc)
	hc.close()
	if _, err := hubDial(t, e, 0, "sensor-thl-001", onboarding.TLS()); !isNotAuthorized(err) {
		t.Errorf("hub connect with the onboarding certificate = %v; want refused", err)
	}
	// Without the issuing CA the chain cannot be built: the device must
	// present it (docs/protocol.md A.5).
	if _, err := hubDial(t, e, 0, "sensor-thl-001", tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key}); !isNotAuthorized(err) {
		t.Errorf("hub connect with the bare issued leaf = %v; want refused", err)
	}

	// Renewal: a fresh key and csr; old and new certificates both work.
	key2, csr2 := newCSR(t, "sensor-thl-001")
	got2 := decodeIssued(t, registerCSR(t, e, "sensor-thl-001", onboarding.TLS(), csr2))
	if got2.leaf.SerialNumber.Cmp(leaf.SerialNumber) == 0 || !got2.leaf.PublicKey.(*ecdsa.PublicKey).Equal(key2.Public()) {
		t.Error("renewal did not issue a new certificate for the new key")
	}
	twinGet(t, mustHubDial(t, e, 0, "sensor-thl-001", got2.tls(key2)))
	twinGet(t, mustHubDial(t, e, 0, "sensor-thl-001", got.tls(key)))

	// Registering again without a csr returns the identity to the
	// onboarding certificate's thumbprint (docs/protocol.md G.11).
	plain := dpsDialVersion(t, e, "sensor-thl-001", onboarding.TLS(), csrAPI)
	if body := provision(t, plain, "sensor-thl-001"); body["registrationState"].(map[string]any)["issuedCertificateChain"] != nil {
		t.Errorf("registration without csr carries a chain: %v", body)
	}
	twinGet(t, mustHubDial(t, e, 0, "sensor-thl-001", onboarding.TLS()))
	if _, err := hubDial(t, e, 0, "sensor-thl-001", got2.tls(key2)); !isNotAuthorized(err) {
		t.Errorf("issued certificate after a plain registration = %v; want refused", err)
	}
}

// TestDPSIssuesForIndividualEnrollment: an individual enrollment names the
// policy too; a group's policy does not apply to a device an individual
// enrollment without one decides.
func TestDPSIssuesForIndividualEnrollment(t *testing.T) {
	t.Parallel()
	e := StartForTest(t)
	if _, err := e.CreateCredentialPolicy("solo", 0); err != nil {
		t.Fatal(err)
	}
	f := newFleet(t)
	dev := f.leaf(t, "solo-1")
	if _, err := e.EnrollDevice(dev.Cert, func(en *store.IndividualEnrollment) { en.CredentialPolicyName = "solo" }); err != nil {
		t.Fatal(err)
	}
	key, csrDER := newCSR(t, "solo-1")
	got := decodeIssued(t, registerCSR(t, e, "solo-1", dev.TLS(), csrDER))
	if v := got.leaf.NotAfter.Sub(got.leaf.NotBefore); v != store.DefaultIssuedCertValidity {
		t.Errorf("validity under a policy created without one = %v; want the default %v", v, store.DefaultIssuedCertValidity)
	}
	twinGet(t, mustHubDial(t, e, 0, "solo-1", got.tls(key)))
}

// TestIssuedCertificateExpires: the hub refuses an issued certificate
// outside its validity like any other certificate (docs/protocol.md B.1),
// and registering again issues one it admits.
func TestIssuedCertificateExpires(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	e := StartForTest(t, func(c *Config) { c.Now = clk.Now })
	if _, err := e.CreateCredentialPolicy("short", time.Minute); err != nil {
		t.Fatal(err)
	}
	f := newFleet(t)
	if _, err := e.EnrollGroup("fleet", f.root.Cert, func(g *store.EnrollmentGroup) { g.CredentialPolicyName = "short" }); err != nil {
		t.Fatal(err)
	}
	onboarding := f.leaf(t, "dev-exp")
	key, csrDER := newCSR(t, "dev-exp")
	got := decodeIssued(t, registerCSR(t, e, "dev-exp", onboarding.TLS(), csrDER))
	mustHubDial(t, e, 0, "dev-exp", got.tls(key)).close()

	clk.Advance(61 * time.Second)
	if _, err := hubDial(t, e, 0, "dev-exp", got.tls(key)); !isNotAuthorized(err) {
		t.Fatalf("hub connect with the expired issued certificate = %v; want CONNACK not authorised", err)
	}
	key2, csr2 := newCSR(t, "dev-exp")
	got2 := decodeIssued(t, registerCSR(t, e, "dev-exp", onboarding.TLS(), csr2))
	if !got2.leaf.NotBefore.Equal(clk.Now().Truncate(time.Second)) {
		t.Errorf("re-issued NotBefore %v; want the emulator clock %v", got2.leaf.NotBefore, clk.Now().Truncate(time.Second))
	}
	twinGet(t, mustHubDial(t, e, 0, "dev-exp", got2.tls(key2)))
}

// TestDPSCSRRefusals: every refusal of docs/protocol.md A.5 / G.9 comes as
// a 400 register answer with its errorCode, and leaves no hub identity.
func TestDPSCSRRefusals(t *testing.T) {
	t.Parallel()
	e := StartForTest(t)
	if _, err := e.CreateCredentialPolicy("pol", time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := e.CreateCredentialPolicy("gone", time.Hour); err != nil {
		t.Fatal(err)
	}
	withPolicy, noPolicy, deleted := newFleet(t), newFleet(t), newFleet(t)
	for _, g := range []struct {
		id, policy string
		f          *fleet
	}{{"with", "pol", withPolicy}, {"without", "", noPolicy}, {"deleted", "gone", deleted}} {
		if _, err := e.EnrollGroup(g.id, g.f.root.Cert, func(eg *store.EnrollmentGroup) { eg.CredentialPolicyName = g.policy }); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Store().DeleteCredentialPolicy("gone", "*"); err != nil {
		t.Fatal(err)
	}
	_, good := newCSR(t, "dev-r")
	_, wrongCN := newCSR(t, "someone-else")
	tampered := bytes.Clone(good)
	tampered[len(tampered)-3] ^= 0xff // inside the signature
	pemCSR := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: good})
	body := func(csr string) string { return `{"registrationId":"dev-r","csr":` + jsonString(csr) + `}` }
	b64 := base64.StdEncoding.EncodeToString
	cases := []struct {
		name       string
		f          *fleet
		apiVersion string
		body       string
		wantCode   float64
	}{
		{"old api-version", withPolicy, "2019-03-31", body(b64(good)), 400301},
		{"not base64", withPolicy, csrAPI, body("not base64 at all!"), 400302},
		{"PEM instead of base64 DER", withPolicy, csrAPI, body(string(pemCSR)), 400302},
		{"base64 of PEM", withPolicy, csrAPI, body(b64(pemCSR)), 400302},
		{"not a CSR", withPolicy, csrAPI, body(b64([]byte("garbage bytes, not DER"))), 400302},
		{"bad signature", withPolicy, csrAPI, body(b64(tampered)), 400302},
		{"empty", withPolicy, csrAPI, body(""), 400302},
		{"CN is not the registration id", withPolicy, csrAPI, body(b64(wrongCN)), 400303},
		{"enrollment without policy", noPolicy, csrAPI, body(b64(good)), 400304},
		{"enrollment names a deleted policy", deleted, csrAPI, body(b64(good)), 400304},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dpsDialVersion(t, e, "dev-r", tc.f.leaf(t, "dev-r").TLS(), tc.apiVersion)
			r := c.dpsRequest(t, registerTopic("1"), []byte(tc.body))
			if r.status != 400 || r.body["errorCode"] != tc.wantCode || r.body["message"] == "" || r.body["trackingId"] == "" {
				t.Errorf("register = %d %s; want 400 errorCode %v", r.status, r.raw, tc.wantCode)
			}
			if _, err := e.Store().GetDevice(e.HubHost(0), "dev-r"); !errors.Is(err, store.ErrDeviceNotFound) {
				t.Errorf("hub identity after a refusal: %v", err)
			}
		})
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestCredentialPolicyServiceAPI manages policies over the HTTPS service
// API with the DPS key (emulator-specific routes, docs/protocol.md A.5) and
// an enrollment names one through the REST body; emulator.json lists the
// credential root.
func TestCredentialPolicyServiceAPI(t *testing.T) {
	t.Parallel()
	e := StartForTest(t, func(c *Config) { c.CredentialPolicies = []string{"boot"}; c.IssuedCertValidity = 2 * time.Hour })
	inf := e.Info()
	if len(inf.CredentialPolicies) != 1 || inf.CredentialPolicies[0] != "boot" || inf.IssuedCertificateValidity != "2h0m0s" {
		t.Errorf("emulator.json policies %v validity %q", inf.CredentialPolicies, inf.IssuedCertificateValidity)
	}
	rootPEM, err := os.ReadFile(inf.CredentialRootCertPath)
	if err != nil {
		t.Fatal(err)
	}
	if root, err := store.ParseCertificatePEM(string(rootPEM)); err != nil || !root.Equal(e.Store().CredentialRoot()) {
		t.Fatalf("credentialRootCertPath holds %v, %v", root, err)
	}
	svc := newSvcClient(t, e)
	dps := inf.DPS
	do := func(method, path string, body any) (int, []byte) {
		t.Helper()
		if !strings.Contains(path, "api-version=") {
			path += "?api-version=2021-10-01"
		}
		return svc.do(method, path, dps.ServiceHostName, dps.SharedAccessKeyName, dps.SharedAccessKey, body)
	}
	code, b := do("PUT", "/credentialPolicies/fleet-a", map[string]any{"validitySeconds": 90})
	var pol store.CredentialPolicy
	if err := json.Unmarshal(b, &pol); code != http.StatusOK || err != nil || pol.ValiditySeconds != 90 || pol.IssuingCertificate == "" || pol.RootCertificate != string(rootPEM) || pol.ETag == "" {
		t.Fatalf("PUT policy = %d %s", code, b)
	}
	if strings.Contains(string(b), "PRIVATE KEY") || strings.Contains(string(b), "issuingKey") {
		t.Fatalf("the policy's key is served: %s", b)
	}
	if code, b := do("PUT", "/credentialPolicies/fleet-a", map[string]any{"validitySeconds": 0.5}); code != http.StatusBadRequest {
		t.Errorf("fractional validity = %d %s; want 400", code, b)
	}
	if code, b := do("PUT", "/credentialPolicies/fleet-b", map[string]any{"validitySeconds": -5}); code != http.StatusBadRequest {
		t.Errorf("negative validity = %d %s; want 400", code, b)
	}
	if code, b := do("PUT", "/credentialPolicies/bad%20name", nil); code != http.StatusBadRequest {
		t.Errorf("bad name = %d %s; want 400", code, b)
	}
	// An update keeps the issuing CA.
	code, b = do("PUT", "/credentialPolicies/fleet-a", map[string]any{"validitySeconds": 120})
	var upd store.CredentialPolicy
	if err := json.Unmarshal(b, &upd); code != http.StatusOK || err != nil || upd.IssuingCertificate != pol.IssuingCertificate || upd.ValiditySeconds != 120 {
		t.Errorf("update = %d %s; want the same CA, 120 s", code, b)
	}
	code, b = do("GET", "/credentialPolicies", nil)
	var list []store.CredentialPolicy
	if err := json.Unmarshal(b, &list); code != http.StatusOK || err != nil || len(list) != 2 || list[0].Name != "boot" || list[0].ValiditySeconds != 7200 || list[1].Name != "fleet-a" {
		t.Errorf("list = %d %s; want boot (7200 s), fleet-a", code, b)
	}
	if code, _ := svc.do("GET", "/credentialPolicies?api-version=2021-10-01", dps.ServiceHostName, dps.SharedAccessKeyName, inf.Hubs[0].SharedAccessKey, nil); code != http.StatusUnauthorized {
		t.Errorf("list with the wrong key = %d; want 401", code)
	}

	f := newFleet(t)
	if err := e.TrustCA("fleet-ca", f.root.Cert); err != nil {
		t.Fatal(err)
	}
	group := map[string]any{
		"enrollmentGroupId":    "rest-group",
		"credentialPolicyName": "fleet-a",
		"attestation": map[string]any{"type": "x509", "x509": map[string]any{
			"signingCertificates": map[string]any{"primary": map[string]any{"certificate": f.root.PEM()}}}},
	}
	if code, b := do("PUT", "/enrollmentGroups/rest-group?api-version="+csrAPI, group); code != http.StatusOK || !strings.Contains(string(b), `"credentialPolicyName":"fleet-a"`) {
		t.Fatalf("PUT group = %d %s", code, b)
	}
	_, csrDER := newCSR(t, "rest-dev")
	got := decodeIssued(t, registerCSR(t, e, "rest-dev", f.leaf(t, "rest-dev").TLS(), csrDER))
	if v := got.leaf.NotAfter.Sub(got.leaf.NotBefore); v != 120*time.Second {
		t.Errorf("issued validity = %v; want the updated 120 s", v)
	}

	if code, b := do("DELETE", "/credentialPolicies/fleet-a", nil); code != http.StatusNoContent {
		t.Errorf("DELETE = %d %s", code, b)
	}
	if code, b := do("GET", "/credentialPolicies/fleet-a", nil); code != http.StatusNotFound || !strings.Contains(string(b), "404207") {
		t.Errorf("GET deleted = %d %s; want 404 404207", code, b)
	}
}

// TestCredentialPolicySurvivesRestart: the credential root and a policy's
// issuing CA (with its key) are kept in the data dir, so certificates
// issued before a restart are still admitted and new ones chain to the
// same CA.
func TestCredentialPolicySurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e, err := StartLocal(dir, func(c *Config) { c.CredentialPolicies = []string{"kept"} })
	if err != nil {
		t.Fatal(err)
	}
	f := newFleet(t)
	if _, err := e.EnrollGroup("fleet", f.root.Cert, func(g *store.EnrollmentGroup) { g.CredentialPolicyName = "kept" }); err != nil {
		t.Fatal(err)
	}
	onboarding := f.leaf(t, "dev-keep")
	key, csrDER := newCSR(t, "dev-keep")
	got := decodeIssued(t, registerCSR(t, e, "dev-keep", onboarding.TLS(), csrDER))
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	// Restarted with another default validity: the named policy takes it
	// and keeps its CA.
	e, err = StartLocal(dir, func(c *Config) { c.CredentialPolicies = []string{"kept"}; c.IssuedCertValidity = 5 * time.Minute })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	twinGet(t, mustHubDial(t, e, 0, "dev-keep", got.tls(key)))
	_, csr2 := newCSR(t, "dev-keep")
	got2 := decodeIssued(t, registerCSR(t, e, "dev-keep", onboarding.TLS(), csr2))
	if !got2.chain[1].Equal(got.chain[1]) || !got2.chain[2].Equal(got.chain[2]) {
		t.Error("after a restart the policy issues under another CA")
	}
	if v := got2.leaf.NotAfter.Sub(got2.leaf.NotBefore); v != 5*time.Minute {
		t.Errorf("validity after a restart with IssuedCertValidity 5m = %v", v)
	}
}

// TestDPSDisabledEnrollmentWithCSR: a disabled enrollment answers
// status disabled as without a csr, issuing nothing, even when it names no
// policy (docs/protocol.md A.4, A.5).
func TestDPSDisabledEnrollmentWithCSR(t *testing.T) {
	t.Parallel()
	e := StartForTest(t)
	f := newFleet(t)
	if _, err := e.EnrollGroup("off", f.root.Cert, func(g *store.EnrollmentGroup) { g.ProvisioningStatus = store.StatusDisabled }); err != nil {
		t.Fatal(err)
	}
	_, csrDER := newCSR(t, "dev-off")
	c := dpsDialVersion(t, e, "dev-off", f.leaf(t, "dev-off").TLS(), csrAPI)
	r := c.dpsRequest(t, registerTopic("1"), registerBody("dev-off", csrDER))
	if r.status != 202 {
		t.Fatalf("register = %d %s; want 202", r.status, r.raw)
	}
	p := c.dpsRequest(t, pollTopic("2", r.body["operationId"].(string)), nil)
	if p.status != 200 || p.body["status"] != "disabled" || strings.Contains(p.raw, "issuedCertificateChain") {
		t.Errorf("poll = %d %s; want 200 disabled without a chain", p.status, p.raw)
	}
}
