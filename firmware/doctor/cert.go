package doctor

import (
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/reefer/tracker/provisioning/certs"
)

// CertResult is the outcome of CheckCertificate.
type CertResult struct {
	// Identity is the device identity, or nil when the files cannot be used
	// at all (unreadable, key mismatch, bad chain). It is loaded ignoring
	// dates, so the network checks still run and show their own verdict
	// when only the clock or the validity period is wrong.
	Identity *certs.Identity
	// Leaf is the first certificate of the file, nil if none parsed.
	Leaf *x509.Certificate
	// Checks are, in order: key file, certificate id, certificate chain,
	// certificate dates.
	Checks []Check
}

// CheckCertificate checks the device key and certificate chain the way
// certs.LoadIdentity does, but reports each aspect on its own line so one
// problem does not hide the others: the key file's permissions and match
// with the certificate; the leaf CN as DPS registration id; the chain order
// (leaf, then its intermediate); and the validity dates against now,
// judged by certs.Judge for each certificate of the chain (WARN under
// certs.ExpiryWarnWithin, FAIL under certs.ExpiryFailWithin or expired).
func CheckCertificate(certFile, keyFile string, now time.Time) (res CertResult) {
	keyCk := Check{Name: "key file", Status: OK}
	idCk := Check{Name: "certificate id", Status: OK}
	chainCk := Check{Name: "certificate chain", Status: OK}
	datesCk := Check{Name: "certificate dates", Status: OK}
	defer func() { res.Checks = []Check{keyCk, idCk, chainCk, datesCk} }()

	// What needs only the certificate file: CN and dates.
	chain, certErr := readChain(certFile)
	if certErr != nil {
		chainCk.Status, chainCk.Detail = Fail, certErr.Error()
		chainCk.Fix = fmt.Sprintf("install the device certificate chain (PEM: the device certificate, then its intermediate) at %s, as deploy/certs/device.sh writes <id>-chain.pem; or set certFile", certFile)
		for _, c := range []*Check{&idCk, &datesCk} {
			c.Status, c.Detail, c.Fix = Warn, "not checked: no readable certificate", "see certificate chain"
		}
	} else {
		res.Leaf = chain[0]
		cn := chain[0].Subject.CommonName
		if err := certs.ValidateRegistrationID(cn); err != nil {
			idCk.Status, idCk.Detail = Fail, fmt.Sprintf("CN %q is not a valid DPS registration id: %v", cn, err)
			idCk.Fix = "issue a device certificate whose CN is the device id: lowercase letters, digits and - . _ : (at most 64), e.g. deploy/certs/device.sh tracker-0042"
		} else {
			idCk.Detail = fmt.Sprintf("CN %q (the DPS registration id and hub device id)", cn)
		}
		datesCk = checkDates(chain, now)
	}

	// The key file's permissions, before anything reads it.
	keyCk = checkKeyFile(keyFile)

	// The rest through certs.LoadIdentity itself, so doctor and the tracker
	// cannot disagree. Its date check is sidestepped by loading at a moment
	// when the whole chain is valid; checkDates reports the real dates.
	if certErr != nil || keyCk.Status == Fail {
		if certErr == nil {
			chainCk.Status, chainCk.Detail, chainCk.Fix = Warn, "not checked: the key file must be usable first", "fix the key file, then run doctor again"
		}
		return res
	}
	id, err := certs.LoadIdentity(certFile, keyFile, validMoment(chain, now))
	switch {
	case err == nil:
		res.Identity = id
		keyCk.Detail += ", matches the certificate"
		chainCk.Detail = describeChain(chain)
	case errors.Is(err, certs.ErrChainOrder), errors.Is(err, certs.ErrMissingIntermediate):
		chainCk.Status, chainCk.Detail = Fail, err.Error()
		chainCk.Fix = fmt.Sprintf("%s must hold the device certificate first, then the intermediate CA that signed it (cat device.pem intermediate.pem > %s); deploy/certs/device.sh writes it as <id>-chain.pem", certFile, certFile)
	case errors.Is(err, certs.ErrBadRegistrationID):
		// Reported by idCk; the key match was not reached.
		chainCk.Detail = describeChain(chain)
	case errors.Is(err, certs.ErrKeyMismatch):
		keyCk.Status, keyCk.Detail = Fail, err.Error()
		keyCk.Fix = fmt.Sprintf("copy the key made together with this certificate to %s (deploy/certs/devices/<id>/), or install the certificate that belongs to this key", keyFile)
		chainCk.Detail = describeChain(chain)
	default:
		// A key that does not parse (encrypted, wrong type): everything
		// about the certificate was fine up to here.
		keyCk.Status, keyCk.Detail = Fail, err.Error()
		keyCk.Fix = fmt.Sprintf("install the device's unencrypted PEM private key (RSA or ECDSA) at %s with mode 0600", keyFile)
		chainCk.Status, chainCk.Detail, chainCk.Fix = Warn, "not checked: the key file must be usable first", "fix the key file, then run doctor again"
	}
	return res
}

func checkKeyFile(keyFile string) Check {
	ck := Check{Name: "key file"}
	fi, err := os.Stat(keyFile)
	switch {
	case err != nil:
		ck.Status, ck.Detail = Fail, err.Error()
		ck.Fix = fmt.Sprintf("install the device private key at %s (mode 0600), or set keyFile in the config", keyFile)
	case !fi.Mode().IsRegular():
		ck.Status, ck.Detail = Fail, keyFile+" is not a regular file"
		ck.Fix = "point keyFile at the PEM private key file itself"
	case fi.Mode().Perm()&0o077 != 0:
		ck.Status = Fail
		ck.Detail = fmt.Sprintf("%s has mode %04o: %v", keyFile, fi.Mode().Perm(), certs.ErrKeyPermissions)
		ck.Fix = "chmod 600 " + keyFile
	default:
		ck.Status, ck.Detail = OK, fmt.Sprintf("%s, mode %04o", keyFile, fi.Mode().Perm())
	}
	return ck
}

// readChain parses the certificates of certFile, in file order.
func readChain(certFile string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("device certificate: %w", err)
	}
	chain, err := certs.ParsePEMCerts(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certFile, err)
	}
	return chain, nil
}

func describeChain(chain []*x509.Certificate) string {
	names := make([]string, len(chain))
	for i, c := range chain {
		names[i] = fmt.Sprintf("%q", c.Subject.CommonName)
	}
	s := strings.Join(names, " ← issued by ")
	if len(chain) == 1 {
		return s + " (self-signed, alone)"
	}
	return s
}

// validMoment is a time at which every certificate of chain is valid, or
// now if there is none (then LoadIdentity reports the dates too).
func validMoment(chain []*x509.Certificate, now time.Time) time.Time {
	from, until := chain[0].NotBefore, chain[0].NotAfter
	for _, c := range chain[1:] {
		if c.NotBefore.After(from) {
			from = c.NotBefore
		}
		if c.NotAfter.Before(until) {
			until = c.NotAfter
		}
	}
	if !from.Before(until) {
		return now
	}
	return from.Add(until.Sub(from) / 2)
}

const day = 24 * time.Hour

func checkDates(chain []*x509.Certificate, now time.Time) Check {
	ck := Check{Name: "certificate dates", Status: OK}
	leaf := chain[0]
	date := func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 MST") }
	ck.Detail = fmt.Sprintf("valid %s to %s", date(leaf.NotBefore), date(leaf.NotAfter))
	clock := now.UTC().Format(time.RFC3339)
	for i, c := range chain {
		what := "the device certificate"
		renew := fmt.Sprintf("issue a new device certificate (deploy/certs/device.sh --force %s) and install it; the tracker registers again by itself", leaf.Subject.CommonName)
		if i > 0 {
			what = fmt.Sprintf("the issuing CA %q", c.Subject.CommonName)
			renew = "renew that CA and re-issue the device certificates signed by it"
		}
		left := c.NotAfter.Sub(now)
		switch state := certs.Judge(c.NotAfter, now); {
		case now.Before(c.NotBefore):
			ck.Status = Fail
			ck.Detail = fmt.Sprintf("%s is valid from %s, but the clock says %s", what, date(c.NotBefore), clock)
			ck.Fix = "if the clock is wrong (see clock), wait for time synchronisation; otherwise the certificate was issued with a future start date: re-issue it"
			return ck
		case state == certs.ExpiryExpired:
			ck.Status = Fail
			ck.Detail = fmt.Sprintf("%s expired on %s (clock says %s)", what, date(c.NotAfter), clock)
			ck.Fix = renew
			return ck
		case state == certs.ExpiryFail && ck.Status != Fail:
			ck.Status = Fail
			ck.Detail = fmt.Sprintf("%s expires on %s, in %s: the tracker goes dark then", what, date(c.NotAfter), humanDays(left))
			ck.Fix = "now: " + renew
		case state == certs.ExpiryWarn && ck.Status == OK:
			ck.Status = Warn
			ck.Detail = fmt.Sprintf("%s expires on %s, in %s", what, date(c.NotAfter), humanDays(left))
			ck.Fix = "before then, " + renew
		}
	}
	if ck.Status == OK {
		ck.Detail += fmt.Sprintf(" (%s left)", humanDays(leaf.NotAfter.Sub(now)))
	}
	return ck
}

func humanDays(d time.Duration) string {
	switch {
	case d >= 2*day:
		return fmt.Sprintf("%d days", int(d/day))
	case d >= 2*time.Hour:
		return fmt.Sprintf("%d hours", int(d/time.Hour))
	default:
		return d.Round(time.Minute).String()
	}
}
