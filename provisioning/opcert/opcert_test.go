package opcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reefer/tracker/provisioning/certs/certstest"
)

// signCSR plays DPS: the issuing CA signs the request's key for cn.
func signCSR(t *testing.T, ca *certstest.Cert, csrDER []byte, cn string, validity time.Duration) []byte {
	t.Helper()
	now := time.Now().Truncate(time.Second)
	return ca.SignCSR(t, csrDER, cn, certstest.Options{NotBefore: now, NotAfter: now.Add(validity)}).Raw
}

func pki(t *testing.T) (root, inter *certstest.Cert) {
	root = certstest.Root(t, "Credential Root", certstest.Options{NotAfter: time.Now().Add(1000 * time.Hour)})
	return root, root.Intermediate(t, "Issuing CA", certstest.Options{NotAfter: time.Now().Add(900 * time.Hour)})
}

func TestNewRequest(t *testing.T) {
	t.Parallel()
	req, err := NewRequest("sensor-thl-001", nil)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(req.CSR)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Errorf("CSR signature: %v", err)
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("CSR key %T; want ECDSA P-256", csr.PublicKey)
	}
	if csr.Subject.CommonName != "sensor-thl-001" || req.CommonName != "sensor-thl-001" {
		t.Errorf("CSR subject %v", csr.Subject)
	}
	other, _ := NewRequest("sensor-thl-001", nil)
	if other.key.(*ecdsa.PrivateKey).Equal(req.key) {
		t.Error("two requests share a key")
	}
}

// Issued, pending, promoted: the bundle holds the key with its chain,
// 0600, and each step leaves a whole bundle in place.
func TestSavePendingPromoteDiscard(t *testing.T) {
	t.Parallel()
	root, inter := pki(t)
	s := Store{Dir: t.TempDir()}
	if _, err := s.Current(); !errors.Is(err, ErrNone) {
		t.Fatalf("Current of an empty store: %v; want ErrNone", err)
	}
	issue := func() (*Request, [][]byte) {
		req, err := NewRequest("sensor-thl-001", nil)
		if err != nil {
			t.Fatal(err)
		}
		return req, [][]byte{signCSR(t, inter, req.CSR, "sensor-thl-001", time.Hour), inter.Cert.Raw, root.Cert.Raw}
	}
	req, chain := issue()
	id, err := s.SavePending(req, chain)
	if err != nil {
		t.Fatal(err)
	}
	if id.RegistrationID != "sensor-thl-001" || len(id.Intermediates) != 2 || !Usable(id, time.Now()) {
		t.Errorf("pending identity %+v", id)
	}
	fi, err := os.Stat(filepath.Join(s.Dir, PendingFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("pending bundle: %v, mode %v; want 0600", err, fi.Mode())
	}
	b, _ := os.ReadFile(filepath.Join(s.Dir, PendingFile))
	if strings.Count(string(b), "BEGIN PRIVATE KEY") != 1 || strings.Count(string(b), "BEGIN CERTIFICATE") != 3 {
		t.Errorf("bundle:\n%s\nwant one key and three certificates", b)
	}
	if err := s.Promote(); err != nil {
		t.Fatal(err)
	}
	cur, err := s.Current()
	if err != nil || cur.FingerprintSHA256 != id.FingerprintSHA256 {
		t.Fatalf("Current after Promote: %v", err)
	}
	if _, err := s.Pending(); !errors.Is(err, ErrNone) {
		t.Errorf("Pending after Promote: %v; want ErrNone", err)
	}

	// A renewal: the new bundle waits beside the current one until
	// promoted, and a discarded one leaves the current one alone.
	req2, chain2 := issue()
	id2, err := s.SavePending(req2, chain2)
	if err != nil {
		t.Fatal(err)
	}
	if cur, _ := s.Current(); cur.FingerprintSHA256 != id.FingerprintSHA256 {
		t.Error("SavePending replaced the current bundle")
	}
	if err := s.DiscardPending(); err != nil {
		t.Fatal(err)
	}
	if err := s.DiscardPending(); err != nil {
		t.Errorf("second DiscardPending: %v", err)
	}
	if cur, _ := s.Current(); cur.FingerprintSHA256 != id.FingerprintSHA256 {
		t.Error("DiscardPending touched the current bundle")
	}
	req3, chain3 := issue()
	if _, err := s.SavePending(req3, chain3); err != nil {
		t.Fatal(err)
	}
	if err := s.Promote(); err != nil {
		t.Fatal(err)
	}
	if cur, _ := s.Current(); cur.FingerprintSHA256 == id.FingerprintSHA256 || cur.FingerprintSHA256 == id2.FingerprintSHA256 {
		t.Error("Promote did not switch to the newest bundle")
	}
}

// A chain that does not answer the request is refused and nothing is
// written: another CN, another key, no issuer, garbage.
func TestSavePendingRefusesWrongChain(t *testing.T) {
	t.Parallel()
	root, inter := pki(t)
	req, err := NewRequest("sensor-thl-001", nil)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewRequest("sensor-thl-001", nil)
	for name, chain := range map[string][][]byte{
		"other CN":          {signCSR(t, inter, req.CSR, "sensor-thl-002", time.Hour), inter.Cert.Raw},
		"other key":         {signCSR(t, inter, other.CSR, "sensor-thl-001", time.Hour), inter.Cert.Raw},
		"issuer missing":    {signCSR(t, inter, req.CSR, "sensor-thl-001", time.Hour)},
		"out of order":      {signCSR(t, inter, req.CSR, "sensor-thl-001", time.Hour), root.Cert.Raw, inter.Cert.Raw},
		"not a certificate": {[]byte("garbage")},
		"empty":             nil,
	} {
		s := Store{Dir: t.TempDir()}
		if _, err := s.SavePending(req, chain); !errors.Is(err, ErrIssued) {
			t.Errorf("%s: SavePending = %v; want ErrIssued", name, err)
		}
		if _, err := s.Pending(); !errors.Is(err, ErrNone) {
			t.Errorf("%s: a pending bundle was written (%v)", name, err)
		}
	}
}

func TestUsable(t *testing.T) {
	t.Parallel()
	_, inter := pki(t)
	req, _ := NewRequest("sensor-thl-001", nil)
	s := Store{Dir: t.TempDir(), NoSync: true}
	id, err := s.SavePending(req, [][]byte{signCSR(t, inter, req.CSR, "sensor-thl-001", time.Hour), inter.Cert.Raw})
	if err != nil {
		t.Fatal(err)
	}
	for at, want := range map[time.Duration]bool{-time.Minute: false, time.Second: true, 59 * time.Minute: true, 61 * time.Minute: false} {
		if got := Usable(id, id.Leaf.NotBefore.Add(at)); got != want {
			t.Errorf("Usable at NotBefore%+v = %v", at, got)
		}
	}
	if Usable(nil, time.Now()) {
		t.Error("Usable(nil)")
	}
}

// What a kill -9 in the middle of atomicfile's write leaves behind may hold
// a key: Clean removes it and nothing else.
func TestClean(t *testing.T) {
	t.Parallel()
	s := Store{Dir: t.TempDir()}
	for _, f := range []string{".operational-next.pem.tmp-123", ".operational.pem.tmp-9", CurrentFile, "queue.db"} {
		if err := os.WriteFile(filepath.Join(s.Dir, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Clean(); err != nil {
		t.Fatal(err)
	}
	left, _ := filepath.Glob(filepath.Join(s.Dir, "*"))
	hidden, _ := filepath.Glob(filepath.Join(s.Dir, ".*"))
	if len(left) != 2 || len(hidden) != 0 {
		t.Errorf("left %v %v; want operational.pem and queue.db", left, hidden)
	}
}

// Renewal at the fraction of the lifetime; no warning before it is due,
// the common thresholds after.
func TestRenewalDueAndValidity(t *testing.T) {
	t.Parallel()
	day := 24 * time.Hour
	nb := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	c := &x509.Certificate{Subject: pkix.Name{CommonName: "sensor-thl-001"}, NotBefore: nb, NotAfter: nb.Add(30 * day)}
	if got := RenewalDue(c, DefaultRenewAt); !got.Equal(nb.Add(20 * day)) {
		t.Errorf("RenewalDue = %v; want 20 days in", got)
	}
	for at, want := range map[time.Duration]string{
		19 * day:             "ok",   // 11 days left, renewal not due
		20*day + time.Second: "warn", // due, under 30 days left
		25 * day:             "fail", // under 7 days left
		30*day + time.Second: "expired",
	} {
		if v := Validity(c, DefaultRenewAt, nb.Add(at)); string(v.State) != want {
			t.Errorf("at %v: %+v; want %s", at, v, want)
		}
	}
}
