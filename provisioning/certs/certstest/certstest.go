// Package certstest makes throwaway X.509 hierarchies for tests: a root, an
// intermediate and device or server leaves with chosen key types and
// validity, and writes them as PEM files the way an operator would.
// It is for tests only; keys come from crypto/rand and are never reused.
package certstest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"testing"
	"time"
)

// KeyType selects the key algorithm of a certificate.
type KeyType int

const (
	ECDSA KeyType = iota // ECDSA P-256, the default
	RSA                  // RSA-2048
)

func (k KeyType) String() string {
	if k == RSA {
		return "RSA-2048"
	}
	return "ECDSA-P256"
}

// Options shape one certificate. The zero value is an ECDSA P-256
// certificate valid from an hour ago for a day.
type Options struct {
	Key       KeyType
	NotBefore time.Time // zero: an hour ago
	NotAfter  time.Time // zero: NotBefore + 25h
	// DNSNames and IPAddresses make a leaf a TLS server certificate as well.
	DNSNames    []string
	IPAddresses []net.IP
}

// Cert is a certificate with its private key.
type Cert struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// Root makes a self-signed root CA.
func Root(t testing.TB, cn string, o Options) *Cert {
	t.Helper()
	return issue(t, nil, cn, o, true)
}

// Intermediate makes a CA signed by ca.
func (ca *Cert) Intermediate(t testing.TB, cn string, o Options) *Cert {
	t.Helper()
	return issue(t, ca, cn, o, true)
}

// Leaf makes an end-entity certificate signed by ca with the clientAuth
// extended key usage (and serverAuth when o names hosts).
func (ca *Cert) Leaf(t testing.TB, cn string, o Options) *Cert {
	t.Helper()
	return issue(t, ca, cn, o, false)
}

// SelfSigned makes a self-signed end-entity certificate, as used for
// individual enrollments with thumbprints.
func SelfSigned(t testing.TB, cn string, o Options) *Cert {
	t.Helper()
	return issue(t, nil, cn, o, false)
}

// NewKey makes a private key of type k.
func NewKey(t testing.TB, k KeyType) crypto.Signer {
	t.Helper()
	var (
		key crypto.Signer
		err error
	)
	switch k {
	case RSA:
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		t.Fatalf("certstest: generate %v key: %v", k, err)
	}
	return key
}

func issue(t testing.TB, parent *Cert, cn string, o Options, isCA bool) *Cert {
	t.Helper()
	key := NewKey(t, o.Key)
	return &Cert{Cert: sign(t, parent, cn, o, isCA, key.Public(), key), Key: key}
}

// SignCSR plays an issuing CA (DPS with a credential policy, docs/protocol.md
// A.5): after checking the DER request's signature, ca signs its key as a
// client certificate for cn (which may differ from the request's) with o's
// validity. The key stays with whoever made the request.
func (ca *Cert) SignCSR(t testing.TB, csrDER []byte, cn string, o Options) *x509.Certificate {
	t.Helper()
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		t.Fatalf("certstest: CSR: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Fatalf("certstest: CSR signature: %v", err)
	}
	return sign(t, ca, cn, o, false, csr.PublicKey, nil)
}

// sign makes the certificate of pub for cn, signed by parent, or by self
// (pub's own key) when parent is nil.
func sign(t testing.TB, parent *Cert, cn string, o Options, isCA bool, pub crypto.PublicKey, self crypto.Signer) *x509.Certificate {
	t.Helper()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	nb := o.NotBefore
	if nb.IsZero() {
		nb = time.Now().Add(-time.Hour)
	}
	na := o.NotAfter
	if na.IsZero() {
		na = nb.Add(25 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             nb,
		NotAfter:              na,
		BasicConstraintsValid: true,
		IsCA:                  isCA,
		DNSNames:              o.DNSNames,
		IPAddresses:           o.IPAddresses,
	}
	if isCA {
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		if len(o.DNSNames) > 0 || len(o.IPAddresses) > 0 {
			tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		}
	}
	signerCert, signerKey := tmpl, self
	if parent != nil {
		signerCert, signerKey = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, pub, signerKey)
	if err != nil {
		t.Fatalf("certstest: create %q: %v", cn, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// PEM encodes certificates as consecutive CERTIFICATE blocks.
func PEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// WriteCerts writes certs, in order, to path (mode 0644).
func WriteCerts(t testing.TB, path string, certs ...*x509.Certificate) {
	t.Helper()
	if err := os.WriteFile(path, PEM(certs...), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Encoding is a private-key PEM encoding.
type Encoding int

const (
	PKCS8 Encoding = iota // "PRIVATE KEY", RSA or ECDSA
	PKCS1                 // "RSA PRIVATE KEY"
	SEC1                  // "EC PRIVATE KEY"
)

// KeyPEM encodes key in encoding e.
func KeyPEM(t testing.TB, key crypto.Signer, e Encoding) []byte {
	t.Helper()
	var b *pem.Block
	switch e {
	case PKCS1:
		k, ok := key.(*rsa.PrivateKey)
		if !ok {
			t.Fatalf("certstest: PKCS#1 needs an RSA key, not %T", key)
		}
		b = &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}
	case SEC1:
		k, ok := key.(*ecdsa.PrivateKey)
		if !ok {
			t.Fatalf("certstest: SEC1 needs an ECDSA key, not %T", key)
		}
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		b = &pem.Block{Type: "EC PRIVATE KEY", Bytes: der}
	default:
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		b = &pem.Block{Type: "PRIVATE KEY", Bytes: der}
	}
	return pem.EncodeToMemory(b)
}

// WriteKey writes key to path in encoding e with mode 0600.
func WriteKey(t testing.TB, path string, key crypto.Signer, e Encoding) {
	t.Helper()
	if err := os.WriteFile(path, KeyPEM(t, key, e), 0o600); err != nil {
		t.Fatal(err)
	}
	// WriteFile keeps the mode of an existing file; make it exact.
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
}
