package lifecycle

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/reefer/tracker/firmware/buildinfo"
	"github.com/reefer/tracker/provisioning/certs"
)

// MinClock is the earliest time this firmware believes. It predates every
// build of it; bump it now and then. A clock before it is a board that booted
// without a battery-backed RTC (1970, or fake-hwclock's last saved time) and
// has not synchronised yet.
var MinClock = time.Date(2026, time.January, 1, 0, 0, 0, 0, time.UTC)

// clockLogEvery spaces the "still waiting" lines: time sync may take minutes
// on a cellular link, and one line per poll would flood the journal.
const clockLogEvery = 30 * time.Second

// ClockFloor is the time the clock must reach before the tracker may use TLS:
// the latest of MinClock, the commit time stamped into the binary (when it
// was built from git) and the NotBefore of the device certificate in
// certFile. The certificate's NotBefore matters because certs.LoadIdentity
// (rightly) refuses a certificate that is not yet valid, and a freshly
// issued one is exactly that for a board whose clock lags. The server's
// certificate is issued earlier than ours in practice, so this floor also
// makes its verification succeed. An unreadable certFile is not an error
// here: the floor falls back to the build time and LoadIdentity reports the
// file problem properly.
//
// The daemon also gives it to the agent (agent.Config.ClockFloor): readings
// taken below it are held and dated from the monotonic clock once the clock
// is set, so no message carries a timestamp from before it.
func ClockFloor(certFile string) time.Time {
	var notBefore time.Time
	if chain, err := certs.LoadChain(certFile); err == nil {
		notBefore = chain[0].NotBefore
	}
	floor, _ := Floor(buildinfo.Read("").Time, notBefore)
	return floor
}

// buildFloor is the floor before any certificate: MinClock or the build.
func buildFloor() time.Time {
	floor, _ := Floor(buildinfo.Read("").Time, time.Time{})
	return floor
}

// Floor is ClockFloor from its parts: the latest of MinClock, built (the
// binary's commit time; zero when unknown) and notBefore (the device
// certificate's; zero when unknown). why names which one it is, for a
// technician: "the earliest date this firmware accepts", "this firmware was
// built" or "the device certificate's start".
func Floor(built, notBefore time.Time) (floor time.Time, why string) {
	floor, why = MinClock, "the earliest date this firmware accepts"
	if built.After(floor) {
		floor, why = built, "this firmware was built"
	}
	if notBefore.After(floor) {
		floor, why = notBefore, "the device certificate's start"
	}
	return floor, why
}

// WaitForClock returns once now() is at or after minTime, polling every poll
// (1 s when poll <= 0), or with ctx's cause when ctx ends first. It logs once
// when it starts waiting, then every 30 s of waiting, and once when the clock
// has jumped forward, so the journal tells the story without flooding.
func WaitForClock(ctx context.Context, now func() time.Time, minTime time.Time, poll time.Duration, log *slog.Logger) error {
	return waitForClock(ctx, now, minTime, poll, clockLogEvery, log)
}

func waitForClock(ctx context.Context, now func() time.Time, minTime time.Time, poll, logEvery time.Duration, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if poll <= 0 {
		poll = time.Second
	}
	start := now()
	if !start.Before(minTime) {
		return nil
	}
	log.Warn("clock is not set yet; waiting for time synchronisation before using TLS",
		"clock", start.UTC().Format(time.RFC3339), "need_at_least", minTime.UTC().Format(time.RFC3339),
		"hint", "check NTP (timedatectl, systemd-timesyncd) or the network; a board without a battery-backed RTC boots in the past; "+
			"if the clock is right, the device certificate is not valid yet (its NotBefore is in the future)")
	t := time.NewTicker(poll)
	defer t.Stop()
	var waited, sinceLog time.Duration
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the clock to reach %s (it says %s): %w",
				minTime.UTC().Format(time.RFC3339), now().UTC().Format(time.RFC3339), context.Cause(ctx))
		case <-t.C:
		}
		// Count polls, not now(): the clock under watch is the one that jumps.
		waited += poll
		sinceLog += poll
		n := now()
		if !n.Before(minTime) {
			log.Info("clock set", "clock", n.UTC().Format(time.RFC3339), "waited", waited.Round(time.Second))
			return nil
		}
		if sinceLog >= logEvery {
			sinceLog = 0
			log.Warn("still waiting for the clock", "clock", n.UTC().Format(time.RFC3339),
				"need_at_least", minTime.UTC().Format(time.RFC3339), "waited", waited.Round(time.Second))
		}
	}
}
