package agent

import "github.com/reefer/tracker/internal/clock"

// Clock is the time source of the agent (internal/clock): the wall clock for
// messages, a monotonic one for when samples really were taken, and
// timers. Tests inject agenttest.Clock to step the wall clock apart from
// the monotonic one and to drive sampling, back-off and flush deadlines
// without sleeping.
type Clock = clock.Clock

// Ticker is the part of *time.Ticker the agent uses.
type Ticker = clock.Ticker

// SystemClock returns the real clock.
func SystemClock() Clock { return clock.System() }
