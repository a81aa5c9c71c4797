package service_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"github.com/reefer/tracker/deploy/emulator/store"
)

// proofCert makes a proof-of-possession certificate with CN = code, signed
// by signer under the CA's name; with the wrong key the signature fails.
func proofCert(t *testing.T, ca *x509.Certificate, signer *ecdsa.PrivateKey, code string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: code},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	// A parent with the CA's name but the signer's public key lets a
	// wrong key sign under the CA's name.
	parent := *ca
	parent.PublicKey = signer.Public()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, &parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestCACertificateProofOfPossession(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := dpsToken()
	ca := newRoot(t, "pop root")
	caKey := ca.Key.(*ecdsa.PrivateKey)

	r := e.do("PUT", dpsPath("/certificates/root-1"), tok, map[string]any{"certificate": ca.PEM()})
	want(t, "upload", r, 200, 0)
	var c store.CACertificate
	r.json(t, &c)
	if c.Name != "root-1" || c.Properties.IsVerified || c.Properties.Thumbprint != store.ThumbprintSHA1(ca.Cert) || c.ETag == "" {
		t.Errorf("uploaded = %s; want unverified with the SHA-1 thumbprint", r.body)
	}

	r = e.do("GET", dpsPath("/certificates"), tok, nil)
	want(t, "list", r, 200, 0)
	var list struct{ Value []store.CACertificate }
	r.json(t, &list)
	if len(list.Value) != 1 || list.Value[0].Name != "root-1" {
		t.Errorf("list = %s; want root-1", r.body)
	}

	// Verifying before a code was issued fails.
	want(t, "verify without code", e.do("POST", dpsPath("/certificates/root-1/verify"), tok, map[string]any{"certificate": proofCert(t, ca.Cert, caKey, "whatever")}), 400, 400004)

	r = e.do("POST", dpsPath("/certificates/root-1/generateVerificationCode"), tok, nil)
	want(t, "generate code", r, 200, 0)
	r.json(t, &c)
	code := c.Properties.VerificationCode
	if len(code) < 16 {
		t.Fatalf("verification code = %q; want a long code", code)
	}
	wrongKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	want(t, "proof signed with another key", e.do("POST", dpsPath("/certificates/root-1/verify"), tok, map[string]any{"certificate": proofCert(t, ca.Cert, wrongKey, code)}), 400, 400004)
	want(t, "proof with the wrong CN", e.do("POST", dpsPath("/certificates/root-1/verify"), tok, map[string]any{"certificate": proofCert(t, ca.Cert, caKey, "not-the-code")}), 400, 400004)
	want(t, "proof that is not a certificate", e.do("POST", dpsPath("/certificates/root-1/verify"), tok, map[string]any{"certificate": "junk"}), 400, 400004)
	want(t, "verify unknown CA", e.do("POST", dpsPath("/certificates/nope/verify"), tok, map[string]any{"certificate": proofCert(t, ca.Cert, caKey, code)}), 404, 404204)
	r = e.do("GET", dpsPath("/certificates/root-1"), tok, nil)
	r.json(t, &c)
	if c.Properties.IsVerified {
		t.Fatalf("CA verified by a bad proof: %s", r.body)
	}

	// The right proof, sent as a bare PEM body, verifies it.
	r = e.do("POST", dpsPath("/certificates/root-1/verify"), tok, proofCert(t, ca.Cert, caKey, code))
	want(t, "verify", r, 200, 0)
	c = store.CACertificate{}
	r.json(t, &c)
	if !c.Properties.IsVerified || c.Properties.VerificationCode != "" {
		t.Errorf("verified = %s; want isVerified and the code cleared", r.body)
	}
	r = e.do("GET", dpsPath("/certificates/ROOT-1"), tok, nil)
	want(t, "get (case-insensitive name)", r, 200, 0)
	r.json(t, &c)
	if !c.Properties.IsVerified {
		t.Errorf("GET after verify = %s; want isVerified", r.body)
	}
	got, err := e.st.GetCACertificate(store.DPSOwner, "root-1")
	if err != nil || !got.Properties.IsVerified {
		t.Errorf("store CA = %+v, %v; want verified", got, err)
	}

	want(t, "delete stale", e.do("DELETE", dpsPath("/certificates/root-1"), tok, nil, "If-Match", `"stale"`), 412, 412001)
	want(t, "delete", e.do("DELETE", dpsPath("/certificates/root-1"), tok, nil, "If-Match", c.ETag), 204, 0)
	want(t, "get deleted", e.do("GET", dpsPath("/certificates/root-1"), tok, nil), 404, 404204)
	want(t, "code for deleted", e.do("POST", dpsPath("/certificates/root-1/generateVerificationCode"), tok, nil), 404, 404204)
}

func TestCACertificateUploadForms(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := dpsToken()
	ca := newRoot(t, "forms root")
	der := base64.StdEncoding.EncodeToString(ca.Cert.Raw)
	tests := []struct {
		name     string
		body     any
		query    string
		verified bool
	}{
		{"ARM top level, verified on upload", map[string]any{"certificate": ca.PEM(), "isVerified": true}, "", true},
		{"ARM properties", map[string]any{"properties": map[string]any{"certificate": ca.PEM(), "isVerified": true}}, "", true},
		{"base64 DER like az", map[string]any{"certificate": der}, "", false},
		{"bare PEM body", ca.PEM(), "", false},
		{"bare PEM body, isVerified query", ca.PEM(), "&isVerified=true", true},
	}
	for i, tc := range tests {
		name := "c" + string(rune('a'+i))
		r := e.do("PUT", dpsPath("/certificates/"+name)+tc.query, tok, tc.body)
		want(t, tc.name, r, 200, 0)
		var c store.CACertificate
		r.json(t, &c)
		if c.Properties.IsVerified != tc.verified || c.Properties.ThumbprintSHA256 != store.ThumbprintSHA256(ca.Cert) {
			t.Errorf("%s: uploaded = %s; want isVerified %v", tc.name, r.body, tc.verified)
		}
	}
	want(t, "no certificate", e.do("PUT", dpsPath("/certificates/x"), tok, map[string]any{"isVerified": true}), 400, 400004)
	want(t, "not a certificate", e.do("PUT", dpsPath("/certificates/x"), tok, map[string]any{"certificate": "abc"}), 400, 400004)
	want(t, "empty body", e.do("PUT", dpsPath("/certificates/x"), tok, ""), 400, 400004)

	// Hub CAs are the hub's own.
	r := e.do("PUT", hubPath("/certificates/hub-root"), hub1Token(), map[string]any{"certificate": ca.PEM(), "isVerified": true})
	want(t, "hub upload", r, 200, 0)
	if _, err := e.st.GetCACertificate(hub1, "hub-root"); err != nil {
		t.Errorf("hub CA not stored for %s: %v", hub1, err)
	}
	want(t, "hub CA is not a DPS CA", e.do("GET", dpsPath("/certificates/hub-root"), tok, nil), 404, 404204)
}
