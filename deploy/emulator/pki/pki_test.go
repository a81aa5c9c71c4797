package pki

import (
	"crypto/x509"
	"path/filepath"
	"testing"
	"time"
)

func TestChainVerifies(t *testing.T) {
	root, err := NewRootCA("Root", Options{})
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediateCA("Inter", Options{})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := inter.NewClient("dev-1", Options{})
	if err != nil {
		t.Fatal(err)
	}
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root.Cert)
	inters.AddCert(inter.Cert)
	if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("leaf does not verify: %v", err)
	}
	tc := leaf.TLS()
	if len(tc.Certificate) != 2 {
		t.Errorf("TLS() presents %d certificates; want leaf + intermediate (no root)", len(tc.Certificate))
	}
	if got := len(leaf.TLSWith().Certificate); got != 1 {
		t.Errorf("TLSWith() presents %d certificates; want 1", got)
	}
	srv, err := root.NewServer([]string{"localhost", "127.0.0.1"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Cert.VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("server cert: %v", err)
	}
	proof, _ := root.NewVerification("CODE123")
	if proof.Cert.Subject.CommonName != "CODE123" || proof.Cert.CheckSignatureFrom(root.Cert) != nil {
		t.Error("verification certificate not CN=code signed by the CA")
	}
	old, _ := inter.NewClient("old", Options{NotBefore: time.Unix(0, 0), NotAfter: time.Unix(3600, 0)})
	if !old.Cert.NotAfter.Equal(time.Unix(3600, 0)) {
		t.Errorf("NotAfter = %v; want 1970-01-01T01:00Z", old.Cert.NotAfter)
	}
}

func TestWriteLoadRoundTrip(t *testing.T) {
	root, _ := NewRootCA("Root", Options{})
	inter, _ := root.NewIntermediateCA("Inter", Options{})
	leaf, _ := inter.NewClient("dev-1", Options{})
	dir := t.TempDir()
	cp, kp := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	if err := leaf.WriteFiles(cp, kp); err != nil {
		t.Fatal(err)
	}
	got, err := Load(cp, kp)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Cert.Equal(leaf.Cert) || len(got.Chain) != 1 || !got.Chain[0].Equal(inter.Cert) {
		t.Errorf("Load = cert %v chain %d; want leaf + intermediate", got.Cert.Subject, len(got.Chain))
	}
	if _, err := Load(filepath.Join(dir, "missing"), kp); err == nil {
		t.Error("Load of a missing file succeeded")
	}
}
