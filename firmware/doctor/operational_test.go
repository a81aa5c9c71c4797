package doctor

import (
	"testing"
	"time"

	"github.com/reefer/tracker/provisioning/certs/certstest"
	"github.com/reefer/tracker/provisioning/opcert"
)

// issue writes a bundle valid from nb to na into s, pending or promoted.
func issue(t *testing.T, s opcert.Store, ca *certstest.Cert, nb, na time.Time, promote bool) {
	t.Helper()
	req, err := opcert.NewRequest("sensor-thl-001", nil)
	if err != nil {
		t.Fatal(err)
	}
	der := ca.SignCSR(t, req.CSR, "sensor-thl-001", certstest.Options{NotBefore: nb, NotAfter: na}).Raw
	if _, err := s.SavePending(req, [][]byte{der, ca.Cert.Raw}); err != nil {
		t.Fatal(err)
	}
	if promote {
		if err := s.Promote(); err != nil {
			t.Fatal(err)
		}
	}
}

// The operational certificate with an injected clock: quiet until its
// renewal is due, WARN once it is late, FAIL under 7 days or expired.
func TestCheckOperational(t *testing.T) {
	t.Parallel()
	now := time.Now().Truncate(time.Second)
	ca := certstest.Root(t, "Issuing CA", certstest.Options{NotBefore: now.Add(-1000 * day), NotAfter: now.Add(1000 * day)})
	for _, tt := range []struct {
		name           string
		setup          func(s opcert.Store)
		st             Status
		detail, fix    string
		wantIdentityNB time.Time
	}{
		{"none", func(opcert.Store) {}, Warn, "none yet", "credentialPolicyName", time.Time{}},
		{"pending only", func(s opcert.Store) { issue(t, s, ca, now.Add(-day), now.Add(29*day), false) }, OK, "waiting for the hub", "", now.Add(-day)},
		{"fresh", func(s opcert.Store) { issue(t, s, ca, now.Add(-day), now.Add(29*day), true) }, OK, "(29 days left), renewal due", "", now.Add(-day)},
		{"renewal late", func(s opcert.Store) { issue(t, s, ca, now.Add(-21*day), now.Add(9*day), true) }, Warn, "renewal late since", "keeps retrying", now.Add(-21 * day)},
		{"under a week", func(s opcert.Store) { issue(t, s, ca, now.Add(-25*day), now.Add(5*day), true) }, Fail, "in 5 days", "keeps retrying", now.Add(-25 * day)},
		{"expired, renewed one waiting", func(s opcert.Store) {
			issue(t, s, ca, now.Add(-31*day), now.Add(-day), true)
			issue(t, s, ca, now.Add(-time.Hour), now.Add(30*day), false)
		}, Fail, "a new one (valid until", "next connection", now.Add(-time.Hour)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := opcert.Store{Dir: t.TempDir(), NoSync: true}
			tt.setup(s)
			ck, id := CheckOperational(s.Dir, opcert.DefaultRenewAt, now)
			wantCheck(t, ck, "operational certificate", tt.st, tt.detail, tt.fix)
			switch {
			case tt.wantIdentityNB.IsZero() && id != nil:
				t.Errorf("identity %v; want none", id.Leaf.NotBefore)
			case !tt.wantIdentityNB.IsZero() && (id == nil || !id.Leaf.NotBefore.Equal(tt.wantIdentityNB)):
				t.Errorf("identity %+v; want the one from %v", id, tt.wantIdentityNB)
			}
		})
	}
}
