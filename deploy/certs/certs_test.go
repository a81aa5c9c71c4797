package certs_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// needOpenSSL skips the test when openssl is missing: the scripts are thin
// wrappers around it, so there is nothing to test without it.
func needOpenSSL(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not in PATH; install it (apt-get install openssl) to test deploy/certs")
	}
}

type result struct {
	code           int
	stdout, stderr string
}

// run runs one of the scripts of this directory with args.
func run(t *testing.T, script string, args ...string) result {
	t.Helper()
	path, err := filepath.Abs(script)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, args...)
	cmd.Dir = t.TempDir() // the scripts must not depend on the working directory
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("run %s: %v", script, err)
	}
	return r
}

// mustRun runs a script that must succeed.
func mustRun(t *testing.T, script string, args ...string) result {
	t.Helper()
	r := run(t, script, args...)
	if r.code != 0 {
		t.Fatalf("%s %q exited %d\nstdout: %s\nstderr: %s", script, args, r.code, r.stdout, r.stderr)
	}
	return r
}

func readCerts(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			t.Fatalf("%s: unexpected PEM block %q", path, b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		t.Fatalf("%s: no certificate", path)
	}
	return certs
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	certs := readCerts(t, path)
	if len(certs) != 1 {
		t.Fatalf("%s holds %d certificates; want 1", path, len(certs))
	}
	return certs[0]
}

func readKey(t *testing.T, path string) crypto.Signer {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatalf("%s: no PEM block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return k.(crypto.Signer)
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("mode of %s = %#o; want %#o", path, got, want)
	}
}

// checkKeyType checks that pub is what --key-type asked for.
func checkKeyType(t *testing.T, what string, pub any, keyType string) {
	t.Helper()
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if keyType != "ec" || k.Curve != elliptic.P256() {
			t.Errorf("%s key is ECDSA %s; want %s", what, k.Params().Name, keyType)
		}
	case *rsa.PublicKey:
		if keyType != "rsa" || k.N.BitLen() != 2048 {
			t.Errorf("%s key is RSA-%d; want %s", what, k.N.BitLen(), keyType)
		}
	default:
		t.Errorf("%s key is %T; want %s", what, pub, keyType)
	}
}

func opensslVerify(t *testing.T, dir, leaf string) {
	t.Helper()
	out, err := exec.Command("openssl", "verify", "-CAfile", filepath.Join(dir, "root.pem"),
		"-untrusted", filepath.Join(dir, "intermediate.pem"), "-purpose", "sslclient", leaf).CombinedOutput()
	if err != nil || !strings.Contains(string(out), ": OK") {
		t.Errorf("openssl verify %s: %v\n%s", leaf, err, out)
	}
}

func pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

func devicePaths(dir, id string) (key, pem, chain string) {
	d := filepath.Join(dir, "devices", id)
	return filepath.Join(d, id+".key"), filepath.Join(d, id+".pem"), filepath.Join(d, id+"-chain.pem")
}

func TestCAAndDevice(t *testing.T) {
	needOpenSSL(t)
	t.Parallel()
	tests := []struct {
		caKey, deviceKey string // "" means the default
		wantCA, wantDev  string
	}{
		{"", "", "ec", "ec"},
		{"rsa", "rsa", "rsa", "rsa"},
		{"rsa", "ec", "rsa", "ec"},
		{"ec", "rsa", "ec", "rsa"},
	}
	for _, tt := range tests {
		t.Run("ca="+tt.wantCA+",device="+tt.wantDev, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "certs")
			args := []string{"--dir", dir}
			if tt.caKey != "" {
				args = append(args, "--key-type", tt.caKey)
			}
			mustRun(t, "ca.sh", args...)

			root := readCert(t, filepath.Join(dir, "root.pem"))
			inter := readCert(t, filepath.Join(dir, "intermediate.pem"))
			for _, ca := range []struct {
				name     string
				cert     *x509.Certificate
				pathLen  int
				parent   *x509.Certificate
				wantCN   string
				keyMatch string
			}{
				{"root", root, 1, root, "Reefer Tracker Test Root CA", "root.key"},
				{"intermediate", inter, 0, root, "Reefer Tracker Test Intermediate CA", "intermediate.key"},
			} {
				c := ca.cert
				if !c.BasicConstraintsValid || !c.IsCA || c.MaxPathLen != ca.pathLen || (ca.pathLen == 0 && !c.MaxPathLenZero) {
					t.Errorf("%s: CA=%v pathlen=%d (zero=%v); want CA:TRUE, pathlen:%d", ca.name, c.IsCA, c.MaxPathLen, c.MaxPathLenZero, ca.pathLen)
				}
				if c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
					t.Errorf("%s: key usage %#x; want keyCertSign|cRLSign", ca.name, c.KeyUsage)
				}
				if err := c.CheckSignatureFrom(ca.parent); err != nil {
					t.Errorf("%s: not signed by %s: %v", ca.name, ca.parent.Subject, err)
				}
				if c.Subject.CommonName != ca.wantCN {
					t.Errorf("%s: CN %q; want %q", ca.name, c.Subject.CommonName, ca.wantCN)
				}
				checkKeyType(t, ca.name, c.PublicKey, tt.wantCA)
				keyFile := filepath.Join(dir, ca.keyMatch)
				checkMode(t, keyFile, 0o600)
				if !readKey(t, keyFile).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(c.PublicKey) {
					t.Errorf("%s does not match %s.pem", keyFile, ca.name)
				}
			}

			const id = "sensor-thl-001"
			args = []string{"--dir", dir}
			if tt.deviceKey != "" {
				args = append(args, "--key-type", tt.deviceKey)
			}
			mustRun(t, "device.sh", append(args, id)...)
			keyFile, pemFile, chainFile := devicePaths(dir, id)
			checkMode(t, keyFile, 0o600)
			leaf := readCert(t, pemFile)
			if leaf.Subject.CommonName != id {
				t.Errorf("leaf CN = %q; want %q", leaf.Subject.CommonName, id)
			}
			if leaf.IsCA || leaf.KeyUsage != x509.KeyUsageDigitalSignature ||
				!slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
				t.Errorf("leaf: CA=%v keyUsage=%#x EKU=%v; want CA:FALSE, digitalSignature, clientAuth", leaf.IsCA, leaf.KeyUsage, leaf.ExtKeyUsage)
			}
			checkKeyType(t, "device", leaf.PublicKey, tt.wantDev)

			chains, err := leaf.Verify(x509.VerifyOptions{
				Roots:         pool(root),
				Intermediates: pool(inter),
				KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			})
			if err != nil {
				t.Fatalf("crypto/x509 verify: %v", err)
			}
			if len(chains) != 1 || len(chains[0]) != 3 {
				t.Errorf("verified chains %v; want one chain leaf→intermediate→root", chains)
			}
			opensslVerify(t, dir, pemFile)

			chain := readCerts(t, chainFile)
			if len(chain) != 2 || !chain[0].Equal(leaf) || !chain[1].Equal(inter) {
				t.Errorf("%s holds %d certificates; want leaf then intermediate", chainFile, len(chain))
			}
			noTempLeft(t, dir)
			// What the device does with the two files.
			if _, err := tls.LoadX509KeyPair(chainFile, keyFile); err != nil {
				t.Errorf("tls.LoadX509KeyPair(chain, key): %v", err)
			}
		})
	}
}

// noTempLeft checks that the scripts cleaned up their temporary directory.
func noTempLeft(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".tmp") {
			t.Errorf("%s left behind in %s", e.Name(), dir)
		}
	}
}

func TestDays(t *testing.T) {
	needOpenSSL(t)
	t.Parallel()
	dir := t.TempDir()
	mustRun(t, "ca.sh", "--dir", dir, "--days", "10", "--name", "Days Test")
	mustRun(t, "device.sh", "--dir", dir, "--days", "3", "dev-days")
	for _, c := range []struct {
		file string
		want time.Duration
	}{
		{"root.pem", 10 * 24 * time.Hour},
		{"intermediate.pem", 10 * 24 * time.Hour},
		{"devices/dev-days/dev-days.pem", 3 * 24 * time.Hour},
	} {
		cert := readCert(t, filepath.Join(dir, c.file))
		if got := cert.NotAfter.Sub(cert.NotBefore); got < c.want-time.Minute || got > c.want+time.Minute {
			t.Errorf("%s is valid for %v; want %v", c.file, got, c.want)
		}
		if d := time.Since(cert.NotBefore); d < -time.Minute || d > time.Hour {
			t.Errorf("%s NotBefore = %v; want about now", c.file, cert.NotBefore)
		}
	}
	if cn := readCert(t, filepath.Join(dir, "root.pem")).Subject.CommonName; cn != "Days Test Root CA" {
		t.Errorf("--name: root CN = %q; want %q", cn, "Days Test Root CA")
	}
}

func snapshot(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		files[path] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func sameFiles(t *testing.T, what string, before, after map[string][]byte) {
	t.Helper()
	if len(before) != len(after) {
		t.Errorf("%s: %d files before, %d after", what, len(before), len(after))
	}
	for path, b := range before {
		if !bytes.Equal(b, after[path]) {
			t.Errorf("%s changed %s", what, path)
		}
	}
}

func TestIdempotent(t *testing.T) {
	needOpenSSL(t)
	t.Parallel()
	dir := t.TempDir()
	mustRun(t, "ca.sh", "--dir", dir)
	ca := snapshot(t, dir)
	r := mustRun(t, "ca.sh", "--dir", dir, "--key-type", "rsa")
	sameFiles(t, "second ca.sh", ca, snapshot(t, dir))
	if !strings.Contains(r.stdout, "keeping existing root CA") || !strings.Contains(r.stdout, "keeping existing intermediate CA") {
		t.Errorf("second ca.sh output %q; want it to say it keeps the CA", r.stdout)
	}

	const id = "sensor-thl-002"
	mustRun(t, "device.sh", "--dir", dir, id)
	all := snapshot(t, dir)
	r = mustRun(t, "device.sh", "--dir", dir, id)
	sameFiles(t, "second device.sh", all, snapshot(t, dir))
	if !strings.Contains(r.stdout, "keeping existing certificate") {
		t.Errorf("second device.sh output %q; want it to say it keeps the certificate", r.stdout)
	}

	// A lost chain file is rebuilt from the kept leaf.
	keyFile, pemFile, chainFile := devicePaths(dir, id)
	if err := os.Remove(chainFile); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "device.sh", "--dir", dir, id)
	sameFiles(t, "device.sh after losing the chain", all, snapshot(t, dir))

	// --force issues a new key and certificate.
	mustRun(t, "device.sh", "--dir", dir, "--force", "--key-type", "rsa", id)
	after := snapshot(t, dir)
	for _, f := range []string{keyFile, pemFile, chainFile} {
		if bytes.Equal(all[f], after[f]) {
			t.Errorf("device.sh --force left %s unchanged", f)
		}
	}
	noTempLeft(t, dir)
	checkMode(t, keyFile, 0o600)
	checkKeyType(t, "forced device", readCert(t, pemFile).PublicKey, "rsa")
	opensslVerify(t, dir, pemFile)
}

func TestDeviceRefusesToKeepBrokenCert(t *testing.T) {
	needOpenSSL(t)
	t.Parallel()
	dir := t.TempDir()
	mustRun(t, "ca.sh", "--dir", dir)
	mustRun(t, "device.sh", "--dir", dir, "dev-a")
	mustRun(t, "device.sh", "--dir", dir, "dev-b")
	keyA, _, _ := devicePaths(dir, "dev-a")
	keyB, _, _ := devicePaths(dir, "dev-b")
	other, err := os.ReadFile(keyB)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyA, other, 0o600); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, dir)
	r := run(t, "device.sh", "--dir", dir, "dev-a")
	if r.code == 0 || !strings.Contains(r.stderr, "does not match") || !strings.Contains(r.stderr, "--force") {
		t.Errorf("device.sh with a mismatched key = %d, stderr %q; want failure naming the mismatch and --force", r.code, r.stderr)
	}
	sameFiles(t, "refused device.sh", before, snapshot(t, dir))
	mustRun(t, "device.sh", "--dir", dir, "--force", "dev-a")
	_, pemA, _ := devicePaths(dir, "dev-a")
	opensslVerify(t, dir, pemA)
}

func TestDeviceIDs(t *testing.T) {
	needOpenSSL(t)
	t.Parallel()
	dir := t.TempDir()
	mustRun(t, "ca.sh", "--dir", dir)
	long := strings.Repeat("a", 64)
	good := []string{"a", "0", "sensor-thl-001", "dev:1.a_b-", "x-", long}
	for _, id := range good {
		t.Run("good/"+id, func(t *testing.T) {
			t.Parallel()
			mustRun(t, "device.sh", "--dir", dir, "--", id)
			_, pemFile, _ := devicePaths(dir, id)
			if cn := readCert(t, pemFile).Subject.CommonName; cn != id {
				t.Errorf("device.sh %q: CN = %q", id, cn)
			}
		})
	}
	bad := []struct{ id, want string }{
		{"", "it is empty"},
		{long + "a", "65 characters"},
		{"Sensor-1", "uppercase"},
		{"sensor.", "last character"},
		{"sensor_", "last character"},
		{"sensor:", "last character"},
		{"a/b", "lowercase letters, digits and - . _ :"},
		{"../x", "lowercase letters, digits and - . _ :"},
		{"a b", "lowercase letters, digits and - . _ :"},
		{"dev+1", "lowercase letters, digits and - . _ :"},
		{"café", "lowercase letters, digits and - . _ :"},
	}
	for _, tt := range bad {
		t.Run("bad/"+tt.id, func(t *testing.T) {
			t.Parallel()
			r := run(t, "device.sh", "--dir", dir, "--", tt.id)
			if r.code == 0 || !strings.Contains(r.stderr, "invalid device id") || !strings.Contains(r.stderr, tt.want) {
				t.Errorf("device.sh %q = %d, stderr %q; want failure with %q", tt.id, r.code, r.stderr, tt.want)
			}
		})
	}
}

func TestMissingCA(t *testing.T) {
	needOpenSSL(t)
	t.Parallel()
	dir := t.TempDir()
	for _, args := range [][]string{
		{"device.sh", "--dir", dir, "sensor-1"},
		{"verification.sh", "--dir", dir, "ABC123"},
	} {
		r := run(t, args[0], args[1:]...)
		if r.code == 0 || !strings.Contains(r.stderr, "no CA in "+dir) || !strings.Contains(r.stderr, "ca.sh --dir "+dir) {
			t.Errorf("%q = %d, stderr %q; want failure telling to run ca.sh", args, r.code, r.stderr)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("failed runs left %d entries in %s", len(entries), dir)
	}
}

func TestHalfCARefused(t *testing.T) {
	needOpenSSL(t)
	t.Parallel()
	dir := t.TempDir()
	mustRun(t, "ca.sh", "--dir", dir)
	if err := os.Remove(filepath.Join(dir, "root.key")); err != nil {
		t.Fatal(err)
	}
	r := run(t, "ca.sh", "--dir", dir)
	if r.code == 0 || !strings.Contains(r.stderr, "only one of root.pem and root.key") {
		t.Errorf("ca.sh with root.key missing = %d, stderr %q; want a refusal", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "root.key")); err == nil {
		t.Error("ca.sh recreated root.key beside the old root.pem")
	}
}

func TestVerification(t *testing.T) {
	needOpenSSL(t)
	t.Parallel()
	dir := t.TempDir()
	mustRun(t, "ca.sh", "--dir", dir)
	root := readCert(t, filepath.Join(dir, "root.pem"))
	inter := readCert(t, filepath.Join(dir, "intermediate.pem"))
	for _, tt := range []struct {
		args        []string
		signer, not *x509.Certificate
	}{
		{nil, root, inter},
		{[]string{"--ca", "root"}, root, inter},
		{[]string{"--ca", "intermediate"}, inter, root},
	} {
		const code = "0F1E2D3C4B5A69788796A5B4C3D2E1F0A1B2C3D4E5F60718"
		args := append(append([]string{"--dir", dir}, tt.args...), code)
		mustRun(t, "verification.sh", args...)
		v := readCert(t, filepath.Join(dir, "verification.pem"))
		if v.Subject.CommonName != code {
			t.Errorf("verification.sh %q: CN = %q; want %q", tt.args, v.Subject.CommonName, code)
		}
		if err := v.CheckSignatureFrom(tt.signer); err != nil {
			t.Errorf("verification.sh %q: not signed by %s: %v", tt.args, tt.signer.Subject.CommonName, err)
		}
		if err := v.CheckSignatureFrom(tt.not); err == nil {
			t.Errorf("verification.sh %q: signed by %s too", tt.args, tt.not.Subject.CommonName)
		}
	}
	for _, bad := range [][]string{{"a/b"}, {"x y"}, {""}, {"--ca", "leaf", "ABC"}} {
		r := run(t, "verification.sh", append([]string{"--dir", dir}, bad...)...)
		if r.code == 0 || r.stderr == "" {
			t.Errorf("verification.sh %q = %d, stderr %q; want a failure with a message", bad, r.code, r.stderr)
		}
	}
}

func TestUsage(t *testing.T) {
	needOpenSSL(t)
	t.Parallel()
	for _, s := range []string{"ca.sh", "device.sh", "verification.sh"} {
		r := run(t, s, "-h")
		if r.code != 0 || !strings.Contains(r.stdout, "Usage: "+s) {
			t.Errorf("%s -h = %d, stdout %q; want 0 and usage", s, r.code, r.stdout)
		}
		for _, args := range [][]string{{"--bogus"}, {"--dir"}, {"--key-type", "dsa", "x"}, {"--days", "soon", "x"}, {"a", "b"}} {
			if s == "verification.sh" && (args[0] == "--key-type" || args[0] == "--days") {
				continue // no such options: covered by --bogus
			}
			r := run(t, s, args...)
			if r.code != 2 || !strings.Contains(r.stderr, "Usage: "+s) {
				t.Errorf("%s %q = %d, stderr %q; want 2 and usage on stderr", s, args, r.code, r.stderr)
			}
		}
	}
}

// TestShellcheck keeps the scripts lint-clean where shellcheck is installed
// (apt-get install shellcheck).
func TestShellcheck(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("shellcheck"); err != nil {
		t.Skip("shellcheck not installed")
	}
	out, err := exec.Command("shellcheck", "-x", "ca.sh", "device.sh", "verification.sh", "lib.sh").CombinedOutput()
	if err != nil {
		t.Errorf("shellcheck: %v\n%s", err, out)
	}
}
