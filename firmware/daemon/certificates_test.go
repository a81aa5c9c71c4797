package daemon_test

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/reefer/tracker/firmware/daemon"
	"github.com/reefer/tracker/internal/syncbuf"
	"github.com/reefer/tracker/provisioning/certs"
)

// The expiry the tracker reports and logs, with the clock injected: quiet
// with a month left, WARN under 30 days, ERROR under 7 and once expired,
// for the onboarding and the operational certificate alike.
func TestCertificateExpiryLogged(t *testing.T) {
	t.Parallel()
	day := 24 * time.Hour
	now := time.Date(2026, 12, 3, 20, 0, 0, 0, time.UTC)
	// Issued 30 days before it ends: renewal due with 10 days left.
	cert := func(left time.Duration) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: "sensor-thl-001"}, NotBefore: now.Add(left - 30*day), NotAfter: now.Add(left)}
	}
	for _, tt := range []struct {
		name      string
		onb, op   time.Duration // 0 op: none
		want      []string      // log lines, in order
		opState   certs.ExpiryState
		onbDays   int
		onbState  certs.ExpiryState
		wantQuiet bool
	}{
		{name: "a year left", onb: 365 * day, onbDays: 365, onbState: certs.ExpiryOK, wantQuiet: true},
		{name: "31 days left", onb: 31 * day, onbDays: 31, onbState: certs.ExpiryOK, wantQuiet: true},
		{name: "29 days left", onb: 29*day + time.Hour, onbDays: 29, onbState: certs.ExpiryWarn,
			want: []string{`level=WARN msg="certificate expires soon" certificate=onboarding subject=sensor-thl-001 not_after=2027-01-01T21:00:00Z days_left=29 meaning="install a new device certificate (deploy/certs/device.sh --force sensor-thl-001); without it the tracker cannot reach DPS or the hub"`}},
		{name: "6 days left", onb: 6 * day, onbDays: 6, onbState: certs.ExpiryFail,
			want: []string{`level=ERROR msg="certificate expires soon" certificate=onboarding`}},
		{name: "operational expired, onboarding fine", onb: 300 * day, op: -2 * time.Hour, onbDays: 300, onbState: certs.ExpiryOK, opState: certs.ExpiryExpired,
			want: []string{`level=ERROR msg="certificate expired" certificate=operational subject=sensor-thl-001 not_after=2026-12-03T18:00:00Z days_left=-1 meaning="the hub certificate DPS issued; its renewal through DPS is late (see provisioning.renewalError); the tracker keeps trying"`}},
		// A 30-day operational certificate is fine under 30 days left until its renewal is due.
		{name: "operational before its renewal", onb: 300 * day, op: 15 * day, onbDays: 300, onbState: certs.ExpiryOK, opState: certs.ExpiryOK, wantQuiet: true},
		{name: "operational renewal late", onb: 300 * day, op: 9 * day, onbDays: 300, onbState: certs.ExpiryOK, opState: certs.ExpiryWarn,
			want: []string{`level=WARN msg="certificate expires soon" certificate=operational`}},
		{name: "both near", onb: 20 * day, op: 3 * day, onbDays: 20, onbState: certs.ExpiryWarn, opState: certs.ExpiryFail,
			want: []string{`level=ERROR msg="certificate expires soon" certificate=operational`,
				`level=WARN msg="certificate expires soon" certificate=onboarding subject=sensor-thl-001 not_after=2026-12-23T20:00:00Z days_left=20 meaning="install a new device certificate (deploy/certs/device.sh --force sensor-thl-001); without it the tracker cannot reach DPS to renew its hub certificate"`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var op *x509.Certificate
			if tt.op != 0 {
				op = cert(tt.op)
			}
			c := daemon.CertificatesAt(cert(tt.onb), op, 2.0/3, now)
			if c.Onboarding.DaysLeft != tt.onbDays || c.Onboarding.State != tt.onbState {
				t.Errorf("onboarding %+v; want %d days, %s", c.Onboarding, tt.onbDays, tt.onbState)
			}
			if (c.Operational != nil) != (op != nil) || op != nil && c.Operational.State != tt.opState {
				t.Errorf("operational %+v; want state %s", c.Operational, tt.opState)
			}
			var buf syncbuf.Buffer
			log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{
				ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
					if a.Key == slog.TimeKey {
						return slog.Attr{}
					}
					return a
				}}))
			if logged := daemon.LogExpiry(log, c); logged == tt.wantQuiet {
				t.Errorf("LogExpiry = %v; want %v", logged, !tt.wantQuiet)
			}
			lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
			if tt.wantQuiet {
				if buf.String() != "" {
					t.Errorf("logged %q; want nothing", buf.String())
				}
				return
			}
			if len(lines) != len(tt.want) {
				t.Fatalf("logged %q; want %d lines", lines, len(tt.want))
			}
			for i, w := range tt.want {
				if !strings.HasPrefix(lines[i], w) {
					t.Errorf("line %d = %q; want it to start with %q", i, lines[i], w)
				}
			}
		})
	}
}
