package certs

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reefer/tracker/provisioning/certs/certstest"
)

func TestValidateRegistrationID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		id   string
		want string // "" means valid; else a substring of the error
	}{
		{"sensor-thl-001", ""},
		{"a", ""},
		{"0", ""},
		{"dev:1.a_b-", ""},
		{"x-", ""},
		{strings.Repeat("a", 64), ""},
		{"", "empty"},
		{strings.Repeat("a", 65), "65 characters"},
		{"Sensor-1", "uppercase"},
		{"sensor.", "last character"},
		{"sensor_", "last character"},
		{"sensor:", "last character"},
		{"a/b", `'/'`},
		{"a b", `' '`},
		{"dev+1", `'+'`},
		{"café", "character"},
		{"a\x00b", "character"},
	}
	for _, tt := range tests {
		err := ValidateRegistrationID(tt.id)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("ValidateRegistrationID(%q) = %v; want nil", tt.id, err)
		case tt.want != "" && (!errors.Is(err, ErrBadRegistrationID) || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("ValidateRegistrationID(%q) = %v; want ErrBadRegistrationID mentioning %q", tt.id, err, tt.want)
		}
	}
}

// pki is a root → intermediate → leaf hierarchy like deploy/certs makes.
type pki struct {
	root, inter, leaf *certstest.Cert
}

func newPKI(t *testing.T, cn string, leafKey certstest.KeyType) pki {
	t.Helper()
	root := certstest.Root(t, "Test Root CA", certstest.Options{})
	inter := root.Intermediate(t, "Test Intermediate CA", certstest.Options{})
	return pki{root, inter, inter.Leaf(t, cn, certstest.Options{Key: leafKey})}
}

// files writes a certificate file and a 0600 key file into a temp dir.
func files(t *testing.T, key crypto.Signer, enc certstest.Encoding, certs ...*x509.Certificate) (certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "device-chain.pem"), filepath.Join(dir, "device.key")
	certstest.WriteCerts(t, certFile, certs...)
	certstest.WriteKey(t, keyFile, key, enc)
	return certFile, keyFile
}

func TestLoadIdentityKeyEncodings(t *testing.T) {
	t.Parallel()
	ec := newPKI(t, "sensor-thl-001", certstest.ECDSA)
	rsaPKI := newPKI(t, "sensor-thl-002", certstest.RSA)
	tests := []struct {
		name string
		p    pki
		enc  certstest.Encoding
		pre  string // PEM text before the key block
	}{
		{"ecdsa-pkcs8", ec, certstest.PKCS8, ""},
		{"ecdsa-sec1", ec, certstest.SEC1, ""},
		// openssl ecparam -genkey writes the curve parameters first.
		{"ecdsa-sec1-with-params", ec, certstest.SEC1, "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"},
		{"rsa-pkcs8", rsaPKI, certstest.PKCS8, ""},
		{"rsa-pkcs1", rsaPKI, certstest.PKCS1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			certFile, keyFile := files(t, tt.p.leaf.Key, tt.enc, tt.p.leaf.Cert, tt.p.inter.Cert)
			if tt.pre != "" {
				if err := os.WriteFile(keyFile, append([]byte(tt.pre), certstest.KeyPEM(t, tt.p.leaf.Key, tt.enc)...), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			id, err := LoadIdentity(certFile, keyFile, time.Now())
			if err != nil {
				t.Fatalf("LoadIdentity: %v", err)
			}
			leaf := tt.p.leaf.Cert
			if want := leaf.Subject.CommonName; id.RegistrationID != want {
				t.Errorf("RegistrationID = %q; want %q", id.RegistrationID, want)
			}
			if !id.Leaf.Equal(leaf) || id.Cert.Leaf != id.Leaf {
				t.Error("Leaf / Cert.Leaf are not the file's first certificate")
			}
			if len(id.Intermediates) != 1 || !id.Intermediates[0].Equal(tt.p.inter.Cert) {
				t.Errorf("Intermediates = %d certificates; want the intermediate", len(id.Intermediates))
			}
			if len(id.Cert.Certificate) != 2 || string(id.Cert.Certificate[0]) != string(leaf.Raw) || string(id.Cert.Certificate[1]) != string(tt.p.inter.Cert.Raw) {
				t.Error("Cert.Certificate is not [leaf, intermediate]")
			}
			// The fingerprint of the DER inside the PEM file, computed
			// from the file rather than from the parsed certificate.
			data, _ := os.ReadFile(certFile)
			b, _ := pem.Decode(data)
			sum := sha256.Sum256(b.Bytes)
			if want := hex.EncodeToString(sum[:]); id.FingerprintSHA256 != want {
				t.Errorf("FingerprintSHA256 = %q; want %q", id.FingerprintSHA256, want)
			}
			// The loaded key signs for the leaf's public key.
			signer := id.Cert.PrivateKey.(crypto.Signer)
			digest := sha256.Sum256([]byte("proof"))
			sig, err := signer.Sign(rand.Reader, digest[:], crypto.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			alg := x509.ECDSAWithSHA256
			if tt.p.leaf.Cert.PublicKeyAlgorithm == x509.RSA {
				alg = x509.SHA256WithRSA
			}
			if err := leaf.CheckSignature(alg, []byte("proof"), sig); err != nil {
				t.Errorf("signature by the loaded key does not verify with the leaf: %v", err)
			}
		})
	}
}

func TestLoadIdentityAccepts(t *testing.T) {
	t.Parallel()
	p := newPKI(t, "sensor-ok", certstest.ECDSA)
	inter2 := p.inter.Intermediate(t, "Test Intermediate 2", certstest.Options{})
	deep := inter2.Leaf(t, "sensor-deep", certstest.Options{})
	direct := p.root.Leaf(t, "sensor-direct", certstest.Options{})
	self := certstest.SelfSigned(t, "sensor-self", certstest.Options{})
	tests := []struct {
		name  string
		key   crypto.Signer
		certs []*x509.Certificate
	}{
		{"leaf+intermediate", p.leaf.Key, []*x509.Certificate{p.leaf.Cert, p.inter.Cert}},
		{"leaf+intermediate+root", p.leaf.Key, []*x509.Certificate{p.leaf.Cert, p.inter.Cert, p.root.Cert}},
		{"two intermediates", deep.Key, []*x509.Certificate{deep.Cert, inter2.Cert, p.inter.Cert}},
		{"chain ends at an intermediate", deep.Key, []*x509.Certificate{deep.Cert, inter2.Cert}},
		{"leaf signed by root, root appended", direct.Key, []*x509.Certificate{direct.Cert, p.root.Cert}},
		{"self-signed", self.Key, []*x509.Certificate{self.Cert}},
	}
	for _, tt := range tests {
		certFile, keyFile := files(t, tt.key, certstest.PKCS8, tt.certs...)
		id, err := LoadIdentity(certFile, keyFile, time.Now())
		if err != nil {
			t.Errorf("%s: LoadIdentity: %v", tt.name, err)
			continue
		}
		if len(id.Cert.Certificate) != len(tt.certs) || len(id.Intermediates) != len(tt.certs)-1 {
			t.Errorf("%s: %d certificates, %d intermediates; want %d, %d", tt.name, len(id.Cert.Certificate), len(id.Intermediates), len(tt.certs), len(tt.certs)-1)
		}
	}
}

func TestLoadIdentityKeyPermissions(t *testing.T) {
	t.Parallel()
	p := newPKI(t, "sensor-perm", certstest.ECDSA)
	for _, mode := range []os.FileMode{0o600, 0o400, 0o640, 0o604, 0o644, 0o660, 0o602, 0o620, 0o666, 0o700, 0o610} {
		certFile, keyFile := files(t, p.leaf.Key, certstest.PKCS8, p.leaf.Cert, p.inter.Cert)
		// Mode bits, not open failures: the tests (and the tracker) may
		// run as root, which can open a 0400 or 0000 file anyway.
		if err := os.Chmod(keyFile, mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadIdentity(certFile, keyFile, time.Now())
		wantRefused := mode&0o077 != 0
		switch {
		case !wantRefused && err != nil:
			t.Errorf("LoadIdentity with key mode %#o = %v; want nil", mode, err)
		case wantRefused && !errors.Is(err, ErrKeyPermissions):
			t.Errorf("LoadIdentity with key mode %#o = %v; want ErrKeyPermissions", mode, err)
		case wantRefused && !strings.Contains(err.Error(), "chmod 600 "+keyFile):
			t.Errorf("LoadIdentity with key mode %#o = %v; want the fix 'chmod 600 %s'", mode, err, keyFile)
		}
	}
}

func TestLoadIdentityRefusals(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	at := func(from, to time.Time) certstest.Options { return certstest.Options{NotBefore: from, NotAfter: to} }
	year := 365 * 24 * time.Hour
	root := certstest.Root(t, "Test Root CA", at(now.Add(-year), now.Add(year)))
	inter := root.Intermediate(t, "Test Intermediate CA", at(now.Add(-year), now.Add(year)))
	leaf := inter.Leaf(t, "sensor-thl-001", at(now.Add(-time.Hour), now.Add(30*24*time.Hour)))
	other := inter.Leaf(t, "sensor-thl-002", at(now.Add(-time.Hour), now.Add(time.Hour)))
	expired := inter.Leaf(t, "sensor-old", at(now.Add(-48*time.Hour), now.Add(-time.Hour)))
	future := inter.Leaf(t, "sensor-new", at(now.Add(time.Hour), now.Add(48*time.Hour)))
	oldInter := root.Intermediate(t, "Old Intermediate CA", at(now.Add(-year), now.Add(-time.Minute)))
	underOld := oldInter.Leaf(t, "sensor-under-old", at(now.Add(-time.Hour), now.Add(time.Hour)))
	upper := inter.Leaf(t, "Sensor-THL-001", at(now.Add(-time.Hour), now.Add(time.Hour)))
	unrelated := certstest.Root(t, "Unrelated CA", at(now.Add(-year), now.Add(year)))
	self := certstest.SelfSigned(t, "sensor-self", at(now.Add(-time.Hour), now.Add(time.Hour)))

	type certs = []*x509.Certificate
	tests := []struct {
		name    string
		key     crypto.Signer
		certs   certs
		now     time.Time
		wantErr error
		want    []string // substrings of the message
	}{
		{"key of another device", other.Key, certs{leaf.Cert, inter.Cert}, now, ErrKeyMismatch, []string{"device.key", "device-chain.pem", "sensor-thl-001"}},
		{"expired leaf", expired.Key, certs{expired.Cert, inter.Cert}, now, ErrCertExpired, []string{"sensor-old", "2026-06-01T12:00:00Z", "2026-06-01T11:00:00Z", "device.sh --force sensor-old"}},
		{"leaf not yet valid", future.Key, certs{future.Cert, inter.Cert}, now, ErrCertNotYetValid, []string{"2026-06-01T13:00:00Z", "clock says 2026-06-01T12:00:00Z", "real-time clock"}},
		{"booted in 1970", leaf.Key, certs{leaf.Cert, inter.Cert}, time.Unix(0, 0), ErrCertNotYetValid, []string{"1970-01-01T00:00:00Z", "time synchronisation"}},
		{"expired intermediate", underOld.Key, certs{underOld.Cert, oldInter.Cert}, now, ErrCertExpired, []string{"certificate 2", "Old Intermediate CA", "renew that CA"}},
		{"intermediate first", leaf.Key, certs{inter.Cert, leaf.Cert}, now, ErrChainOrder, []string{"certificate 1", "Test Intermediate CA", "first"}},
		{"root first", leaf.Key, certs{root.Cert, inter.Cert, leaf.Cert}, now, ErrChainOrder, []string{"Test Root CA"}},
		{"root before intermediate", leaf.Key, certs{leaf.Cert, root.Cert, inter.Cert}, now, ErrChainOrder, []string{"signed by certificate 3", "not by the next one"}},
		{"unrelated after intermediate", leaf.Key, certs{leaf.Cert, inter.Cert, unrelated.Cert}, now, ErrChainOrder, []string{"certificate 2", "not signed by certificate 3", "Unrelated CA"}},
		{"self-signed leaf with extras", self.Key, certs{self.Cert, inter.Cert}, now, ErrChainOrder, []string{"self-signed"}},
		{"leaf alone", leaf.Key, certs{leaf.Cert}, now, ErrMissingIntermediate, []string{`issued by "Test Intermediate CA"`, "ID-chain.pem"}},
		{"leaf and root only", leaf.Key, certs{leaf.Cert, root.Cert}, now, ErrMissingIntermediate, []string{"Test Intermediate CA"}},
		{"leaf and unrelated CA", leaf.Key, certs{leaf.Cert, unrelated.Cert}, now, ErrMissingIntermediate, []string{"Test Intermediate CA"}},
		{"uppercase CN", upper.Key, certs{upper.Cert, inter.Cert}, now, ErrBadRegistrationID, []string{"Sensor-THL-001", "lowercase"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			certFile, keyFile := files(t, tt.key, certstest.PKCS8, tt.certs...)
			id, err := LoadIdentity(certFile, keyFile, tt.now)
			if !errors.Is(err, tt.wantErr) || id != nil {
				t.Fatalf("LoadIdentity = %v, %v; want nil, %v", id, err, tt.wantErr)
			}
			// Every refusal names the file at fault.
			if !strings.Contains(err.Error(), certFile) && !strings.Contains(err.Error(), keyFile) {
				t.Errorf("error %q names neither %s nor %s", err, certFile, keyFile)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q; want it to mention %q", err, w)
				}
			}
		})
	}
}

func TestLoadIdentityBadFiles(t *testing.T) {
	t.Parallel()
	p := newPKI(t, "sensor-bad", certstest.ECDSA)
	certFile, keyFile := files(t, p.leaf.Key, certstest.PKCS8, p.leaf.Cert, p.inter.Cert)
	dir := t.TempDir()
	write := func(name, text string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	edDER, _ := x509.MarshalPKCS8PrivateKey(edKey)
	der, _ := x509.MarshalPKCS8PrivateKey(p.leaf.Key)
	tests := []struct {
		name              string
		certFile, keyFile string
		want              string
	}{
		{"no key file", certFile, filepath.Join(dir, "missing.key"), "no such file"},
		{"no cert file", filepath.Join(dir, "missing.pem"), keyFile, "no such file"},
		{"key is a directory", certFile, dir, "not a regular file"},
		{"empty key", certFile, write("empty.key", ""), "no private key PEM block"},
		{"cert as key", certFile, write("cert.key", string(certstest.PEM(p.leaf.Cert))), "no private key PEM block"},
		{"encrypted key", certFile, write("enc.key", "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"), "encrypted"},
		{"legacy encrypted key", certFile, write("legacy.key", "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00000000000000000000000000000000\n\nAAAA\n-----END RSA PRIVATE KEY-----\n"), "encrypted"},
		{"ed25519 key", certFile, write("ed.key", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: edDER}))), "RSA or ECDSA"},
		{"ecdsa key labelled rsa", certFile, write("label.key", string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: der}))), "parse RSA PRIVATE KEY"},
		{"key as cert", keyFile, keyFile, "no CERTIFICATE PEM block"},
		{"garbage cert", write("garbage.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), keyFile, "certificate 1"},
	}
	for _, tt := range tests {
		_, err := LoadIdentity(tt.certFile, tt.keyFile, time.Now())
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: LoadIdentity = %v; want an error mentioning %q", tt.name, err, tt.want)
		}
	}
	if _, err := LoadIdentity(certFile, filepath.Join(dir, "missing.key"), time.Now()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing key: %v; want fs.ErrNotExist", err)
	}
}

// One file with the key and the chain (opcert's bundle): the same checks
// as LoadIdentity, and with a zero time the dates do not matter.
func TestLoadBundle(t *testing.T) {
	t.Parallel()
	now := time.Now()
	root := certstest.Root(t, "Bundle Root", certstest.Options{NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(1000 * time.Hour)})
	leaf := root.Leaf(t, "sensor-thl-001", certstest.Options{NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)})
	other := certstest.NewKey(t, certstest.ECDSA)
	p := filepath.Join(t.TempDir(), "bundle.pem")
	write := func(key crypto.Signer, mode os.FileMode) {
		certstest.WriteKey(t, p, key, certstest.PKCS8)
		k, _ := os.ReadFile(p)
		if err := os.WriteFile(p, append(k, certstest.PEM(leaf.Cert, root.Cert)...), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
	}
	write(leaf.Key, 0o600)
	if id, err := LoadBundle(p, time.Time{}); err != nil || id.RegistrationID != "sensor-thl-001" || len(id.Intermediates) != 1 {
		t.Errorf("LoadBundle(zero time) = %+v, %v", id, err)
	}
	if _, err := LoadBundle(p, now); !errors.Is(err, ErrCertExpired) {
		t.Errorf("LoadBundle(now) = %v; want ErrCertExpired", err)
	}
	write(other, 0o600)
	if _, err := LoadBundle(p, time.Time{}); !errors.Is(err, ErrKeyMismatch) {
		t.Errorf("another key: %v; want ErrKeyMismatch", err)
	}
	write(leaf.Key, 0o644)
	if _, err := LoadBundle(p, time.Time{}); !errors.Is(err, ErrKeyPermissions) {
		t.Errorf("mode 0644: %v; want ErrKeyPermissions", err)
	}
}
