// Package clock is the device's time source as code that must survive a
// wall clock that NTP steps takes it: the wall time for what goes into
// messages, a monotonic reading for elapsed time, and timers. System is the
// real one; internal/faketime.Clock is the hand-written fake for tests that
// step the wall clock apart from the monotonic one or run outside a
// testing/synctest bubble (real sockets), which the time package alone
// cannot fake.
package clock

import "time"

// Clock is a time source with a wall and a monotonic clock.
type Clock interface {
	// Now is the wall clock: what goes into messages. On a board without a
	// battery-backed RTC it may be decades off until NTP steps it.
	Now() time.Time
	// Monotonic is a reading of a clock that NTP and `date -s` never step:
	// only the difference of two readings means anything.
	Monotonic() time.Duration
	// NewTicker returns a ticker that fires every d, like time.NewTicker.
	NewTicker(d time.Duration) Ticker
	// After fires once after d, like time.After.
	After(d time.Duration) <-chan time.Time
}

// Ticker is the part of *time.Ticker a Clock's user needs.
type Ticker interface {
	C() <-chan time.Time
	// Reset stops the ticker and restarts it with period d from now.
	Reset(d time.Duration)
	Stop()
}

// System returns the real clock.
func System() Clock { return system{} }

type system struct{}

// monoEpoch anchors system.Monotonic: time.Since of a time.Now value
// subtracts the monotonic readings both carry, never the wall times.
var monoEpoch = time.Now()

func (system) Now() time.Time                         { return time.Now() }
func (system) Monotonic() time.Duration               { return time.Since(monoEpoch) }
func (system) After(d time.Duration) <-chan time.Time { return time.After(d) }
func (system) NewTicker(d time.Duration) Ticker       { return systemTicker{time.NewTicker(d)} }

type systemTicker struct{ t *time.Ticker }

func (t systemTicker) C() <-chan time.Time   { return t.t.C }
func (t systemTicker) Reset(d time.Duration) { t.t.Reset(d) }
func (t systemTicker) Stop()                 { t.t.Stop() }
