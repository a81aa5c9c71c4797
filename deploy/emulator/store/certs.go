package store

import (
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"strings"
)

// ParseCertificatePEM parses the first certificate in a PEM string. The
// Azure CLI also sends base64 DER without armour (docs/protocol.md D sources), so that is
// accepted too.
func ParseCertificatePEM(s string) (*x509.Certificate, error) {
	s = strings.TrimSpace(s)
	if blk, _ := pem.Decode([]byte(s)); blk != nil {
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("parse certificate: PEM block is %q", blk.Type)
		}
		return x509.ParseCertificate(blk.Bytes)
	}
	der, err := decodeBase64Loose(s)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: neither PEM nor base64 DER")
	}
	return x509.ParseCertificate(der)
}

// EncodeCertificatePEM returns the PEM text of a certificate.
func EncodeCertificatePEM(c *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
}

// ThumbprintSHA1 is the upper-case hex SHA-1 of the DER certificate.
func ThumbprintSHA1(c *x509.Certificate) string {
	s := sha1.Sum(c.Raw)
	return strings.ToUpper(hex.EncodeToString(s[:]))
}

// ThumbprintSHA256 is the upper-case hex SHA-256 of the DER certificate.
func ThumbprintSHA256(c *x509.Certificate) string {
	s := sha256.Sum256(c.Raw)
	return strings.ToUpper(hex.EncodeToString(s[:]))
}

// ThumbprintMatches reports whether want (hex SHA-1 or SHA-256, any case,
// colons allowed) is the thumbprint of c. docs/protocol.md B.1: the hub accepts either.
func ThumbprintMatches(want string, c *x509.Certificate) bool {
	w := strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(want), ":", ""))
	if w == "" {
		return false
	}
	return w == ThumbprintSHA1(c) || w == ThumbprintSHA256(c)
}

// CertificateInfo derives the X509CertificateInfo the service reports.
func CertificateInfo(c *x509.Certificate) *X509CertificateInfo {
	return &X509CertificateInfo{
		SubjectName:      c.Subject.String(),
		SHA1Thumbprint:   ThumbprintSHA1(c),
		SHA256Thumbprint: ThumbprintSHA256(c),
		IssuerName:       c.Issuer.String(),
		NotBeforeUTC:     Time{c.NotBefore.UTC()},
		NotAfterUTC:      Time{c.NotAfter.UTC()},
		SerialNumber:     strings.ToUpper(c.SerialNumber.Text(16)),
		Version:          c.Version,
	}
}

// fillInfo parses a certificate entry and fills in its info. It returns the
// parsed certificate, or nil for an empty entry.
func fillInfo(e *X509CertificateWithInfo) (*x509.Certificate, error) {
	if e == nil || e.Certificate == "" {
		return nil, nil
	}
	c, err := ParseCertificatePEM(e.Certificate)
	if err != nil {
		return nil, err
	}
	e.Info = CertificateInfo(c)
	return c, nil
}

// newVerificationCode returns a fresh proof-of-possession code: 48 hex
// characters, like the codes the real service issues.
func newVerificationCode() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return strings.ToUpper(hex.EncodeToString(b[:]))
}

// checkProofOfPossession verifies that proof is signed by ca's key and has
// subject CN equal to code (docs/protocol.md C: proof of possession).
func checkProofOfPossession(ca, proof *x509.Certificate, code string) error {
	if code == "" {
		return ErrInvalid.With("no verification code was generated for this certificate")
	}
	if proof.Subject.CommonName != code {
		return ErrInvalid.With("verification certificate CN %q does not match the verification code", proof.Subject.CommonName)
	}
	if err := proof.CheckSignatureFrom(ca); err != nil {
		// CheckSignatureFrom insists on CA basic constraints of the
		// parent; uploaded CAs have them. Fall back to the raw check so
		// a CA without the extension can still be proven.
		if err2 := ca.CheckSignature(proof.SignatureAlgorithm, proof.RawTBSCertificate, proof.Signature); err2 != nil {
			return ErrInvalid.With("verification certificate is not signed by the CA key: %v", err)
		}
	}
	return nil
}

// signedBy reports whether child's signature verifies with parent's key and
// the names chain.
func signedBy(child, parent *x509.Certificate) bool {
	if child.Issuer.String() != parent.Subject.String() {
		return false
	}
	return child.CheckSignatureFrom(parent) == nil
}

func sameCert(a, b *x509.Certificate) bool {
	return a != nil && b != nil && string(a.Raw) == string(b.Raw)
}
