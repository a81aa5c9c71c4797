package lifecycle

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reefer/tracker/internal/syncbuf"
	"github.com/reefer/tracker/provisioning/certs/certstest"
)

// jumpingClock reads 1970 for the first n calls, then the real time, like a
// board without an RTC until NTP steps the clock.
func jumpingClock(n int64, after time.Time) func() time.Time {
	var calls atomic.Int64
	return func() time.Time {
		if calls.Add(1) > n {
			return after
		}
		return time.Unix(0, 0)
	}
}

func TestWaitForClock(t *testing.T) {
	t.Parallel()
	floor := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	t.Run("already set", func(t *testing.T) {
		t.Parallel()
		var logs syncbuf.Buffer
		err := WaitForClock(context.Background(), func() time.Time { return floor }, floor, time.Millisecond, slog.New(slog.NewTextHandler(&logs, nil)))
		if err != nil || logs.String() != "" {
			t.Errorf("WaitForClock(set clock) = %v, logs %q; want nil and silence", err, logs.String())
		}
	})
	t.Run("waits for the jump and logs sparingly", func(t *testing.T) {
		t.Parallel()
		var logs syncbuf.Buffer
		// 1 initial read + 50 polls in 1970, then set. With a log every 10
		// polls that is the start line, 5 reminders and the "clock set" line.
		now := jumpingClock(51, floor.Add(time.Hour))
		err := waitForClock(context.Background(), now, floor, time.Millisecond, 10*time.Millisecond, slog.New(slog.NewTextHandler(&logs, nil)))
		if err != nil {
			t.Fatalf("waitForClock = %v", err)
		}
		out := logs.String()
		if n := strings.Count(out, "\n"); n != 7 {
			t.Errorf("%d log lines; want 7 (start, 5 reminders, done):\n%s", n, out)
		}
		for _, want := range []string{"clock is not set yet", "need_at_least=2026-01-01T00:00:00Z", "clock=1970-01-01T00:00:00Z", "clock set"} {
			if !strings.Contains(out, want) {
				t.Errorf("logs lack %q:\n%s", want, out)
			}
		}
	})
	t.Run("context ends", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		err := WaitForClock(ctx, func() time.Time { return time.Unix(0, 0) }, floor, time.Millisecond, nil)
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "1970-01-01") {
			t.Errorf("WaitForClock = %v; want a deadline error naming the clock", err)
		}
	})
}

func TestClockFloor(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := certstest.Root(t, "root", certstest.Options{})
	notBefore := time.Date(2027, 3, 4, 5, 6, 7, 0, time.UTC)
	leaf := ca.Leaf(t, regID, certstest.Options{NotBefore: notBefore})
	old := ca.Leaf(t, regID, certstest.Options{NotBefore: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)})
	newPath, oldPath := filepath.Join(dir, "new.pem"), filepath.Join(dir, "old.pem")
	certstest.WriteCerts(t, newPath, leaf.Cert, ca.Cert)
	certstest.WriteCerts(t, oldPath, old.Cert, ca.Cert)
	tests := []struct {
		file string
		want time.Time
	}{
		{newPath, notBefore},                          // a leaf issued after the build
		{oldPath, buildFloor()},                       // an old leaf: the build floor
		{filepath.Join(dir, "missing"), buildFloor()}, // unreadable: the build floor
	}
	for _, tt := range tests {
		if got := ClockFloor(tt.file); !got.Equal(tt.want) {
			t.Errorf("ClockFloor(%q) = %v; want %v", filepath.Base(tt.file), got, tt.want)
		}
	}
	if buildFloor().Before(MinClock) {
		t.Errorf("buildFloor() = %v; before MinClock %v", buildFloor(), MinClock)
	}
}

// Floor says which bound sets the floor, for doctor's clock check.
func TestFloorNamesItsBound(t *testing.T) {
	t.Parallel()
	built := MinClock.Add(24 * time.Hour)
	leaf := built.Add(24 * time.Hour)
	tests := []struct {
		built, notBefore time.Time
		want             time.Time
		why              string
	}{
		{time.Time{}, time.Time{}, MinClock, "the earliest date this firmware accepts"},
		{built, time.Time{}, built, "this firmware was built"},
		{built, leaf, leaf, "the device certificate's start"},
		{leaf, built, leaf, "this firmware was built"},
	}
	for _, tt := range tests {
		got, why := Floor(tt.built, tt.notBefore)
		if !got.Equal(tt.want) || why != tt.why {
			t.Errorf("Floor(%v, %v) = %v, %q; want %v, %q", tt.built, tt.notBefore, got, why, tt.want, tt.why)
		}
	}
}
