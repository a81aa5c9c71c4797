// Package health tells systemd how the tracker is doing, over the sd_notify
// protocol: READY=1 once start-up is done (the unit is Type=notify),
// STATUS= lines for `systemctl status`, STOPPING=1 on shutdown, and
// WATCHDOG=1 keep-alives while the main loop makes progress.
//
// Outside systemd (NOTIFY_SOCKET unset) every call is a no-op, so the same
// binary runs on a laptop, in tests and on the board.
//
// The watchdog pings only while the main loop proves it is alive by calling
// Beat: a wedged loop (a stuck I2C read, a deadlock) stops the pings, and
// systemd kills and restarts the tracker after WatchdogSec. A goroutine that
// pinged unconditionally would only prove the process exists.
package health

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// notify sends one state to systemd; it reports false, nil outside systemd.
func notify(state string) error {
	if _, err := daemon.SdNotify(false, state); err != nil {
		return fmt.Errorf("sd_notify %s: %w", strings.SplitN(state, "=", 2)[0], err)
	}
	return nil
}

// Ready tells systemd that start-up finished (READY=1).
func Ready() error { return notify(daemon.SdNotifyReady) }

// Stopping tells systemd that the tracker is shutting down (STOPPING=1).
func Stopping() error { return notify(daemon.SdNotifyStopping) }

// Status sets the one-line status shown by `systemctl status`. Newlines
// would start new assignments in the protocol, so they become spaces.
func Status(msg string) error {
	msg = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(msg)
	return notify("STATUS=" + msg)
}

// WatchdogInterval returns the unit's WatchdogSec, from WATCHDOG_USEC, or 0
// when the watchdog is off or meant for another process (WATCHDOG_PID).
func WatchdogInterval() (time.Duration, error) {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return 0, fmt.Errorf("systemd watchdog: %w", err)
	}
	return d, nil
}

// WatchdogOptions configure a Watchdog. Zero values take real defaults.
type WatchdogOptions struct {
	// Interval is the watchdog timeout. Zero reads WatchdogInterval(); if
	// that is also zero the watchdog is disabled.
	Interval time.Duration
	Logger   *slog.Logger // nil discards
}

// Watchdog sends WATCHDOG=1 every Interval/2 while Beat was called within
// the last Interval. Safe for concurrent use. Its tests run it in a
// testing/synctest bubble, whose fake clock drives its ticker and time.Now.
type Watchdog struct {
	interval time.Duration
	log      *slog.Logger

	mu       sync.Mutex
	lastBeat time.Time // keeps the monotonic reading: immune to NTP steps
	stalled  bool
}

// NewWatchdog returns a Watchdog. Start counts as a beat, so the main loop
// has one interval to reach its first Beat.
func NewWatchdog(opts WatchdogOptions) (*Watchdog, error) {
	w := &Watchdog{interval: opts.Interval, log: opts.Logger}
	if w.interval == 0 {
		d, err := WatchdogInterval()
		if err != nil {
			return nil, err
		}
		w.interval = d
	}
	if w.interval < 0 {
		return nil, fmt.Errorf("watchdog interval %v: must not be negative", w.interval)
	}
	if w.log == nil {
		w.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	w.lastBeat = time.Now()
	return w, nil
}

// Interval is the watchdog timeout; 0 means disabled.
func (w *Watchdog) Interval() time.Duration { return w.interval }

// Beat records that the main loop made progress. Call it every iteration,
// and from any wait longer than the interval.
func (w *Watchdog) Beat() {
	w.mu.Lock()
	w.lastBeat = time.Now()
	w.mu.Unlock()
}

// Healthy reports whether Beat was called within the last interval.
func (w *Watchdog) Healthy() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.healthyLocked()
}

func (w *Watchdog) healthyLocked() bool {
	return time.Since(w.lastBeat) < w.interval
}

// Run pings systemd until ctx is done. It returns at once when the watchdog
// is disabled. A failed ping is logged, not fatal: systemd acts on silence.
func (w *Watchdog) Run(ctx context.Context) error {
	if w.interval == 0 {
		return nil
	}
	tick := time.NewTicker(w.interval / 2)
	defer tick.Stop()
	w.log.Info("systemd watchdog on", "interval", w.interval)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			w.check()
		}
	}
}

// check sends one ping if healthy, logging when the state changes.
func (w *Watchdog) check() {
	w.mu.Lock()
	healthy := w.healthyLocked()
	since := time.Since(w.lastBeat)
	wasStalled := w.stalled
	w.stalled = !healthy
	w.mu.Unlock()

	if !healthy {
		if !wasStalled {
			w.log.Error("main loop stalled; withholding watchdog pings so systemd restarts the tracker",
				"since_last_beat", since, "interval", w.interval)
		}
		return
	}
	if wasStalled {
		w.log.Info("main loop recovered; watchdog pings resume", "since_last_beat", since)
	}
	if err := notify(daemon.SdNotifyWatchdog); err != nil {
		w.log.Warn("watchdog ping failed", "err", err)
	}
}
