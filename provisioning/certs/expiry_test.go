package certs

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"
	"time"
)

func TestJudgeAndValidity(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	for _, tt := range []struct {
		left  time.Duration
		state ExpiryState
		days  int
	}{
		{400 * day, ExpiryOK, 400},
		{ExpiryWarnWithin, ExpiryOK, 30},
		{ExpiryWarnWithin - time.Second, ExpiryWarn, 29},
		{ExpiryFailWithin, ExpiryWarn, 7},
		{ExpiryFailWithin - time.Second, ExpiryFail, 6},
		{time.Hour, ExpiryFail, 0},
		{0, ExpiryFail, 0},
		{-time.Second, ExpiryExpired, -1},
		{-day, ExpiryExpired, -1},
		{-day - time.Second, ExpiryExpired, -2},
	} {
		c := &x509.Certificate{Subject: pkix.Name{CommonName: "tracker-1"}, NotAfter: now.Add(tt.left)}
		v := ValidityOf(c, now)
		if v.State != tt.state || v.DaysLeft != tt.days || Judge(c.NotAfter, now) != tt.state {
			t.Errorf("%v left: %+v; want state %s, %d days", tt.left, v, tt.state, tt.days)
		}
		if v.Subject != "tracker-1" || !v.NotAfter.Equal(c.NotAfter) {
			t.Errorf("%v left: %+v", tt.left, v)
		}
	}
}
