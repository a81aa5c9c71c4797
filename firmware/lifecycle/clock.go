package lifecycle

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"time"
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
	floor := buildFloor()
	if nb, err := leafNotBefore(certFile); err == nil && nb.After(floor) {
		floor = nb
	}
	return floor
}

// buildFloor is the later of MinClock and the VCS commit time of the binary.
func buildFloor() time.Time {
	floor := MinClock
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key != "vcs.time" {
				continue
			}
			if t, err := time.Parse(time.RFC3339, s.Value); err == nil && t.After(floor) {
				floor = t
			}
		}
	}
	return floor
}

// leafNotBefore reads the first certificate of a PEM file.
func leafNotBefore(certFile string) (time.Time, error) {
	data, err := os.ReadFile(certFile)
	if err != nil {
		return time.Time{}, err
	}
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return time.Time{}, fmt.Errorf("%s: no certificate", certFile)
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return time.Time{}, err
		}
		return c.NotBefore, nil
	}
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
