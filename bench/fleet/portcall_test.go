package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// A small port call end to end: every re-enrolled tracker sends again,
// every disenrolled one is refused and sends nothing after that, and the
// progress and report say so.
func TestPortCallSmall(t *testing.T) {
	t.Parallel()
	const n = 4
	var progress bytes.Buffer
	r, err := PortCall(t.Context(), testFleet(t, 2*n), PortCallOptions{Containers: n, RetryMin: time.Second, RetryMax: 2 * time.Second,
		Interval: 300 * time.Millisecond, Timeout: 2 * time.Minute, Progress: &progress})
	if err != nil {
		t.Fatalf("PortCall: %v\nprogress:\n%s", err, progress.String())
	}
	if r.Sending.N != n || r.Stopped.N != n || r.LastMessage.N != n {
		t.Errorf("measured %d sending, %d stopped, %d last messages; want %d each", r.Sending.N, r.Stopped.N, r.LastMessage.N, n)
	}
	if r.LateMessages != 0 {
		t.Errorf("%d messages acknowledged from trackers after DPS refused them", r.LateMessages)
	}
	if !(0 < r.Sending.P50 && r.Sending.P50 <= r.Sending.Max && r.Sending.Max <= r.Wall && r.Stopped.Max <= r.Wall) {
		t.Errorf("sending p50 %s max %s, stopped max %s, wall %s: out of order", r.Sending.P50, r.Sending.Max, r.Stopped.Max, r.Wall)
	}
	// Each re-enrolled tracker connects to the hub after T0 (a DPS
	// registration may have been under way at T0, so DPS is not counted).
	if r.HubConns < n {
		t.Errorf("re-enrolled trackers opened %d hub connections after T0; want at least %d", r.HubConns, n)
	}
	if r.DisenrollOps != 2 {
		t.Errorf("%d DPS bulk operations for %d+%d devices; want 2", r.DisenrollOps, n, n)
	}
	for _, want := range []string{"T0: bulk disenroll 4 outgoing and bulk re-enroll 4 incoming", "re-enrolled sending 4/4, disenrolled stopped 4/4"} {
		if !strings.Contains(progress.String(), want) {
			t.Errorf("progress lacks %q:\n%s", want, progress.String())
		}
	}
	var out bytes.Buffer
	printPortCall(&out, r)
	if !strings.Contains(out.String(), "sending again (first ack):") || !strings.Contains(out.String(), "messages acknowledged after refusal: 0") {
		t.Errorf("report:\n%s", out.String())
	}
}

func TestPortCallNeedsTheCertificates(t *testing.T) {
	t.Parallel()
	if _, err := PortCall(t.Context(), testFleet(t, 3), PortCallOptions{Containers: 2}); err == nil || !strings.Contains(err.Error(), "needs 4 device certificates") {
		t.Errorf("PortCall with too few certificates = %v", err)
	}
}
