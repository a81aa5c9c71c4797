package daemon_test

import (
	"context"
	"crypto"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reefer/tracker/deploy/emulator"
	"github.com/reefer/tracker/deploy/emulator/store"
	"github.com/reefer/tracker/firmware/config"
	"github.com/reefer/tracker/firmware/daemon"
	"github.com/reefer/tracker/provisioning/certs"
	"github.com/reefer/tracker/provisioning/opcert"
)

// issuingTracker is a group enrollment naming a credential policy whose
// certificates live validity, and a tracker config asking for issuance.
func issuingTracker(t *testing.T, id string, validity time.Duration, renewAt float64, mods ...func(*emulator.Config)) (*emu, *config.Config) {
	t.Helper()
	e := startEmu(t, mods...)
	if _, err := e.CreateCredentialPolicy("trackers", validity); err != nil {
		t.Fatal(err)
	}
	f := newFleet(t)
	f.enroll(t, e, func(g *store.EnrollmentGroup) { g.CredentialPolicyName = "trackers" })
	cfg := f.trackerConfig(t, e, id)
	cfg.CertificateIssuance = config.Issuance{Enabled: true, RenewAt: renewAt}
	return e, cfg
}

// current is the operational certificate in use, nil if none.
func current(t *testing.T, cfg *config.Config) *certs.Identity {
	t.Helper()
	id, err := opcert.Store{Dir: cfg.StateDir}.Current()
	if errors.Is(err, opcert.ErrNone) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// serial is the operational certificate's serial, "" if none.
func serial(t *testing.T, cfg *config.Config) string {
	if id := current(t, cfg); id != nil {
		return id.Leaf.SerialNumber.String()
	}
	return ""
}

// Issuance and renewal against the emulator: the tracker makes its key,
// DPS signs it for the registration id, the hub takes the issued
// certificate (the hub identity is certificateAuthority, which refuses the
// onboarding certificate), telemetry flows; at half of a short lifetime it
// renews with a new key and carries on. The key
// is 0600, next to its chain, and never in the log.
func TestIssuedCertificateAndRenewal(t *testing.T) {
	t.Parallel()
	const id = "sensor-thl-041"
	e, cfg := issuingTracker(t, id, 12*time.Second, 0.5)
	tr := startTracker(t, cfg, id)
	hub := e.HubHost(0)

	eventually(t, "connected with an issued certificate", func() bool { return tr.status().Connected && serial(t, cfg) != "" })
	op := current(t, cfg)
	if op.RegistrationID != id || op.Leaf.Issuer.CommonName == op.Leaf.Subject.CommonName {
		t.Errorf("operational certificate CN %q issuer %q", op.RegistrationID, op.Leaf.Issuer.CommonName)
	}
	if op.Leaf.NotAfter.Sub(op.Leaf.NotBefore) != 12*time.Second {
		t.Errorf("validity %v; want the policy's 12 s", op.Leaf.NotAfter.Sub(op.Leaf.NotBefore))
	}
	onb, err := certs.LoadIdentity(cfg.CertFile, cfg.KeyFile, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if op.FingerprintSHA256 == onb.FingerprintSHA256 || samePublicKey(op, onb) {
		t.Fatal("the operational certificate shares the onboarding key")
	}
	d, err := e.Store().GetDevice(hub, id)
	if err != nil || d.Authentication.Type != store.AuthCertificateAuthority {
		t.Fatalf("hub identity %+v, %v; want certificateAuthority", d.Authentication, err)
	}
	bundle := filepath.Join(cfg.StateDir, opcert.CurrentFile)
	if fi, err := os.Stat(bundle); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("bundle %s: %v; want mode 0600", bundle, err)
	}
	b, _ := os.ReadFile(bundle)
	if strings.Count(string(b), "PRIVATE KEY-----") != 2 || strings.Count(string(b), "BEGIN CERTIFICATE") < 2 {
		t.Errorf("bundle holds:\n%s\nwant the key and the chain", b)
	}
	seq := tr.sendNow()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := e.WaitTelemetry(ctx, hub, id, 1); err != nil {
		t.Fatalf("telemetry with the issued certificate (seq %d): %v", seq, err)
	}
	eventually(t, "operational certificate reported", func() bool {
		c, ok := reported(t, e, id)[daemon.PropCertificates].(map[string]any)
		o, _ := c["operational"].(map[string]any)
		return ok && o["notAfter"] == op.Leaf.NotAfter.UTC().Format(time.RFC3339)
	})

	// Renewal at half of 12 s: a new certificate for a new key, switched
	// to once the hub took it.
	first := serial(t, cfg)
	eventually(t, "renewed", func() bool { s := serial(t, cfg); return s != "" && s != first })
	renewed := current(t, cfg)
	if samePublicKey(op, renewed) {
		t.Error("the renewal reused the key")
	}
	eventually(t, "switch logged", func() bool {
		return countLines(tr.logs.String(), "hub accepted the new operational certificate; switched to it") >= 2
	})
	eventually(t, "connected after the renewal", func() bool { return tr.status().Connected })
	n := e.TelemetryCount(hub, id)
	tr.sendNow()
	if _, err := e.WaitTelemetry(ctx, hub, id, n+1); err != nil {
		t.Fatalf("telemetry after the renewal: %v", err)
	}
	logs := tr.logs.String()
	if strings.Contains(logs, "PRIVATE KEY") || strings.Contains(logs, "BEGIN CERTIFICATE REQUEST") {
		t.Error("the log shows key material")
	}
	if n := countLines(logs, "renewing the operational certificate through DPS"); n < 1 {
		t.Errorf("no renewal in the log:\n%s", logs)
	}
}

// The enrollment loses its credential policy: renewals are refused
// (400304), reported and retried with back-off while the tracker keeps
// sending on its certificate; with the policy back the next one succeeds.
func TestRenewalFailsThenSucceeds(t *testing.T) {
	t.Parallel()
	const id = "sensor-thl-042"
	e, cfg := issuingTracker(t, id, 40*time.Second, 0.5)
	tr := startTracker(t, cfg, id)
	hub := e.HubHost(0)
	eventually(t, "connected with an issued certificate", func() bool { return tr.status().Connected && serial(t, cfg) != "" })
	first := serial(t, cfg)

	setPolicy := func(name string) {
		t.Helper()
		g, err := e.Store().GetEnrollmentGroup("enrollgroup-sensors")
		if err != nil {
			t.Fatal(err)
		}
		g.CredentialPolicyName = name
		if _, err := e.Store().PutEnrollmentGroup(g, "*"); err != nil {
			t.Fatal(err)
		}
	}
	setPolicy("")
	eventually(t, "renewal failing", func() bool {
		return countLines(tr.logs.String(), "renewing the operational certificate failed; keeping the current one", "400304") >= 2
	})
	st := tr.status()
	if !strings.Contains(st.Lifecycle.RenewalError, "400304") || !st.Connected || serial(t, cfg) != first {
		t.Fatalf("status %+v; want connected on the first certificate, the renewal error reported", st.Lifecycle)
	}
	eventually(t, "renewalError reported", func() bool {
		p, _ := reported(t, e, id)[daemon.PropProvisioning].(map[string]any)
		s, _ := p["renewalError"].(string)
		return strings.Contains(s, "400304")
	})
	n := e.TelemetryCount(hub, id)
	tr.sendNow()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := e.WaitTelemetry(ctx, hub, id, n+1); err != nil {
		t.Fatalf("telemetry while renewal fails: %v", err)
	}

	setPolicy("trackers")
	eventually(t, "renewed", func() bool { s := serial(t, cfg); return s != "" && s != first })
	eventually(t, "renewal error cleared", func() bool { return tr.status().Lifecycle.RenewalError == "" && tr.status().Connected })
}

// A CSR whose CN is not the registration id (a test hook makes it) is
// refused by DPS (400303): nothing is stored, the hub is never reached,
// and the log says why.
func TestWrongCNRefused(t *testing.T) {
	t.Parallel()
	const id = "sensor-thl-043"
	e, cfg := issuingTracker(t, id, time.Hour, 0.5)
	tr := startTracker(t, cfg, id, func(_ *config.Config, dc *daemon.Config) {
		dc.Lifecycle.NewRequest = func(string) (*opcert.Request, error) { return opcert.NewRequest("someone-else", nil) }
	})
	eventually(t, "refused by DPS", func() bool {
		return countLines(tr.logs.String(), "DPS registration failed", "400303") >= 2
	})
	if serial(t, cfg) != "" {
		t.Error("an operational certificate was stored")
	}
	if _, err := os.Stat(filepath.Join(cfg.StateDir, opcert.PendingFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pending bundle: %v", err)
	}
	if _, err := e.Store().GetDevice(e.HubHost(0), id); err == nil {
		t.Error("a hub identity was created")
	}
	if st := tr.status(); st.Connected || st.Lifecycle.Phase == "connected" {
		t.Errorf("status %+v; want never connected", st.Lifecycle)
	}
}

// The hub refuses the operational certificate as expired (the emulator's
// clock runs ahead after a restart): the tracker goes back to DPS, gets a
// new one and carries on.
func TestExpiredOperationalCertificateReissued(t *testing.T) {
	t.Parallel()
	const id = "sensor-thl-044"
	var ahead atomic.Int64
	e, cfg := issuingTracker(t, id, time.Hour, 0.9, func(c *emulator.Config) {
		c.Now = func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
	})
	tr := startTracker(t, cfg, id)
	eventually(t, "connected with an issued certificate", func() bool { return tr.status().Connected && serial(t, cfg) != "" })
	first := serial(t, cfg)

	e.stop()
	ahead.Store(int64(2 * time.Hour)) // past the first certificate's end
	e.start()
	eventually(t, "re-issued after the hub refused the expired one", func() bool {
		s := serial(t, cfg)
		return s != "" && s != first && tr.status().Connected
	})
	if n := countLines(tr.logs.String(), "hub refused the device"); n < 1 {
		t.Errorf("no hub refusal logged:\n%s", tr.logs.String())
	}
	n := e.TelemetryCount(e.HubHost(0), id)
	tr.sendNow()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := e.WaitTelemetry(ctx, e.HubHost(0), id, n+1); err != nil {
		t.Fatalf("telemetry after re-issuance: %v", err)
	}
}

func samePublicKey(a, b *certs.Identity) bool {
	return a.Leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(b.Leaf.PublicKey)
}
