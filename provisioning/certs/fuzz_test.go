package certs

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"testing"
	"time"
)

// The device's certificate chain, key and server CA file are files an
// operator copies onto the board; all three are parsed here. Seeds in
// testdata/fuzz/Fuzz*/ were made with deploy/certs (ECDSA and RSA chains,
// as ca.sh and device.sh write them) and damaged variants.

// FuzzParsePEMCerts (the chain file and the caFile): parsing never panics;
// what it accepts is at least one certificate, and writing the
// certificates back as PEM and parsing again gives the same DER; checking
// the order of an accepted chain never panics and fails only with
// ErrChainOrder or ErrMissingIntermediate.
func FuzzParsePEMCerts(f *testing.F) {
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := ParsePEMCerts(data)
		if err != nil {
			return
		}
		if len(certs) == 0 {
			t.Fatal("accepted without a certificate")
		}
		var out []byte
		for _, c := range certs {
			out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
		again, err := ParsePEMCerts(out)
		if err != nil || len(again) != len(certs) {
			t.Fatalf("re-encoded chain: %d certificates, %v", len(again), err)
		}
		for i := range certs {
			if !bytes.Equal(again[i].Raw, certs[i].Raw) {
				t.Fatalf("certificate %d changed in the round trip", i)
			}
		}
		if err := checkOrder("chain.pem", certs); err != nil &&
			!errors.Is(err, ErrChainOrder) && !errors.Is(err, ErrMissingIntermediate) {
			t.Fatalf("checkOrder error %v wraps neither ErrChainOrder nor ErrMissingIntermediate", err)
		}
	})
}

// FuzzParseKey (the key file): parsing never panics; an accepted key is RSA
// or ECDSA, signs a digest that its public key verifies (a key that parses
// but cannot sign would only fail later, in the TLS handshake), and comes
// back the same through PKCS#8.
func FuzzParseKey(f *testing.F) {
	f.Add([]byte("-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		key, err := parseKey(data)
		if err != nil {
			return
		}
		digest := sha256.Sum256([]byte("fuzz"))
		sig, err := key.Sign(rand.Reader, digest[:], crypto.SHA256)
		if err != nil {
			t.Fatalf("accepted %T cannot sign: %v", key, err)
		}
		if !verifies(key.Public(), digest[:], sig) {
			t.Fatalf("accepted %T signs what its public key does not verify", key)
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatalf("accepted %T does not marshal: %v", key, err)
		}
		again, err := parseKey(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
		if err != nil {
			t.Fatalf("PKCS#8 of an accepted key: %v", err)
		}
		if pub, ok := again.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(key.Public()) {
			t.Fatal("key changed in the PKCS#8 round trip")
		}
	})
}

// verifies checks sig with a throwaway self-signed certificate's machinery:
// x509 knows how to verify both key types.
func verifies(pub crypto.PublicKey, digest, sig []byte) bool {
	c := &x509.Certificate{PublicKey: pub}
	switch pub.(type) {
	case interface{ Size() int }: // *rsa.PublicKey
		c.PublicKeyAlgorithm = x509.RSA
		return c.CheckSignature(x509.SHA256WithRSA, []byte("fuzz"), sig) == nil
	default:
		c.PublicKeyAlgorithm = x509.ECDSA
		return c.CheckSignature(x509.ECDSAWithSHA256, []byte("fuzz"), sig) == nil
	}
}

// FuzzLoadIdentity (chain and key files together, as LoadIdentity checks
// them once read, with the clock inside the leaf's validity): it never
// panics; an identity it accepts is what DPS and the hub will accept of
// it: the leaf CN is a valid registration id, the key matches the leaf,
// each certificate is signed by the next, the TLS certificate is exactly
// the file's chain, and the fingerprint is the leaf's SHA-256. The files
// themselves (mode, reading) are LoadIdentity's unit tests' business
// (certs_test.go): writing two per input held this target to a few dozen
// executions a second.
func FuzzLoadIdentity(f *testing.F) {
	f.Add([]byte(""), []byte(""))
	f.Fuzz(func(t *testing.T, chainPEM, keyPEM []byte) {
		certs, err := ParsePEMCerts(chainPEM)
		if err != nil {
			return
		}
		key, err := parseKey(keyPEM)
		if err != nil {
			return
		}
		id, err := NewIdentity("chain.pem", "device.key", certs, key, certs[0].NotBefore.Add(time.Minute))
		if err != nil {
			return
		}
		if ValidateRegistrationID(id.RegistrationID) != nil || id.RegistrationID != id.Leaf.Subject.CommonName {
			t.Fatalf("accepted registration id %q", id.RegistrationID)
		}
		if pub, ok := id.Leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok ||
			!pub.Equal(id.Cert.PrivateKey.(crypto.Signer).Public()) {
			t.Fatal("accepted a key that does not match the leaf")
		}
		chain := append([]*x509.Certificate{id.Leaf}, id.Intermediates...)
		if len(id.Cert.Certificate) != len(chain) {
			t.Fatalf("TLS chain has %d certificates, the file %d", len(id.Cert.Certificate), len(chain))
		}
		for i, c := range chain {
			if !bytes.Equal(id.Cert.Certificate[i], c.Raw) {
				t.Fatalf("TLS certificate %d differs from the file's", i)
			}
			if i+1 < len(chain) && !signed(c, chain[i+1]) {
				t.Fatalf("certificate %d is not signed by the next", i)
			}
		}
		if sum := sha256.Sum256(id.Leaf.Raw); id.FingerprintSHA256 != hex.EncodeToString(sum[:]) {
			t.Fatal("fingerprint is not the leaf's SHA-256")
		}
		if cfg := TLSConfig(id, x509.NewCertPool(), "hub.example"); cfg.MinVersion < tls.VersionTLS12 || len(cfg.Certificates) != 1 {
			t.Fatalf("TLS config %+v", cfg)
		}
	})
}
