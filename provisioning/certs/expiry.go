package certs

import (
	"crypto/x509"
	"math"
	"time"
)

// The expiry thresholds: the one place that says when a certificate's end
// is near. `tracker doctor`, getStatus, the reported property and the
// daily log line all judge with Judge.
const (
	// ExpiryWarnWithin: under this much validity left is a warning, time
	// for an operator (or the tracker's renewal) to act.
	ExpiryWarnWithin = 30 * 24 * time.Hour
	// ExpiryFailWithin: under this much left is a failure: the tracker
	// goes dark within the week unless a new certificate arrives.
	ExpiryFailWithin = 7 * 24 * time.Hour
)

// ExpiryState is Judge's verdict. The values are stable strings: they
// appear in the reported properties.
type ExpiryState string

const (
	ExpiryOK      ExpiryState = "ok"      // ExpiryWarnWithin or more left
	ExpiryWarn    ExpiryState = "warn"    // less than ExpiryWarnWithin left
	ExpiryFail    ExpiryState = "fail"    // less than ExpiryFailWithin left
	ExpiryExpired ExpiryState = "expired" // past NotAfter
)

// Judge says how close notAfter is at now.
func Judge(notAfter, now time.Time) ExpiryState {
	switch left := notAfter.Sub(now); {
	case left < 0:
		return ExpiryExpired
	case left < ExpiryFailWithin:
		return ExpiryFail
	case left < ExpiryWarnWithin:
		return ExpiryWarn
	}
	return ExpiryOK
}

// Validity is one certificate's end as the tracker reports it.
type Validity struct {
	// Subject is the certificate's subject CN.
	Subject  string    `json:"subject"`
	NotAfter time.Time `json:"notAfter"`
	// DaysLeft is the whole days until NotAfter, rounded down; negative
	// once expired (-1 on the first day after).
	DaysLeft int         `json:"daysLeft"`
	State    ExpiryState `json:"state"`
}

// ValidityOf describes c at now.
func ValidityOf(c *x509.Certificate, now time.Time) Validity {
	days := int(math.Floor(c.NotAfter.Sub(now).Hours() / 24)) // down, not toward zero
	return Validity{Subject: c.Subject.CommonName, NotAfter: c.NotAfter.UTC(), DaysLeft: days, State: Judge(c.NotAfter, now)}
}
