// Package pki generates the X.509 material the emulator and its tests need:
// CA hierarchies (root → intermediate → leaf), device leaves, server
// certificates and proof-of-possession certificates. Keys are ECDSA P-256,
// which Azure accepts and which is fast to generate in tests.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"time"
)

// Cert is a certificate with its private key and the chain of issuing CAs
// above it (closest first, root last).
type Cert struct {
	Cert  *x509.Certificate
	Key   crypto.Signer
	Chain []*x509.Certificate
}

// Options tune certificate generation. Zero values give sensible defaults.
type Options struct {
	NotBefore time.Time // default now - 1h
	NotAfter  time.Time // default now + 1 year (CA: 10 years)
	Serial    *big.Int  // default random
}

func (o Options) window(ca bool) (time.Time, time.Time) {
	nb, na := o.NotBefore, o.NotAfter
	if nb.IsZero() {
		nb = time.Now().Add(-time.Hour)
	}
	if na.IsZero() {
		if ca {
			na = nb.AddDate(10, 0, 0)
		} else {
			na = nb.AddDate(1, 0, 0)
		}
	}
	return nb, na
}

func serial(o Options) *big.Int {
	if o.Serial != nil {
		return o.Serial
	}
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func newKey() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }

// newCert generates a key and a certificate for tmpl (subject and usage),
// with o's validity window and serial, signed by parent or, when parent is
// nil, self-signed.
func newCert(parent *Cert, tmpl *x509.Certificate, o Options, what string) (*Cert, error) {
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial(o)
	tmpl.NotBefore, tmpl.NotAfter = o.window(tmpl.IsCA)
	tmpl.BasicConstraintsValid = true
	issuer, signer, chain := tmpl, crypto.Signer(key), []*x509.Certificate(nil)
	if parent != nil {
		issuer, signer = parent.Cert, parent.Key
		chain = append([]*x509.Certificate{parent.Cert}, parent.Chain...)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, &key.PublicKey, signer)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	x, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return &Cert{Cert: x, Key: key, Chain: chain}, nil
}

func caTemplate(cn string) *x509.Certificate {
	return &x509.Certificate{Subject: pkix.Name{CommonName: cn}, IsCA: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature}
}

func leafTemplate(cn string, usage x509.ExtKeyUsage) *x509.Certificate {
	return &x509.Certificate{Subject: pkix.Name{CommonName: cn},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
}

// NewRootCA creates a self-signed root CA.
func NewRootCA(cn string, o Options) (*Cert, error) {
	return newCert(nil, caTemplate(cn), o, "root CA "+cn)
}

// NewIntermediateCA issues a CA certificate signed by c.
func (c *Cert) NewIntermediateCA(cn string, o Options) (*Cert, error) {
	return newCert(c, caTemplate(cn), o, "intermediate CA "+cn)
}

// NewClient issues a TLS client (device) certificate with subject CN = cn.
func (c *Cert) NewClient(cn string, o Options) (*Cert, error) {
	return newCert(c, leafTemplate(cn, x509.ExtKeyUsageClientAuth), o, "client cert "+cn)
}

// NewServer issues a TLS server certificate for the given DNS names and IP
// addresses.
func (c *Cert) NewServer(hosts []string, o Options) (*Cert, error) {
	tmpl := leafTemplate(hosts[0], x509.ExtKeyUsageServerAuth)
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return newCert(c, tmpl, o, "server cert")
}

// NewSelfSigned creates a self-signed device certificate (for selfSigned
// thumbprint identities and individual enrollments).
func NewSelfSigned(cn string, o Options) (*Cert, error) {
	return newCert(nil, leafTemplate(cn, x509.ExtKeyUsageClientAuth), o, "self-signed "+cn)
}

// NewVerification issues the proof-of-possession certificate for a CA: CN =
// the verification code, signed by the CA's key (docs/protocol.md C).
func (c *Cert) NewVerification(code string) (*Cert, error) { return c.NewClient(code, Options{}) }

// PEM returns the certificate as PEM.
func (c *Cert) PEM() string { return CertPEM(c.Cert) }

// ChainPEM returns the certificate followed by its chain, as PEM, excluding
// the self-signed root (a device need not send it, docs/protocol.md C).
func (c *Cert) ChainPEM() string {
	s := c.PEM()
	for _, x := range c.Chain {
		if isSelfSigned(x) {
			continue
		}
		s += CertPEM(x)
	}
	return s
}

// KeyPEM returns the private key as PKCS#8 PEM.
func (c *Cert) KeyPEM() (string, error) {
	der, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), nil
}

// TLS returns a tls.Certificate presenting the leaf and its intermediates
// (leaf first, no root): the chain a device sends (docs/protocol.md C).
func (c *Cert) TLS() tls.Certificate {
	t := tls.Certificate{Certificate: [][]byte{c.Cert.Raw}, PrivateKey: c.Key, Leaf: c.Cert}
	for _, x := range c.Chain {
		if isSelfSigned(x) {
			continue
		}
		t.Certificate = append(t.Certificate, x.Raw)
	}
	return t
}

// TLSWith returns a tls.Certificate presenting exactly the leaf plus the
// given extra certificates, to build deliberately broken chains in tests.
func (c *Cert) TLSWith(extra ...*x509.Certificate) tls.Certificate {
	t := tls.Certificate{Certificate: [][]byte{c.Cert.Raw}, PrivateKey: c.Key, Leaf: c.Cert}
	for _, x := range extra {
		t.Certificate = append(t.Certificate, x.Raw)
	}
	return t
}

func isSelfSigned(x *x509.Certificate) bool {
	return x.Subject.String() == x.Issuer.String() && x.CheckSignatureFrom(x) == nil
}

// CertPEM encodes a certificate as PEM.
func CertPEM(x *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: x.Raw}))
}

// WriteFiles writes the certificate chain and key as PEM files (key 0600).
func (c *Cert) WriteFiles(certPath, keyPath string) error {
	k, err := c.KeyPEM()
	if err != nil {
		return err
	}
	if err := os.WriteFile(certPath, []byte(c.ChainPEM()), 0o644); err != nil {
		return err
	}
	return os.WriteFile(keyPath, []byte(k), 0o600)
}

// Load reads a certificate (with optional chain after it) and key written
// by WriteFiles.
func Load(certPath, keyPath string) (*Cert, error) {
	cb, err := os.ReadFile(certPath)
	if err != nil {
		return nil, err
	}
	kb, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	for rest := cb; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		x, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("load %s: %w", certPath, err)
		}
		certs = append(certs, x)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("load %s: no certificate", certPath)
	}
	blk, _ := pem.Decode(kb)
	if blk == nil {
		return nil, fmt.Errorf("load %s: no PEM key", keyPath)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", keyPath, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("load: key is not a signer")
	}
	return &Cert{Cert: certs[0], Key: signer, Chain: certs[1:]}, nil
}
