// Package certs is the device's X.509 identity: it loads the certificate
// chain and private key an operator made with deploy/certs, checks them the
// way DPS and IoT Hub will (docs/protocol.md A.1, B.1, C) so that a bad file fails here
// with a fix instead of as an opaque TLS error, and builds the TLS client
// configuration. The private key never leaves the device. No network.
package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// Errors LoadIdentity wraps, for callers that act on them (errors.Is).
var (
	// ErrKeyPermissions: the key file is open to group or others.
	ErrKeyPermissions = errors.New("private key file is accessible by group or others")
	// ErrKeyMismatch: the key is not the one the leaf certifies.
	ErrKeyMismatch = errors.New("private key does not match the certificate")
	// ErrCertExpired: a certificate's NotAfter is before the clock.
	ErrCertExpired = errors.New("certificate has expired")
	// ErrCertNotYetValid: a certificate's NotBefore is after the clock,
	// usually because the clock is wrong (no RTC, not yet synchronised).
	ErrCertNotYetValid = errors.New("certificate is not yet valid")
	// ErrChainOrder: the leaf is not first, or a certificate is not signed
	// by the one after it.
	ErrChainOrder = errors.New("certificate chain is out of order")
	// ErrMissingIntermediate: the file lacks the certificate that issued
	// the leaf.
	ErrMissingIntermediate = errors.New("certificate chain is missing the leaf's issuer")
	// ErrBadRegistrationID: the leaf CN is not a valid DPS registration id.
	ErrBadRegistrationID = errors.New("invalid registration id")
)

// maxRegistrationIDX509 is the X.509 limit (docs/protocol.md C): the CN is at most 64.
const maxRegistrationIDX509 = 64

// ValidateRegistrationID checks id against docs/protocol.md C "Identity rules" for
// X.509 devices: lowercase letters, digits and - . _ :, at most 64
// characters, the last one a letter, digit or '-'. DPS itself is
// case-insensitive, but the IoT Hub device id taken from the CN is not, so
// lowercase is required (as in the reference flow, step 4). Errors wrap
// ErrBadRegistrationID.
func ValidateRegistrationID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: empty", ErrBadRegistrationID)
	case len(id) > maxRegistrationIDX509:
		return fmt.Errorf("%w %q: %d characters, the X.509 limit is %d", ErrBadRegistrationID, id, len(id), maxRegistrationIDX509)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '.', c == '_', c == ':':
		case 'A' <= c && c <= 'Z':
			return fmt.Errorf("%w %q: uppercase letters; use lowercase", ErrBadRegistrationID, id)
		default:
			return fmt.Errorf("%w %q: character %q at %d; only lowercase letters, digits and - . _ : are allowed", ErrBadRegistrationID, id, rune(c), i)
		}
	}
	if last := id[len(id)-1]; last == '.' || last == '_' || last == ':' {
		return fmt.Errorf("%w %q: the last character must be a letter, a digit or '-'", ErrBadRegistrationID, id)
	}
	return nil
}

// Identity is the device's TLS client identity.
type Identity struct {
	// Cert is what the device presents in TLS: leaf first, then every
	// other certificate of the file in order (docs/protocol.md C), with Leaf set.
	Cert tls.Certificate
	// Leaf is the device certificate.
	Leaf *x509.Certificate
	// Intermediates are the certificates after the leaf, in file order.
	// A root appended after the leaf (see LoadIdentity) is included.
	Intermediates []*x509.Certificate
	// RegistrationID is the leaf subject CN: the DPS registration id and
	// the IoT Hub device id (docs/protocol.md A.1, C).
	RegistrationID string
	// FingerprintSHA256 is the lower-case hex SHA-256 of the leaf DER: the
	// thumbprint IoT Hub stores for DPS-created identities (docs/protocol.md B.1).
	FingerprintSHA256 string
}

// LoadIdentity reads the device's certificate chain (PEM, leaf first) and
// private key (PEM: PKCS#1, PKCS#8 or SEC1; RSA or ECDSA) and checks them
// against the clock now. It refuses, naming the file and the fix:
//   - a key file with any group or other permission bit (ErrKeyPermissions);
//   - a chain whose first certificate is a CA or signed another one in the
//     file, or where a certificate is not signed by the next one
//     (ErrChainOrder);
//   - a leaf that is neither self-signed nor signed by a certificate in
//     the file (ErrMissingIntermediate);
//   - a leaf CN that is not a valid registration id (ErrBadRegistrationID);
//   - a key that does not match the leaf (ErrKeyMismatch);
//   - any certificate of the file outside its validity at now
//     (ErrCertExpired, ErrCertNotYetValid). These come last, so that a
//     caller may wait for the clock knowing nothing else is wrong.
//
// A lone leaf issued by someone else is refused even though it might be
// signed directly by a root that DPS holds: from the file alone that is
// indistinguishable from the common mistake of deploying ID.pem instead of
// ID-chain.pem, which DPS rejects (docs/protocol.md C). An operator whose leaves come
// straight from a root appends the root after the leaf; sending the root
// is harmless. A chain may stop at an intermediate verified in DPS.
func LoadIdentity(certFile, keyFile string, now time.Time) (*Identity, error) {
	key, err := loadKey(keyFile)
	if err != nil {
		return nil, err
	}
	chain, err := LoadChain(certFile)
	if err != nil {
		return nil, err
	}
	return NewIdentity(certFile, keyFile, chain, key, now)
}

// NewIdentity makes the checks of LoadIdentity, after the files: the
// parsed chain and key, with the names of the files they came from for the
// errors (all but the key file's mode). opcert checks an issued chain with
// it before writing it; FuzzLoadIdentity fuzzes it directly (file writes
// would cap it at a few dozen inputs a second).
func NewIdentity(certFile, keyFile string, chain []*x509.Certificate, key crypto.Signer, now time.Time) (*Identity, error) {
	if len(chain) == 0 {
		return nil, fmt.Errorf("%s: no certificate", certFile)
	}
	leaf := chain[0]
	if err := checkOrder(certFile, chain); err != nil {
		return nil, err
	}
	if err := ValidateRegistrationID(leaf.Subject.CommonName); err != nil {
		return nil, fmt.Errorf("%s: leaf CN: %w; the CN becomes the DPS registration id and device id, issue a certificate with a valid one", certFile, err)
	}
	if pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(key.Public()) {
		return nil, fmt.Errorf("%s: %w in %s (CN %q); copy the key made together with this certificate (deploy/certs/devices/%s/)",
			keyFile, ErrKeyMismatch, certFile, leaf.Subject.CommonName, leaf.Subject.CommonName)
	}
	for i, c := range chain {
		if err := checkValidity(certFile, i, c, now); err != nil {
			return nil, err
		}
	}
	der := make([][]byte, len(chain))
	for i, c := range chain {
		der[i] = c.Raw
	}
	sum := sha256.Sum256(leaf.Raw)
	return &Identity{
		Cert:              tls.Certificate{Certificate: der, PrivateKey: key, Leaf: leaf},
		Leaf:              leaf,
		Intermediates:     chain[1:],
		RegistrationID:    leaf.Subject.CommonName,
		FingerprintSHA256: hex.EncodeToString(sum[:]),
	}, nil
}

// LoadBundle is LoadIdentity for one file holding the key and the chain
// (provisioning/opcert's bundles), read through one open: a file replaced
// by a rename while it is read still gives a key and a chain of the same
// version. A zero now judges the dates in the middle of the leaf's
// validity, for a caller that judges them itself.
func LoadBundle(path string, now time.Time) (*Identity, error) {
	data, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	key, err := parseKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	chain, err := ParsePEMCerts(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if now.IsZero() {
		leaf := chain[0]
		now = leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
	}
	return NewIdentity(path, path, chain, key, now)
}

// loadKey reads and parses the private key after checking its mode. The
// mode is checked on the open file, not by trying to open it: root (which
// the tracker may run as) can open anything.
func loadKey(keyFile string) (crypto.Signer, error) {
	data, err := readKeyFile(keyFile)
	if err != nil {
		return nil, err
	}
	key, err := parseKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	return key, nil
}

// readKeyFile reads a file holding a private key after checking its mode
// on the open file.
func readKeyFile(keyFile string) ([]byte, error) {
	f, err := os.Open(keyFile)
	if err != nil {
		return nil, fmt.Errorf("open device key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("device key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("device key %s is not a regular file", keyFile)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s: %w (mode %04o); fix: chmod 600 %s", keyFile, ErrKeyPermissions, perm, keyFile)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("read device key %s: %w", keyFile, err)
	}
	return data, nil
}

// parseKey takes the first private key block of data. "EC PARAMETERS"
// (which openssl ecparam -genkey writes first) and certificate blocks are
// skipped.
func parseKey(data []byte) (crypto.Signer, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no private key PEM block (want PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)")
		}
		if b.Type == "ENCRYPTED PRIVATE KEY" || b.Headers["Proc-Type"] == "4,ENCRYPTED" {
			return nil, errors.New("the private key is encrypted; an unattended device cannot enter a passphrase, store it unencrypted with mode 0600")
		}
		var (
			key any
			err error
		)
		switch b.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(b.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", b.Type, err)
		}
		switch k := key.(type) {
		case *rsa.PrivateKey:
			return k, nil
		case *ecdsa.PrivateKey:
			return k, nil
		default:
			return nil, fmt.Errorf("unsupported %T key; DPS and IoT Hub take RSA or ECDSA device keys", key)
		}
	}
}

// LoadChain parses every CERTIFICATE block of certFile, in order, without
// judging them (LoadIdentity does that): the device's leaf comes first.
func LoadChain(certFile string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("read device certificate: %w", err)
	}
	chain, err := ParsePEMCerts(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certFile, err)
	}
	return chain, nil
}

// signed reports whether parent's key made child's signature. The CA
// flags are left to the server's path validation; this only tells the
// order of the file.
func signed(child, parent *x509.Certificate) bool {
	return bytes.Equal(child.RawIssuer, parent.RawSubject) &&
		parent.CheckSignature(child.SignatureAlgorithm, child.RawTBSCertificate, child.Signature) == nil
}

func selfSigned(c *x509.Certificate) bool { return signed(c, c) }

func describe(i int, c *x509.Certificate) string {
	return fmt.Sprintf("certificate %d (CN %q)", i+1, c.Subject.CommonName)
}

// checkOrder enforces docs/protocol.md C "Chain the device must present": leaf, then
// each issuer in turn.
func checkOrder(certFile string, chain []*x509.Certificate) error {
	const fix = "put the device certificate first, then its issuer, then that issuer's issuer"
	leaf := chain[0]
	for j := 1; j < len(chain); j++ {
		if signed(chain[j], leaf) || (leaf.IsCA && !chain[j].IsCA) {
			return fmt.Errorf("%s: %w: %s is an issuer (CA) certificate but comes first; %s", certFile, ErrChainOrder, describe(0, leaf), fix)
		}
	}
	if selfSigned(leaf) {
		if len(chain) > 1 {
			return fmt.Errorf("%s: %w: the leaf (CN %q) is self-signed but %d more certificates follow it; a self-signed device certificate stands alone", certFile, ErrChainOrder, leaf.Subject.CommonName, len(chain)-1)
		}
		return nil
	}
	for i := 0; i+1 < len(chain); i++ {
		if signed(chain[i], chain[i+1]) {
			continue
		}
		for j := range chain {
			if j != i && j != i+1 && signed(chain[i], chain[j]) {
				return fmt.Errorf("%s: %w: %s is signed by %s, not by the next one; %s", certFile, ErrChainOrder, describe(i, chain[i]), describe(j, chain[j]), fix)
			}
		}
		if i > 0 {
			return fmt.Errorf("%s: %w: %s is not signed by %s; %s", certFile, ErrChainOrder, describe(i, chain[i]), describe(i+1, chain[i+1]), fix)
		}
		return missingIssuer(certFile, leaf) // the leaf's issuer is nowhere in the file
	}
	if len(chain) == 1 {
		return missingIssuer(certFile, leaf)
	}
	return nil
}

func missingIssuer(certFile string, leaf *x509.Certificate) error {
	return fmt.Errorf("%s: %w: the leaf (CN %q) was issued by %q, which is not in the file; "+
		"use the chain file (leaf followed by the intermediate, as deploy/certs/device.sh writes ID-chain.pem), "+
		"or, if %q is a root CA, append it after the leaf",
		certFile, ErrMissingIntermediate, leaf.Subject.CommonName, leaf.Issuer.CommonName, leaf.Issuer.CommonName)
}

func checkValidity(certFile string, i int, c *x509.Certificate, now time.Time) error {
	what := "the device certificate (CN " + fmt.Sprintf("%q", c.Subject.CommonName) + ")"
	renew := "issue a new one (deploy/certs/device.sh --force " + c.Subject.CommonName + ")"
	if i > 0 {
		what = describe(i, c) + ", an issuer of the device certificate,"
		renew = "renew that CA and re-issue the device certificates signed by it"
	}
	clock := now.UTC().Format(time.RFC3339)
	switch {
	case now.Before(c.NotBefore):
		return fmt.Errorf("%s: %w: %s is valid from %s but the clock says %s; "+
			"a board without a battery-backed real-time clock boots with its clock in the past: "+
			"wait for time synchronisation (NTP, systemd time-sync.target) before connecting",
			certFile, ErrCertNotYetValid, what, c.NotBefore.UTC().Format(time.RFC3339), clock)
	case now.After(c.NotAfter):
		return fmt.Errorf("%s: %w: %s expired at %s and the clock says %s; %s",
			certFile, ErrCertExpired, what, c.NotAfter.UTC().Format(time.RFC3339), clock, renew)
	}
	return nil
}
