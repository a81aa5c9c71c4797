package agenttest

import (
	"time"

	"github.com/reefer/tracker/internal/faketime"
)

// Clock is the manual agent.Clock of tests, internal/faketime's.
type Clock = faketime.Clock

// NewClock returns a clock whose wall time is start and whose monotonic
// reading is 0.
func NewClock(start time.Time) *Clock { return faketime.NewClock(start) }
