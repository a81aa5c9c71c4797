package doctor

import (
	"os"
	"testing"
	"time"

	"github.com/reefer/tracker/provisioning/certs/certstest"
)

func TestCheckCertificate(t *testing.T) {
	t.Parallel()
	now := time.Now()
	valid := certstest.Options{NotBefore: now.Add(-time.Hour), NotAfter: now.Add(90 * day)}
	type want struct {
		st          Status
		detail, fix string
	}
	tests := []struct {
		name                  string
		cn                    string
		opts                  certstest.Options
		mangle                func(t *testing.T, d *device)
		now                   time.Time
		key, id, chain, dates want
		identity              bool
	}{
		{name: "good", cn: "tracker-0042", opts: valid, identity: true,
			key: want{OK, "mode 0600, matches the certificate", ""}, id: want{OK, `CN "tracker-0042"`, ""},
			chain: want{OK, `"tracker-0042" ← issued by "Test Intermediate CA"`, ""}, dates: want{OK, "days left", ""}},
		{name: "key readable by others", cn: "tracker-0042", opts: valid,
			mangle: func(t *testing.T, d *device) { chmod(t, d.keyFile, 0o644) },
			key:    want{Fail, "mode 0644", "chmod 600 "}, id: want{OK, "tracker-0042", ""},
			chain: want{Warn, "not checked", "fix the key file"}, dates: want{OK, "valid", ""}},
		{name: "key missing", cn: "tracker-0042", opts: valid,
			mangle: func(t *testing.T, d *device) { os.Remove(d.keyFile) },
			key:    want{Fail, "no such file", "install the device private key"}, id: want{OK, "", ""},
			chain: want{Warn, "not checked", ""}, dates: want{OK, "", ""}},
		{name: "key of another device", cn: "tracker-0042", opts: valid,
			mangle: func(t *testing.T, d *device) {
				certstest.WriteKey(t, d.keyFile, certstest.NewKey(t, certstest.ECDSA), certstest.PKCS8)
			},
			key: want{Fail, "does not match", "copy the key made together"}, id: want{OK, "", ""},
			chain: want{OK, "issued by", ""}, dates: want{OK, "", ""}},
		{name: "chain reversed", cn: "tracker-0042", opts: valid,
			mangle: func(t *testing.T, d *device) { d.write(t, d.leaf.Key, d.inter.Cert, d.leaf.Cert) },
			key:    want{OK, "mode 0600", ""}, id: want{Fail, `"Test Intermediate CA" is not a valid`, "issue a device certificate"},
			chain: want{Fail, "out of order", "device certificate first"}, dates: want{OK, "", ""}},
		{name: "intermediate missing", cn: "tracker-0042", opts: valid,
			mangle: func(t *testing.T, d *device) { d.write(t, d.leaf.Key, d.leaf.Cert) },
			key:    want{OK, "", ""}, id: want{OK, "", ""},
			chain: want{Fail, "missing the leaf's issuer", "then the intermediate"}, dates: want{OK, "", ""}},
		{name: "uppercase CN", cn: "Tracker-0042", opts: valid,
			key: want{OK, "", ""}, id: want{Fail, "uppercase", "lowercase"},
			chain: want{OK, "issued by", ""}, dates: want{OK, "", ""}},
		{name: "expires in 31 days", cn: "tracker-0042", opts: certstest.Options{NotBefore: now.Add(-time.Hour), NotAfter: now.Add(31*day + time.Hour)}, identity: true,
			key: want{OK, "", ""}, id: want{OK, "", ""}, chain: want{OK, "", ""},
			dates: want{OK, "(31 days left)", ""}},
		{name: "expires in 29 days", cn: "tracker-0042", opts: certstest.Options{NotBefore: now.Add(-time.Hour), NotAfter: now.Add(29*day + time.Hour)}, identity: true,
			key: want{OK, "", ""}, id: want{OK, "", ""}, chain: want{OK, "", ""},
			dates: want{Warn, "the device certificate expires on", "before then, issue a new device certificate (deploy/certs/device.sh --force tracker-0042)"}},
		{name: "expires in 8 days", cn: "tracker-0042", opts: certstest.Options{NotBefore: now.Add(-time.Hour), NotAfter: now.Add(8*day + time.Hour)}, identity: true,
			key: want{OK, "", ""}, id: want{OK, "", ""}, chain: want{OK, "", ""},
			dates: want{Warn, "in 8 days", "before then"}},
		{name: "expires in 3 days", cn: "tracker-0042", opts: certstest.Options{NotBefore: now.Add(-time.Hour), NotAfter: now.Add(3*day + time.Hour)}, identity: true,
			key: want{OK, "", ""}, id: want{OK, "", ""}, chain: want{OK, "", ""},
			dates: want{Fail, "the device certificate expires on", "now: issue a new device certificate (deploy/certs/device.sh --force tracker-0042)"}},
		{name: "expired", cn: "tracker-0042", opts: certstest.Options{NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)}, identity: true,
			key: want{OK, "", ""}, id: want{OK, "", ""}, chain: want{OK, "", ""},
			dates: want{Fail, "expired on", "issue a new device certificate"}},
		{name: "clock in 1970", cn: "tracker-0042", opts: valid, now: time.Unix(12, 0), identity: true,
			key: want{OK, "", ""}, id: want{OK, "", ""}, chain: want{OK, "", ""},
			dates: want{Fail, "but the clock says 1970-01-01T00:00:12Z", "see clock"}},
		{name: "no certificate file", cn: "tracker-0042", opts: valid,
			mangle: func(t *testing.T, d *device) { os.Remove(d.certFile) },
			key:    want{OK, "", ""}, id: want{Warn, "not checked", "see certificate chain"},
			chain: want{Fail, "no such file", "install the device certificate chain"}, dates: want{Warn, "not checked", ""}},
		{name: "key in the certificate file", cn: "tracker-0042", opts: valid,
			mangle: func(t *testing.T, d *device) { copyFile(t, d.keyFile, d.certFile) },
			key:    want{OK, "", ""}, id: want{Warn, "not checked", "see certificate chain"},
			chain: want{Fail, ".pem: no CERTIFICATE PEM block", "install the device certificate chain"}, dates: want{Warn, "not checked", ""}},
		{name: "garbage certificate", cn: "tracker-0042", opts: valid,
			mangle: func(t *testing.T, d *device) {
				writeFile(t, d.certFile, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
			},
			key: want{OK, "", ""}, id: want{Warn, "not checked", "see certificate chain"},
			chain: want{Fail, ".pem: certificate 1: x509: ", "install the device certificate chain"}, dates: want{Warn, "not checked", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := newDevice(t, tt.cn, tt.opts)
			if tt.mangle != nil {
				tt.mangle(t, d)
			}
			at := now
			if !tt.now.IsZero() {
				at = tt.now
			}
			res := CheckCertificate(d.certFile, d.keyFile, at)
			if len(res.Checks) != 4 {
				t.Fatalf("CheckCertificate gave %d checks; want 4", len(res.Checks))
			}
			for i, w := range []struct {
				name string
				want
			}{{"key file", tt.key}, {"certificate id", tt.id}, {"certificate chain", tt.chain}, {"certificate dates", tt.dates}} {
				wantCheck(t, res.Checks[i], w.name, w.st, w.detail, w.fix)
			}
			if got := res.Identity != nil; got != tt.identity {
				t.Errorf("Identity loaded = %v; want %v", got, tt.identity)
			}
			if res.Identity != nil && res.Identity.RegistrationID != tt.cn {
				t.Errorf("RegistrationID = %q; want %q", res.Identity.RegistrationID, tt.cn)
			}
		})
	}
}

func TestCheckCertificateIntermediateExpiring(t *testing.T) {
	t.Parallel()
	now := time.Now()
	root := certstest.Root(t, "Test Root CA", certstest.Options{NotBefore: now.Add(-day), NotAfter: now.Add(400 * day)})
	inter := root.Intermediate(t, "Fleet CA 2026", certstest.Options{NotBefore: now.Add(-day), NotAfter: now.Add(5 * day)})
	leaf := inter.Leaf(t, "tracker-7", certstest.Options{NotBefore: now.Add(-day), NotAfter: now.Add(4 * day)})
	d := &device{root: root, inter: inter, leaf: leaf, certFile: t.TempDir() + "/c.pem"}
	d.keyFile = d.certFile + ".key"
	d.write(t, leaf.Key, leaf.Cert, inter.Cert)
	// The leaf expires first, so it is what the failure names.
	ck := CheckCertificate(d.certFile, d.keyFile, now).Checks[3]
	wantCheck(t, ck, "certificate dates", Fail, "the device certificate expires", "now: issue")

	leaf = inter.Leaf(t, "tracker-7", certstest.Options{NotBefore: now.Add(-day), NotAfter: now.Add(300 * day)})
	d.write(t, leaf.Key, leaf.Cert, inter.Cert)
	ck = CheckCertificate(d.certFile, d.keyFile, now).Checks[3]
	wantCheck(t, ck, "certificate dates", Fail, `the issuing CA "Fleet CA 2026" expires`, "renew that CA")

	// Under a month left on the CA alone is a warning.
	inter = root.Intermediate(t, "Fleet CA 2026", certstest.Options{NotBefore: now.Add(-day), NotAfter: now.Add(20 * day)})
	leaf = inter.Leaf(t, "tracker-7", certstest.Options{NotBefore: now.Add(-day), NotAfter: now.Add(19 * day)})
	d.write(t, leaf.Key, leaf.Cert, inter.Cert)
	ck = CheckCertificate(d.certFile, d.keyFile, now).Checks[3]
	wantCheck(t, ck, "certificate dates", Warn, "the device certificate expires on", "before then")
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, to, string(b))
}
