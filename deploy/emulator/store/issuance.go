package store

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/reefer/tracker/deploy/emulator/pki"
)

// Certificate issuance by DPS (docs/protocol.md A.5). In Azure the
// enrollment's credentialPolicyName names an Azure Device Registry policy:
// an issuing CA under the ADR namespace's root CA. The emulator stands in
// for both with its own, emulator-specific resources: one credential root
// CA per data directory and credential policies, each with an issuing CA
// the emulator generates and keeps, signed by that root.

// DefaultIssuedCertValidity is the validity of certificates issued under a
// credential policy created without one (Options.IssuedCertValidity).
const DefaultIssuedCertValidity = 30 * 24 * time.Hour

// Bounds of a credential policy's validity.
const (
	MinIssuedCertValidity = time.Second
	MaxIssuedCertValidity = 10 * 365 * 24 * time.Hour
)

// CredentialPolicy is the emulator's stand-in for an ADR credential policy
// (emulator-specific; docs/protocol.md A.5). Clients write Name and
// ValiditySeconds; the emulator fills in the rest.
type CredentialPolicy struct {
	Name string `json:"name"`
	// ValiditySeconds is how long certificates issued under the policy
	// are valid, from the moment of issuance.
	ValiditySeconds int64 `json:"validitySeconds"`
	// IssuingCertificate is the PEM of the policy's issuing CA, which
	// signs the devices' certificates; RootCertificate is the PEM of the
	// emulator's credential root CA above it.
	IssuingCertificate     string               `json:"issuingCertificate,omitempty"`
	IssuingCertificateInfo *X509CertificateInfo `json:"issuingCertificateInfo,omitempty"`
	RootCertificate        string               `json:"rootCertificate,omitempty"`
	ETag                   string               `json:"etag,omitempty"`
	CreatedDateTimeUTC     *Time                `json:"createdDateTimeUtc,omitempty"`
	LastUpdatedDateTimeUTC *Time                `json:"lastUpdatedDateTimeUtc,omitempty"`
}

// Validity is ValiditySeconds as a duration.
func (p CredentialPolicy) Validity() time.Duration {
	return time.Duration(p.ValiditySeconds) * time.Second
}

// Certificates parses the issuing CA and the root.
func (p CredentialPolicy) Certificates() (issuing, root *x509.Certificate, err error) {
	if issuing, err = ParseCertificatePEM(p.IssuingCertificate); err != nil {
		return nil, nil, fmt.Errorf("credential policy %s: issuing CA: %w", p.Name, err)
	}
	if root, err = ParseCertificatePEM(p.RootCertificate); err != nil {
		return nil, nil, fmt.Errorf("credential policy %s: root CA: %w", p.Name, err)
	}
	return issuing, root, nil
}

// policyRecord is the persisted policy: the served view plus the issuing
// CA's private key, which is never served.
type policyRecord struct {
	CredentialPolicy
	IssuingKey string `json:"issuingKey"` // PKCS#8 PEM
	ca         *pki.Cert
}

var (
	policyKind = dpsKind[policyRecord]{"credential policy", "credentialPolicies", ErrCredentialPolicyNotFound,
		func(s *Store) map[string]*policyRecord { return s.policies }, func(p *policyRecord) string { return p.ETag }}

	policyNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9\-._]{0,63}$`)
)

// loadCredentialRoot loads, or creates once, the credential root CA in
// dps/credential-root.{pem,key}.
func (s *Store) loadCredentialRoot() error {
	certPath, keyPath := s.CredentialRootPath(), s.path("dps", "credential-root.key")
	if c, err := pki.Load(certPath, keyPath); err == nil {
		s.credRoot = c
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("credential root CA: %w", err)
	}
	c, err := pki.NewRootCA("Azure IoT Emulator Credential Root CA", pki.Options{})
	if err != nil {
		return fmt.Errorf("credential root CA: %w", err)
	}
	if err := os.MkdirAll(s.path("dps"), 0o700); err != nil {
		return err
	}
	// Key first: a crash between the two writes leaves no certificate
	// without its key, and the next start makes a new pair.
	k, err := c.KeyPEM()
	if err != nil {
		return err
	}
	if err := WriteFileAtomic(keyPath, []byte(k), !s.opts.NoSync); err != nil {
		return fmt.Errorf("credential root CA: %w", err)
	}
	if err := WriteFileAtomic(certPath, []byte(c.PEM()), !s.opts.NoSync); err != nil {
		return fmt.Errorf("credential root CA: %w", err)
	}
	s.credRoot = c
	return nil
}

// CredentialRootPath is the PEM file of the credential root CA, the trust
// anchor of every issued certificate (listed in emulator.json).
func (s *Store) CredentialRootPath() string { return s.path("dps", "credential-root.pem") }

// CredentialRoot is the credential root CA certificate.
func (s *Store) CredentialRoot() *x509.Certificate { return s.credRoot.Cert }

// IssuedCertValidity is the validity given to policies created without one.
func (s *Store) IssuedCertValidity() time.Duration { return s.opts.IssuedCertValidity }

func (r *policyRecord) restore() error {
	c, err := ParseCertificatePEM(r.IssuingCertificate)
	if err != nil {
		return err
	}
	blk, _ := pem.Decode([]byte(r.IssuingKey))
	if blk == nil {
		return errors.New("no issuing key")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return err
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return errors.New("issuing key is not a signer")
	}
	r.ca = &pki.Cert{Cert: c, Key: signer}
	return nil
}

// PutCredentialPolicy creates or updates a credential policy. A new policy
// gets a new issuing CA; an update changes only the validity (and keeps
// the CA, so certificates already issued stay trusted). A zero validity
// means IssuedCertValidity. An If-Match other than "" or "*" requires the
// policy to exist with that etag.
func (s *Store) PutCredentialPolicy(p CredentialPolicy, ifMatch string) (CredentialPolicy, error) {
	if !policyNameRe.MatchString(p.Name) {
		return CredentialPolicy{}, ErrInvalid.With("credential policy name %q: 1 to 64 letters, digits, '-', '.', '_', starting with a letter or digit", p.Name)
	}
	if p.ValiditySeconds == 0 {
		p.ValiditySeconds = int64(s.opts.IssuedCertValidity / time.Second)
	}
	if v := p.Validity(); v < MinIssuedCertValidity || v > MaxIssuedCertValidity {
		return CredentialPolicy{}, ErrInvalid.With("validitySeconds %d is outside %d..%d", p.ValiditySeconds, int64(MinIssuedCertValidity/time.Second), int64(MaxIssuedCertValidity/time.Second))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	key := strings.ToLower(p.Name)
	old := s.policies[key]
	if !anyETag(ifMatch) {
		if old == nil {
			return CredentialPolicy{}, ErrCredentialPolicyNotFound.With("credential policy %q not found", p.Name)
		}
		if !ETagMatches(ifMatch, old.ETag) {
			return CredentialPolicy{}, ErrPrecondition.With("etag mismatch for credential policy %q", p.Name)
		}
	}
	now := &Time{s.now().UTC()}
	rec := &policyRecord{CredentialPolicy: CredentialPolicy{Name: p.Name, ValiditySeconds: p.ValiditySeconds,
		CreatedDateTimeUTC: now, LastUpdatedDateTimeUTC: now, ETag: newQuotedETag()}}
	if old != nil {
		rec.Name = old.Name
		rec.CreatedDateTimeUTC = old.CreatedDateTimeUTC
		rec.IssuingCertificate, rec.IssuingCertificateInfo, rec.RootCertificate = old.IssuingCertificate, old.IssuingCertificateInfo, old.RootCertificate
		rec.IssuingKey, rec.ca = old.IssuingKey, old.ca
	} else {
		ca, err := s.credRoot.NewIntermediateCA("Azure IoT Emulator Issuing CA "+p.Name, pki.Options{})
		if err != nil {
			return CredentialPolicy{}, ErrInternal.With("issuing CA: %v", err)
		}
		k, err := ca.KeyPEM()
		if err != nil {
			return CredentialPolicy{}, ErrInternal.With("issuing CA: %v", err)
		}
		rec.IssuingCertificate, rec.IssuingCertificateInfo = ca.PEM(), CertificateInfo(ca.Cert)
		rec.RootCertificate = EncodeCertificatePEM(s.credRoot.Cert)
		rec.IssuingKey, rec.ca = k, ca
	}
	if err := s.writeJSON(fileJoin(s.path("dps", policyKind.dir), key), rec); err != nil {
		return CredentialPolicy{}, ErrInternal.With("%v", err)
	}
	s.policies[key] = rec
	return rec.CredentialPolicy, nil
}

// GetCredentialPolicy returns a credential policy by name (case-insensitive).
func (s *Store) GetCredentialPolicy(name string) (CredentialPolicy, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, err := policyKind.lookup(s, name)
	if err != nil {
		return CredentialPolicy{}, err
	}
	return r.CredentialPolicy, nil
}

// ListCredentialPolicies returns every credential policy in name order.
func (s *Store) ListCredentialPolicies() []CredentialPolicy {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []CredentialPolicy
	for _, r := range policyKind.list(s) {
		out = append(out, r.CredentialPolicy)
	}
	return out
}

// DeleteCredentialPolicy deletes a credential policy. Certificates it
// issued stay trusted by the hubs until they expire (the credential root
// still anchors them); enrollments that name it refuse a csr (400304).
func (s *Store) DeleteCredentialPolicy(name, ifMatch string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return policyKind.remove(s, name, ifMatch)
}

// ParseCSR checks a certificate signing request as DPS receives it
// (docs/protocol.md A.5): DER PKCS#10 whose signature verifies, with an
// ECDSA P-256/P-384 or RSA (2048 bits or more) key, and subject CN equal to
// the registration id (case-insensitively). It returns ErrCSRInvalid or
// ErrCSRSubject.
func ParseCSR(der []byte, registrationID string) (*x509.CertificateRequest, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, ErrCSRInvalid.With("csr is not a DER PKCS#10 request: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, ErrCSRInvalid.With("csr signature does not verify: %v", err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, ErrCSRInvalid.With("csr key curve %s is not supported (P-256, P-384)", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, ErrCSRInvalid.With("csr RSA key of %d bits is too short (2048 or more)", k.N.BitLen())
		}
	default:
		return nil, ErrCSRInvalid.With("csr key type %T is not supported (ECDSA P-256/P-384, RSA)", csr.PublicKey)
	}
	if !strings.EqualFold(csr.Subject.CommonName, registrationID) {
		return nil, ErrCSRSubject.With("csr subject CN %q is not the registration id %q", csr.Subject.CommonName, registrationID)
	}
	return csr, nil
}

// policyForLocked returns the credential policy of a matched enrollment,
// or ErrNoCredentialPolicy. Caller holds mu.
func (s *Store) policyForLocked(m *enrollmentMatch) (*policyRecord, error) {
	name, what := "", ""
	if m.individual != nil {
		name, what = m.individual.CredentialPolicyName, "individual enrollment "+m.individual.RegistrationID
	} else {
		name, what = m.group.CredentialPolicyName, "enrollment group "+m.group.EnrollmentGroupID
	}
	if name == "" {
		return nil, ErrNoCredentialPolicy.With("%s has no credentialPolicyName, so no certificate can be issued", what)
	}
	p := s.policies[strings.ToLower(name)]
	if p == nil {
		return nil, ErrNoCredentialPolicy.With("%s names credential policy %q, which does not exist", what, name)
	}
	return p, nil
}

// issueLocked signs the CSR's key under policy p: CN as the CSR has it,
// client authentication, valid from now for the policy's validity. It
// returns the chain leaf first, then the issuing CA and the root, each as
// base64 DER (docs/protocol.md A.5), and the leaf. Caller holds mu.
func (s *Store) issueLocked(p *policyRecord, csr *x509.CertificateRequest, now time.Time) ([]string, *x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, ErrInternal.With("serial: %v", err)
	}
	nb := now.Truncate(time.Second)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               csr.Subject,
		NotBefore:             nb,
		NotAfter:              nb.Add(p.Validity()),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca.Cert, csr.PublicKey, p.ca.Key)
	if err != nil {
		return nil, nil, ErrInternal.With("issue certificate: %v", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, ErrInternal.With("issue certificate: %v", err)
	}
	chain := []string{base64.StdEncoding.EncodeToString(der),
		base64.StdEncoding.EncodeToString(p.ca.Cert.Raw),
		base64.StdEncoding.EncodeToString(s.credRoot.Cert.Raw)}
	return chain, leaf, nil
}
