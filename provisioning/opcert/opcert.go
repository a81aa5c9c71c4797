// Package opcert keeps the device's operational certificate: the hub
// certificate DPS issues for a certificate signing request the device
// makes with a key generated on the device (docs/protocol.md A.5). The
// onboarding certificate (provisioning/certs) stays for DPS.
//
// The key never leaves the device and is never written without its
// certificate: it lives in memory while DPS signs the request, then key
// and issued chain are written together as one PEM file (mode 0600) with
// one atomic replace (internal/atomicfile). A new certificate is first
// written as the pending bundle; once the hub has accepted it, one rename
// makes it the current one. A crash at any point leaves the current bundle,
// the pending one, or both, each whole.
package opcert

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/reefer/tracker/internal/atomicfile"
	"github.com/reefer/tracker/provisioning/certs"
)

// The bundles in the state directory: the private key (PKCS#8) followed by
// the issued chain, leaf first.
const (
	CurrentFile = "operational.pem"
	PendingFile = "operational-next.pem"
)

// DefaultRenewAt is the fraction of an operational certificate's lifetime
// after which the tracker renews it: two thirds, leaving a third for
// retries (and for an operator, should DPS refuse) before it expires.
const DefaultRenewAt = 2.0 / 3

// RenewalDue is when a certificate is renewed: after renewAt of its
// lifetime.
func RenewalDue(c *x509.Certificate, renewAt float64) time.Time {
	return c.NotBefore.Add(time.Duration(float64(c.NotAfter.Sub(c.NotBefore)) * renewAt))
}

// Validity is the certificate's certs.Validity, except that it is "ok"
// until its renewal is due: the tracker replaces it by itself, so only a
// renewal that is late deserves a warning.
func Validity(c *x509.Certificate, renewAt float64, now time.Time) certs.Validity {
	v := certs.ValidityOf(c, now)
	if now.Before(RenewalDue(c, renewAt)) {
		v.State = certs.ExpiryOK
	}
	return v
}

// ErrNone: there is no such bundle.
var ErrNone = errors.New("no operational certificate")

// ErrIssued: the chain DPS returned does not fit the request (another
// key, another CN, out of order, unparseable).
var ErrIssued = errors.New("issued certificate unusable")

// Request is a fresh key and the PKCS#10 request for it. The key stays in
// memory until Store.SavePending writes it with its certificate.
type Request struct {
	// CSR is the DER request: CN = the registration id, signed by the key.
	CSR []byte
	// CommonName is the CN the request carries.
	CommonName string
	key        crypto.Signer
}

// NewRequest makes an ECDSA P-256 key with rand (crypto/rand when nil)
// and a request with subject CN = registrationID (docs/protocol.md A.5).
func NewRequest(registrationID string, rnd io.Reader) (*Request, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rnd)
	if err != nil {
		return nil, fmt.Errorf("opcert: generate key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rnd, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: registrationID},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("opcert: certificate request: %w", err)
	}
	return &Request{CSR: der, CommonName: registrationID, key: key}, nil
}

// Store is the operational certificate's files in Dir (the state
// directory).
type Store struct {
	Dir string
	// NoSync skips the fsyncs (tests).
	NoSync bool
}

func (s Store) path(name string) string { return filepath.Join(s.Dir, name) }

// Current loads the bundle in use. See Load.
func (s Store) Current() (*certs.Identity, error) { return s.load(CurrentFile) }

// Pending loads the bundle issued but not yet accepted by the hub.
func (s Store) Pending() (*certs.Identity, error) { return s.load(PendingFile) }

// load reads a bundle whatever the clock says (the caller judges the
// dates with Usable): its key permissions, key match, CN and chain order
// are checked by certs.LoadIdentity. A missing file wraps ErrNone.
func (s Store) load(name string) (*certs.Identity, error) {
	p := s.path(name)
	id, err := certs.LoadBundle(p, time.Time{}) // one read: a rename cannot tear it
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("opcert: %s: %w", p, ErrNone)
	}
	if err != nil {
		return nil, fmt.Errorf("opcert: %w", err)
	}
	return id, nil
}

// Usable reports whether id's leaf is valid at now.
func Usable(id *certs.Identity, now time.Time) bool {
	return id != nil && !now.Before(id.Leaf.NotBefore) && now.Before(id.Leaf.NotAfter)
}

// SavePending checks the chain DPS issued for req (DER, leaf first) and
// writes key and chain as the pending bundle, replacing any earlier
// pending one. The chain must certify req's key for req's CN in order
// (certs.NewIdentity); anything else wraps ErrIssued and writes nothing.
func (s Store) SavePending(req *Request, chainDER [][]byte) (*certs.Identity, error) {
	p := s.path(PendingFile)
	if len(chainDER) == 0 {
		return nil, fmt.Errorf("opcert: %w: empty chain", ErrIssued)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(req.key)
	if err != nil {
		return nil, fmt.Errorf("opcert: %w", err)
	}
	var b bytes.Buffer
	pem.Encode(&b, &pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	chain := make([]*x509.Certificate, len(chainDER))
	for i, der := range chainDER {
		if chain[i], err = x509.ParseCertificate(der); err != nil {
			return nil, fmt.Errorf("opcert: %w: certificate %d: %v", ErrIssued, i+1, err)
		}
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	if cn := chain[0].Subject.CommonName; cn != req.CommonName {
		return nil, fmt.Errorf("opcert: %w: issued for CN %q, requested %q", ErrIssued, cn, req.CommonName)
	}
	if _, err := certs.NewIdentity(p, p, chain, req.key, midpoint(chain[0])); err != nil {
		return nil, fmt.Errorf("opcert: %w: %w", ErrIssued, err)
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("opcert: %w", err)
	}
	if err := atomicfile.WriteFile(p, b.Bytes(), 0o600, !s.NoSync); err != nil {
		return nil, fmt.Errorf("opcert: write %s: %w", p, err)
	}
	return s.Pending()
}

// midpoint is a moment inside c's validity: bundles are checked whatever
// the clock says, and Usable judges the dates.
func midpoint(c *x509.Certificate) time.Time {
	return c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) / 2)
}

// Promote makes the pending bundle the current one with one rename (the
// old key and certificate go with it) and syncs the directory.
func (s Store) Promote() error {
	if err := os.Rename(s.path(PendingFile), s.path(CurrentFile)); err != nil {
		return fmt.Errorf("opcert: promote: %w", err)
	}
	if s.NoSync {
		return nil
	}
	if err := atomicfile.SyncDir(s.Dir); err != nil {
		return fmt.Errorf("opcert: promote: %w", err)
	}
	return nil
}

// DiscardPending removes the pending bundle (the hub refused it). A
// missing one is not an error.
func (s Store) DiscardPending() error {
	if err := os.Remove(s.path(PendingFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("opcert: discard pending: %w", err)
	}
	return nil
}

// Clean removes the temporary files a crash in the middle of a write
// leaves beside the bundles: they may hold a private key.
func (s Store) Clean() error {
	var errs []error
	for _, name := range []string{CurrentFile, PendingFile} {
		m, _ := filepath.Glob(s.path("." + name + ".tmp-*"))
		for _, f := range m {
			if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("opcert: clean: %w", err)
	}
	return nil
}
