package agent

import "time"

// Clock is the time source of the agent. Tests inject agenttest.Clock to
// drive sampling, back-off and flush deadlines without sleeping.
type Clock interface {
	// Now is the wall clock: what goes into messages. On a board without a
	// battery-backed RTC it may be decades off until NTP steps it.
	Now() time.Time
	// Monotonic is a reading of a clock that NTP and `date -s` never step:
	// only the difference of two readings means anything. The agent uses it
	// to work out when a sample really was taken once the wall clock is set.
	Monotonic() time.Duration
	// NewTicker returns a ticker that fires every d, like time.NewTicker.
	NewTicker(d time.Duration) Ticker
	// After fires once after d, like time.After.
	After(d time.Duration) <-chan time.Time
}

// Ticker is the part of *time.Ticker the agent uses.
type Ticker interface {
	C() <-chan time.Time
	// Reset stops the ticker and restarts it with period d from now.
	Reset(d time.Duration)
	Stop()
}

// SystemClock returns the wall clock.
func SystemClock() Clock { return systemClock{} }

type systemClock struct{}

// monoEpoch anchors systemClock.Monotonic: time.Since of a time.Now value
// subtracts the monotonic readings both carry, never the wall times.
var monoEpoch = time.Now()

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) Monotonic() time.Duration               { return time.Since(monoEpoch) }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
func (systemClock) NewTicker(d time.Duration) Ticker       { return systemTicker{time.NewTicker(d)} }

type systemTicker struct{ t *time.Ticker }

func (t systemTicker) C() <-chan time.Time   { return t.t.C }
func (t systemTicker) Reset(d time.Duration) { t.t.Reset(d) }
func (t systemTicker) Stop()                 { t.t.Stop() }
