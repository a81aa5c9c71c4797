package store

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
)

// FuzzParseCSR feeds ParseCSR the bytes a device's csr decodes to
// (docs/protocol.md A.5): it never panics, refuses with ErrCSRInvalid or
// ErrCSRSubject only, and what it accepts has a verifying signature, a
// supported key and the registration id as CN.
func FuzzParseCSR(f *testing.F) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "sensor-thl-001"}}, k)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(der, "sensor-thl-001")
	f.Add(der, "SENSOR-THL-001")
	f.Add(der, "sensor-thl-002")
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), "sensor-thl-001")
	f.Add(der[:len(der)/2], "sensor-thl-001")
	f.Add([]byte{}, "")
	f.Fuzz(func(t *testing.T, b []byte, rid string) {
		csr, err := ParseCSR(b, rid)
		if err != nil {
			if !errors.Is(err, ErrCSRInvalid) && !errors.Is(err, ErrCSRSubject) {
				t.Fatalf("ParseCSR error %v is neither 400302 nor 400303", err)
			}
			return
		}
		if !strings.EqualFold(csr.Subject.CommonName, rid) || csr.CheckSignature() != nil {
			t.Fatalf("accepted CSR with CN %q for %q (signature: %v)", csr.Subject.CommonName, rid, csr.CheckSignature())
		}
	})
}
