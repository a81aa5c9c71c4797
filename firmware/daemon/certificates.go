package daemon

import (
	"context"
	"crypto/x509"
	"log/slog"
	"time"

	"github.com/reefer/tracker/provisioning/certs"
	"github.com/reefer/tracker/provisioning/opcert"
)

// PropCertificates is the reported property with the end of the device's
// certificates' validity (certs.Validity): an operator sees a tracker
// about to go dark before it does.
const PropCertificates = "certificates"

// CertCheckInterval is how often the running tracker looks at its
// certificates' expiry and logs a warning while one is near its end.
const CertCheckInterval = 24 * time.Hour

// Certificates is the validity of the certificates the tracker holds.
type Certificates struct {
	// Onboarding is the installed certificate (certFile): DPS only when
	// the hub certificate is issued by DPS, otherwise DPS and the hub.
	Onboarding certs.Validity `json:"onboarding"`
	// Operational is the hub certificate DPS issued, when the config asks
	// for one and the tracker holds one.
	Operational *certs.Validity `json:"operational,omitempty"`
}

// CertificatesAt describes onboarding and operational (nil when there is
// none) at now. The operational certificate, which the tracker renews
// after renewAt of its lifetime, is judged only once that is past
// (opcert.Validity).
func CertificatesAt(onboarding, operational *x509.Certificate, renewAt float64, now time.Time) Certificates {
	c := Certificates{Onboarding: certs.ValidityOf(onboarding, now)}
	if operational != nil {
		v := opcert.Validity(operational, renewAt, now)
		c.Operational = &v
	}
	return c
}

// LogExpiry logs one line per certificate near its end: WARN under
// certs.ExpiryWarnWithin, ERROR under certs.ExpiryFailWithin or expired.
// It reports whether it logged anything.
func LogExpiry(log *slog.Logger, c Certificates) bool {
	logged := false
	one := func(role string, v certs.Validity, meaning string) {
		level := slog.LevelWarn
		switch v.State {
		case certs.ExpiryOK:
			return
		case certs.ExpiryFail, certs.ExpiryExpired:
			level = slog.LevelError
		}
		logged = true
		msg := "certificate expires soon"
		if v.State == certs.ExpiryExpired {
			msg = "certificate expired"
		}
		log.Log(context.Background(), level, msg, "certificate", role, "subject", v.Subject,
			"not_after", v.NotAfter.Format(time.RFC3339), "days_left", v.DaysLeft, "meaning", meaning)
	}
	opMeaning := "the hub certificate DPS issued; its renewal through DPS is late (see provisioning.renewalError); the tracker keeps trying"
	obMeaning := "install a new device certificate (deploy/certs/device.sh --force " + c.Onboarding.Subject + "); without it the tracker cannot reach DPS or the hub"
	if c.Operational != nil {
		obMeaning = "install a new device certificate (deploy/certs/device.sh --force " + c.Onboarding.Subject + "); without it the tracker cannot reach DPS to renew its hub certificate"
		one("operational", *c.Operational, opMeaning)
	}
	one("onboarding", c.Onboarding, obMeaning)
	return logged
}

// certificates is the daemon's Certificates now.
func (d *Daemon) certificates() Certificates {
	return CertificatesAt(d.p.dev.Identity.Leaf, d.p.prov.HubLeaf(), d.tc.CertificateIssuance.RenewAt, d.now())
}

// watchCertificates logs near expiry at start (once the clock is
// plausible) and every CertCheckInterval, and has the agent report, so
// the twin's daysLeft stays current.
func (d *Daemon) watchCertificates(ctx context.Context) {
	for {
		wait := CertCheckInterval
		if d.now().Before(d.p.dev.Floor) {
			wait = time.Minute // a board in 1970 would call every certificate fine
		} else {
			LogExpiry(d.log, d.certificates())
			d.p.agent.Report()
		}
		select {
		case <-ctx.Done():
			return
		case <-d.cfg.Agent.Clock.After(wait):
		}
	}
}
