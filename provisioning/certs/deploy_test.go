package certs

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLoadDeployCerts loads what the operator scripts in deploy/certs
// produce, so that the two halves can't drift apart.
func TestLoadDeployCerts(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not in PATH; install it (apt-get install openssl) to test against deploy/certs")
	}
	scripts, err := filepath.Abs("../../deploy/certs")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sh := func(args ...string) {
		t.Helper()
		out, err := exec.Command(filepath.Join(scripts, args[0]), append([]string{"--dir", dir}, args[1:]...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%q: %v\n%s", args, err, out)
		}
	}
	sh("ca.sh")
	for _, tt := range []struct{ id, keyType string }{{"sensor-thl-001", "ec"}, {"sensor-thl-002", "rsa"}} {
		sh("device.sh", "--key-type", tt.keyType, tt.id)
		base := filepath.Join(dir, "devices", tt.id, tt.id)
		id, err := LoadIdentity(base+"-chain.pem", base+".key", time.Now())
		if err != nil {
			t.Fatalf("LoadIdentity(%s): %v", tt.id, err)
		}
		if id.RegistrationID != tt.id || len(id.Intermediates) != 1 || id.Intermediates[0].Subject.CommonName != "Reefer Tracker Test Intermediate CA" {
			t.Errorf("%s: RegistrationID %q, %d intermediates", tt.id, id.RegistrationID, len(id.Intermediates))
		}
		out, err := exec.Command("openssl", "x509", "-in", base+".pem", "-noout", "-fingerprint", "-sha256").Output()
		if err != nil {
			t.Fatal(err)
		}
		_, fp, _ := strings.Cut(strings.TrimSpace(string(out)), "=")
		if want := strings.ToLower(strings.ReplaceAll(fp, ":", "")); id.FingerprintSHA256 != want {
			t.Errorf("%s: FingerprintSHA256 = %s; openssl says %s", tt.id, id.FingerprintSHA256, want)
		}
		// The bare leaf is the classic mistake.
		if _, err := LoadIdentity(base+".pem", base+".key", time.Now()); !errors.Is(err, ErrMissingIntermediate) {
			t.Errorf("%s: leaf without intermediate: %v; want ErrMissingIntermediate", tt.id, err)
		}
	}
	key := filepath.Join(dir, "devices", "sensor-thl-001", "sensor-thl-001.key")
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	chain := filepath.Join(dir, "devices", "sensor-thl-001", "sensor-thl-001-chain.pem")
	if _, err := LoadIdentity(chain, key, time.Now()); !errors.Is(err, ErrKeyPermissions) {
		t.Errorf("key copied with mode 0644: %v; want ErrKeyPermissions", err)
	}
}
