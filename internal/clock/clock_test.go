package clock

import (
	"testing"
	"time"
)

func TestSystemMonotonic(t *testing.T) {
	t.Parallel()
	c := System()
	m0 := c.Monotonic()
	time.Sleep(2 * time.Millisecond)
	if d := c.Monotonic() - m0; d < 2*time.Millisecond || d > time.Minute {
		t.Errorf("Monotonic() moved %v over a 2 ms sleep", d)
	}
}
