package store

import (
	"crypto/x509"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/reefer/tracker/deploy/emulator/pki"
)

type regFixture struct {
	s           *Store
	dir         string
	root, inter *pki.Cert
}

func newRegFixture(t *testing.T) *regFixture {
	t.Helper()
	dir := t.TempDir()
	s := openTest(t, dir)
	root, err := pki.NewRootCA("Fleet Root", pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediateCA("Fleet Intermediate", pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &regFixture{s: s, dir: dir, root: root, inter: inter}
}

func (f *regFixture) verifyRoot(t *testing.T) {
	t.Helper()
	if _, err := f.s.PutCACertificate(DPSOwner, "root", f.root.PEM(), true, ""); err != nil {
		t.Fatal(err)
	}
}

func (f *regFixture) group(t *testing.T, id string, ca *pki.Cert, mod func(*EnrollmentGroup)) EnrollmentGroup {
	t.Helper()
	g := EnrollmentGroup{EnrollmentGroupID: id, Attestation: AttestationMechanism{Type: AttestationX509,
		X509: &X509Attestation{SigningCertificates: &X509Certificates{Primary: &X509CertificateWithInfo{Certificate: ca.PEM()}}}}}
	if mod != nil {
		mod(&g)
	}
	g, err := f.s.PutEnrollmentGroup(g, "*")
	if err != nil {
		t.Fatalf("PutEnrollmentGroup(%s): %v", id, err)
	}
	return g
}

func (f *regFixture) leaf(t *testing.T, cn string) *pki.Cert {
	t.Helper()
	l, err := f.inter.NewClient(cn, pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func chainOf(c *pki.Cert, withInter bool) []*x509.Certificate {
	out := []*x509.Certificate{c.Cert}
	if withInter {
		out = append(out, c.Chain[0])
	}
	return out
}

func (f *regFixture) register(t *testing.T, c *pki.Cert) (DeviceRegistrationResult, error) {
	t.Helper()
	return f.s.Register(RegisterRequest{RegistrationID: c.Cert.Subject.CommonName, Chain: chainOf(c, true)})
}

func TestRegisterGroupAssigns(t *testing.T) {
	t.Parallel()
	f := newRegFixture(t)
	f.verifyRoot(t)
	f.group(t, "fleet", f.root, func(g *EnrollmentGroup) {
		g.IoTHubs = []string{"localhost:2"}
		g.InitialTwin = &InitialTwin{Tags: map[string]any{"site": "A"}, Properties: InitialTwinProperties{Desired: map[string]any{"interval": 30}}}
	})
	dev := f.leaf(t, "dev-1")
	res, err := f.register(t, dev)
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	if res.Status != RegAssigned || res.Substatus != SubInitialAssignment || res.AssignedHub != "localhost:2" || res.DeviceID != "dev-1" ||
		res.X509 == nil || res.X509.EnrollmentGroupID != "fleet" || res.X509.SigningCertificateInfo.SubjectName != "CN=Fleet Root" || res.ETag == "" {
		t.Fatalf("Register = %+v / x509 %+v", res.DeviceRegistrationState, res.X509)
	}
	d, err := f.s.GetDevice("localhost:2", "dev-1")
	if err != nil || d.Authentication.Type != AuthSelfSigned || *d.Authentication.X509Thumbprint.PrimaryThumbprint != ThumbprintSHA256(dev.Cert) {
		t.Fatalf("hub identity = %+v, %v; want selfSigned with SHA-256 thumbprint", d.Authentication, err)
	}
	tw, _ := f.s.GetTwin("localhost:2", "dev-1")
	if tw.Tags["site"] != "A" || fmt.Sprint(tw.Properties.Desired.Props["interval"]) != "30" {
		t.Errorf("initial twin not applied: tags %v desired %v", tw.Tags, tw.Properties.Desired.Props)
	}
	if l := f.s.ListRegistrations("FLEET"); len(l) != 1 || l[0].RegistrationID != "dev-1" {
		t.Errorf("ListRegistrations(fleet) = %+v", l)
	}
	if st, err := openTest(t, f.dir).GetRegistration("DEV-1"); err != nil || st.AssignedHub != "localhost:2" {
		t.Errorf("registration after reopen = %+v, %v", st, err)
	}
	// The deleted identity is re-created by a new registration (G.13).
	if err := f.s.DeleteDevice("localhost:2", "dev-1", "*"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.register(t, dev); err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.GetDevice("localhost:2", "dev-1"); err != nil {
		t.Errorf("identity not re-created: %v", err)
	}
}

func TestRegisterRefusals(t *testing.T) {
	t.Parallel()
	f := newRegFixture(t)
	other, _ := pki.NewRootCA("Other", pki.Options{})
	otherLeaf, _ := other.NewClient("dev-x", pki.Options{})
	f.group(t, "fleet", f.root, nil)
	dev := f.leaf(t, "dev-1")

	// Root not verified yet: 401.
	if _, err := f.register(t, dev); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("Register with unverified CA = %v; want ErrUnauthorized", err)
	}
	f.verifyRoot(t)
	cases := []struct {
		name string
		req  RegisterRequest
		want error
	}{
		{"missing intermediate", RegisterRequest{RegistrationID: "dev-1", Chain: chainOf(dev, false)}, ErrUnauthorized},
		{"unknown CA", RegisterRequest{RegistrationID: "dev-x", Chain: []*x509.Certificate{otherLeaf.Cert}}, ErrUnauthorized},
		{"CN mismatch", RegisterRequest{RegistrationID: "dev-2", Chain: chainOf(dev, true)}, ErrInvalid},
		{"bad id", RegisterRequest{RegistrationID: "dev 1", Chain: chainOf(dev, true)}, ErrInvalid},
		{"no cert", RegisterRequest{RegistrationID: "dev-1"}, ErrUnauthorized},
		{"ok", RegisterRequest{RegistrationID: "DEV-1", Chain: chainOf(dev, true)}, nil},
	}
	for _, c := range cases {
		_, err := f.s.Register(c.req)
		if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("Register(%s) = %v; want %v", c.name, err, c.want)
		}
	}
	expired, _ := f.inter.NewClient("dev-old", pki.Options{NotBefore: mustTime("2000-01-01T00:00:00Z"), NotAfter: mustTime("2001-01-01T00:00:00Z")})
	if _, err := f.register(t, expired); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("Register(expired) = %v; want ErrUnauthorized", err)
	}
}

func TestRegisterPrecedence(t *testing.T) {
	t.Parallel()
	f := newRegFixture(t)
	f.verifyRoot(t)
	f.group(t, "root-group", f.root, func(g *EnrollmentGroup) { g.ProvisioningStatus = StatusDisabled })
	f.group(t, "inter-group", f.inter, nil)
	dev := f.leaf(t, "dev-1")
	// The intermediate's group is first up the chain and enabled.
	res, err := f.register(t, dev)
	if err != nil || res.Status != RegAssigned || res.X509.EnrollmentGroupID != "inter-group" {
		t.Fatalf("Register = %+v, %v; want assigned via inter-group", res.DeviceRegistrationState, err)
	}
	// A disabled individual enrollment for the leaf beats the group.
	ind := IndividualEnrollment{RegistrationID: "dev-1", ProvisioningStatus: StatusDisabled, Attestation: AttestationMechanism{Type: AttestationX509,
		X509: &X509Attestation{ClientCertificates: &X509Certificates{Primary: &X509CertificateWithInfo{Certificate: dev.PEM()}}}}}
	if _, err := f.s.PutIndividualEnrollment(ind, ""); err != nil {
		t.Fatal(err)
	}
	res, err = f.register(t, dev)
	if err != nil || res.Status != RegDisabled || res.AssignedHub != "" {
		t.Fatalf("Register with disabled individual = %+v, %v; want disabled", res.DeviceRegistrationState, err)
	}
	// The hub identity is not touched by disenrolling (docs/protocol.md C).
	if _, err := f.s.GetDevice(firstHub(f, "dev-1"), "dev-1"); err != nil {
		t.Errorf("hub identity after disenroll: %v", err)
	}
	// Enabled individual with its own device id.
	ind.ProvisioningStatus, ind.DeviceID = StatusEnabled, "custom-id"
	ind.IoTHubHostName, ind.AllocationPolicy = "localhost:1", AllocationStatic
	if _, err := f.s.PutIndividualEnrollment(ind, "*"); err != nil {
		t.Fatal(err)
	}
	res, err = f.register(t, dev)
	if err != nil || res.Status != RegAssigned || res.DeviceID != "custom-id" || res.AssignedHub != "localhost:1" || res.X509.EnrollmentGroupID != "" {
		t.Fatalf("Register with individual = %+v, %v", res.DeviceRegistrationState, err)
	}
	// Disabling the intermediate group blocks a device without an
	// individual enrollment, even though the root group decides nothing.
	f.group(t, "inter-group", f.inter, func(g *EnrollmentGroup) { g.ProvisioningStatus = StatusDisabled })
	dev2 := f.leaf(t, "dev-2")
	if res, err := f.register(t, dev2); err != nil || res.Status != RegDisabled {
		t.Errorf("Register under disabled group = %+v, %v; want disabled", res.DeviceRegistrationState, err)
	}
}

// Disenrolling without the device certificate: a disabled symmetric-key
// individual enrollment under the registration id blocks the X.509 device
// of a group (docs/protocol.md C); deleting it re-admits the device, and an enabled one
// decides nothing for an X.509 device.
func TestRegisterBlockedBySymmetricKeyEntry(t *testing.T) {
	t.Parallel()
	f := newRegFixture(t)
	f.verifyRoot(t)
	f.group(t, "inter-group", f.inter, nil)
	dev := f.leaf(t, "dev-7")
	sym := IndividualEnrollment{RegistrationID: "DEV-7", ProvisioningStatus: StatusDisabled, Attestation: AttestationMechanism{Type: AttestationSymmetricKey}}
	if _, err := f.s.PutIndividualEnrollment(sym, ""); err != nil {
		t.Fatal(err)
	}
	if res, err := f.register(t, dev); err != nil || res.Status != RegDisabled {
		t.Fatalf("Register with a disabled symmetric-key entry = %+v, %v; want disabled", res.DeviceRegistrationState, err)
	}
	sym.ProvisioningStatus = StatusEnabled
	if _, err := f.s.PutIndividualEnrollment(sym, "*"); err != nil {
		t.Fatal(err)
	}
	if res, err := f.register(t, dev); err != nil || res.Status != RegAssigned || res.X509.EnrollmentGroupID != "inter-group" {
		t.Fatalf("Register with an enabled symmetric-key entry = %+v, %v; want assigned by the group", res.DeviceRegistrationState, err)
	}
	if err := f.s.DeleteIndividualEnrollment("dev-7", ""); err != nil {
		t.Fatal(err)
	}
	if res, err := f.register(t, dev); err != nil || res.Status != RegAssigned {
		t.Fatalf("Register after deleting the entry = %+v, %v; want assigned", res.DeviceRegistrationState, err)
	}
}

func firstHub(f *regFixture, id string) string {
	for _, h := range f.s.Hubs() {
		if _, err := f.s.GetDevice(h.HostName, id); err == nil {
			return h.HostName
		}
	}
	return "?"
}

func TestRegisterReprovisionPolicies(t *testing.T) {
	t.Parallel()
	f := newRegFixture(t)
	f.verifyRoot(t)
	initial := &InitialTwin{Properties: InitialTwinProperties{Desired: map[string]any{"mode": "initial"}}}
	set := func(hub string, p ReprovisionPolicy) {
		f.group(t, "fleet", f.root, func(g *EnrollmentGroup) {
			g.IoTHubs, g.ReprovisionPolicy, g.InitialTwin = []string{hub}, &p, initial
		})
	}
	dev := f.leaf(t, "dev-1")
	step := func(name, wantHub, wantSub string) {
		t.Helper()
		res, err := f.register(t, dev)
		if err != nil || res.AssignedHub != wantHub || res.Substatus != wantSub {
			t.Fatalf("%s: Register = %+v, %v; want hub %s substatus %s", name, res.DeviceRegistrationState, err, wantHub, wantSub)
		}
	}
	set("localhost:1", ReprovisionPolicy{true, true})
	step("first", "localhost:1", SubInitialAssignment)
	if _, err := f.s.PatchReported("localhost:1", "dev-1", map[string]any{"fw": "2"}); err != nil {
		t.Fatal(err)
	}
	set("localhost:2", ReprovisionPolicy{true, true})
	step("migrate", "localhost:2", SubDataMigrated)
	tw, err := f.s.GetTwin("localhost:2", "dev-1")
	if err != nil || tw.Properties.Reported.Props["fw"] != "2" {
		t.Errorf("migrated twin reported = %v, %v; want fw=2", tw.Properties.Reported.Props, err)
	}
	if _, err := f.s.GetDevice("localhost:1", "dev-1"); !errors.Is(err, ErrDeviceNotFound) {
		t.Errorf("old hub identity after migration = %v; want ErrDeviceNotFound", err)
	}
	set("localhost:1", ReprovisionPolicy{false, false})
	step("never", "localhost:2", SubInitialAssignment)
	set("localhost:1", ReprovisionPolicy{true, false})
	step("back with reset", "localhost:1", SubReprovisioned)
	tw, _ = f.s.GetTwin("localhost:1", "dev-1")
	if tw.Properties.Reported.Props["fw"] != nil || tw.Properties.Desired.Props["mode"] != "initial" {
		t.Errorf("reset twin = desired %v reported %v; want initial desired, no fw", tw.Properties.Desired.Props, tw.Properties.Reported.Props)
	}
	var p TwinPatch
	p.Properties.Desired = map[string]any{"mode": "changed"}
	if _, err := f.s.UpdateTwin("localhost:1", "dev-1", p, ""); err != nil {
		t.Fatal(err)
	}
	step("same hub reset", "localhost:1", SubDataReset)
	tw, _ = f.s.GetTwin("localhost:1", "dev-1")
	if tw.Properties.Desired.Props["mode"] != "initial" {
		t.Errorf("same-hub reset desired = %v; want mode=initial", tw.Properties.Desired.Props)
	}
}

func TestRegisterAllocation(t *testing.T) {
	t.Parallel()
	f := newRegFixture(t)
	f.verifyRoot(t)
	f.group(t, "fleet", f.root, nil) // hashed across every hub
	seen := map[string]int{}
	for i := 0; i < 20; i++ {
		res, err := f.register(t, f.leaf(t, fmt.Sprintf("dev-%d", i)))
		if err != nil || res.Status != RegAssigned {
			t.Fatalf("Register #%d = %+v, %v", i, res.DeviceRegistrationState, err)
		}
		seen[res.AssignedHub]++
	}
	if len(seen) != 2 {
		t.Errorf("hashed allocation used hubs %v; want both", seen)
	}
	f.group(t, "fleet", f.root, func(g *EnrollmentGroup) { g.AllocationPolicy = AllocationCustom })
	res, err := f.register(t, f.leaf(t, "dev-c"))
	if err != nil || res.Status != RegFailed || res.ErrorCode != 400207 {
		t.Errorf("custom allocation = %+v, %v; want failed 400207", res.DeviceRegistrationState, err)
	}
}

func TestRegisterCAReference(t *testing.T) {
	t.Parallel()
	f := newRegFixture(t)
	if _, err := f.s.PutCACertificate(DPSOwner, "my-root", f.root.PEM(), false, ""); err != nil {
		t.Fatal(err)
	}
	f.group(t, "fleet", f.root, func(g *EnrollmentGroup) {
		g.Attestation.X509 = &X509Attestation{CAReferences: &X509CAReferences{Primary: "my-root"}}
	})
	dev := f.leaf(t, "dev-1")
	if _, err := f.register(t, dev); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("Register via unverified CA reference = %v; want ErrUnauthorized", err)
	}
	c, _ := f.s.GenerateVerificationCode(DPSOwner, "my-root", "")
	proof, _ := f.root.NewVerification(c.Properties.VerificationCode)
	if _, err := f.s.VerifyCACertificate(DPSOwner, "my-root", proof.PEM(), ""); err != nil {
		t.Fatal(err)
	}
	if res, err := f.register(t, dev); err != nil || res.Status != RegAssigned {
		t.Errorf("Register via verified CA reference = %+v, %v", res.DeviceRegistrationState, err)
	}
}

func mustTime(s string) time.Time {
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return v
}
