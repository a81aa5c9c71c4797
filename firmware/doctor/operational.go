package doctor

import (
	"errors"
	"fmt"
	"time"

	"github.com/reefer/tracker/provisioning/certs"
	"github.com/reefer/tracker/provisioning/opcert"
)

// CheckOperational checks the hub certificate DPS issued
// (certificateIssuance.enabled, docs/protocol.md A.5) in stateDir: there
// is one, it is valid, and its renewal (after renewAt of its lifetime) is
// not late. It returns the identity the tracker's next hub connection
// would use (a pending one the hub has not accepted yet first), or nil.
func CheckOperational(stateDir string, renewAt float64, now time.Time) (Check, *certs.Identity) {
	ck := Check{Name: "operational certificate"}
	st := opcert.Store{Dir: stateDir}
	date := func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 MST") }
	cur, err := st.Current()
	pend, perr := st.Pending()
	next := cur
	note := ""
	if perr == nil && opcert.Usable(pend, now) {
		next = pend
		note = fmt.Sprintf("; a new one (valid until %s) waits for the hub to accept it", date(pend.Leaf.NotAfter))
	}
	const policyFix = "DPS issues it when the tracker registers: the enrollment must name a credential policy " +
		"(credentialPolicyName), else DPS refuses the request; the tracker's log and the reported provisioning.renewalError say why"
	switch {
	case errors.Is(err, opcert.ErrNone) && next != nil:
		ck.Status, ck.Detail = OK, fmt.Sprintf("issued, valid until %s, waiting for the hub to accept it", date(next.Leaf.NotAfter))
		return ck, next
	case errors.Is(err, opcert.ErrNone):
		ck.Status, ck.Detail = Warn, "none yet in "+stateDir+": the tracker asks DPS for one at its next registration"
		ck.Fix = policyFix
		return ck, nil
	case err != nil:
		ck.Status, ck.Detail = Warn, err.Error()
		ck.Fix = "nothing to do: the tracker asks DPS for a new one at its next start. " + policyFix
		return ck, next
	}
	v := opcert.Validity(cur.Leaf, renewAt, now)
	due := opcert.RenewalDue(cur.Leaf, renewAt)
	switch v.State {
	case certs.ExpiryOK:
		ck.Status = OK
		ck.Detail = fmt.Sprintf("CN %q, valid until %s (%s left), renewal due %s%s", cur.RegistrationID, date(cur.Leaf.NotAfter),
			humanDays(cur.Leaf.NotAfter.Sub(now)), date(due), note)
	case certs.ExpiryExpired:
		ck.Status = Fail
		ck.Detail = fmt.Sprintf("expired on %s%s", date(cur.Leaf.NotAfter), note)
		ck.Fix = "the tracker asks DPS for a new one at its next connection. " + policyFix
	default:
		ck.Status = Warn
		if v.State == certs.ExpiryFail {
			ck.Status = Fail
		}
		ck.Detail = fmt.Sprintf("renewal late since %s: expires on %s, in %s%s", date(due), date(cur.Leaf.NotAfter),
			humanDays(cur.Leaf.NotAfter.Sub(now)), note)
		ck.Fix = "the tracker keeps retrying. " + policyFix
	}
	return ck, next
}
