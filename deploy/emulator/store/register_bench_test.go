package store

import (
	"fmt"
	"testing"

	"github.com/reefer/tracker/deploy/emulator/pki"
)

// BenchmarkRegisterGroup is the store's share of one DPS registration of
// a fleet device (group enrollment under a verified root, leaf +
// intermediate presented): what a 10,000-device stampede pays 10,000
// times under the store lock.
//
//	go test -run '^$' -bench RegisterGroup -benchmem ./deploy/emulator/store
func BenchmarkRegisterGroup(b *testing.B) {
	s, err := Open(b.TempDir(), Options{Hubs: testHubs, NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	root, err := pki.NewRootCA("Bench Root", pki.Options{})
	if err != nil {
		b.Fatal(err)
	}
	inter, err := root.NewIntermediateCA("Bench Intermediate", pki.Options{})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.PutCACertificate(DPSOwner, "root", root.PEM(), true, ""); err != nil {
		b.Fatal(err)
	}
	g := EnrollmentGroup{EnrollmentGroupID: "fleet", Attestation: AttestationMechanism{Type: AttestationX509,
		X509: &X509Attestation{SigningCertificates: &X509Certificates{Primary: &X509CertificateWithInfo{Certificate: root.PEM()}}}}}
	if _, err := s.PutEnrollmentGroup(g, "*"); err != nil {
		b.Fatal(err)
	}
	leaves := make([]*pki.Cert, 256)
	for i := range leaves {
		if leaves[i], err = inter.NewClient(fmt.Sprintf("dev-%03d", i), pki.Options{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		l := leaves[i%len(leaves)]
		res, err := s.Register(RegisterRequest{RegistrationID: l.Cert.Subject.CommonName, Chain: chainOf(l, true)})
		if err != nil || res.Status != RegAssigned {
			b.Fatalf("Register = %+v, %v", res, err)
		}
	}
}
