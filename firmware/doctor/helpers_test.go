package doctor

import (
	"crypto"
	"crypto/x509"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reefer/tracker/provisioning/certs/certstest"
)

// device is a device certificate chain and key written to files.
type device struct {
	root, inter, leaf *certstest.Cert
	certFile, keyFile string
}

// newDevice issues root → intermediate → leaf cn, with leaf options o,
// and writes the chain (leaf, intermediate) and key as an operator would.
func newDevice(t *testing.T, cn string, o certstest.Options) *device {
	t.Helper()
	root := certstest.Root(t, "Test Root CA", certstest.Options{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour)})
	inter := root.Intermediate(t, "Test Intermediate CA", certstest.Options{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour)})
	leaf := inter.Leaf(t, cn, o)
	d := &device{root: root, inter: inter, leaf: leaf}
	dir := t.TempDir()
	d.certFile, d.keyFile = filepath.Join(dir, "device-chain.pem"), filepath.Join(dir, "device.key")
	d.write(t, leaf.Key, leaf.Cert, inter.Cert)
	return d
}

func (d *device) write(t *testing.T, key crypto.Signer, chain ...*x509.Certificate) {
	t.Helper()
	certstest.WriteCerts(t, d.certFile, chain...)
	certstest.WriteKey(t, d.keyFile, key, certstest.PKCS8)
}

// wantCheck compares a check's status and that its detail and fix contain
// the given substrings.
func wantCheck(t *testing.T, got Check, name string, st Status, detail, fix string) {
	t.Helper()
	if got.Name != name || got.Status != st || !strings.Contains(got.Detail, detail) || !strings.Contains(got.Fix, fix) {
		t.Errorf("check = %+v; want %s %s with detail containing %q and fix containing %q", got, name, st, detail, fix)
	}
	if st != OK && got.Fix == "" {
		t.Errorf("check %s is %s without a fix", got.Name, got.Status)
	}
}

func jsonMarshal(v any) ([]byte, error) { return json.MarshalIndent(v, "", "  ") }
