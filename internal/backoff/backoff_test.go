package backoff

import (
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	t.Parallel()
	base, capd := 2*time.Second, time.Minute
	tests := []struct {
		attempt int
		floor   time.Duration
		rnd     float64
		want    time.Duration
	}{
		{0, 0, 0.5, time.Second},
		{1, 0, 0.5, 2 * time.Second},
		{2, 0, 0.5, 4 * time.Second},
		{3, 0, 1 - 1e-9, 16*time.Second - 16},
		{4, 0, 0.999, time.Duration(0.999 * float64(32*time.Second))},
		{5, 0, 0.5, 30 * time.Second},  // 64 s capped to 60 s
		{50, 0, 0.5, 30 * time.Second}, // no overflow on huge attempts
		{1000, 0, 0.5, 30 * time.Second},
		{3, 0, 0, 0}, // full jitter may pick zero
		// With a retry-after floor the jitter goes on top, over a window of
		// at least the floor, so a throttled fleet does not return at once.
		{3, 7 * time.Second, 0, 7 * time.Second},
		{3, 7 * time.Second, 0.5, 7*time.Second + 8*time.Second},         // window: the 16 s ceiling
		{0, 7 * time.Second, 0.5, 7*time.Second + 3500*time.Millisecond}, // window: the 7 s floor
		{0, 5 * time.Minute, 0.5, 7*time.Minute + 30*time.Second},        // the floor may exceed max
	}
	for _, tt := range tests {
		if got := Delay(tt.attempt, base, capd, tt.floor, tt.rnd); got != tt.want {
			t.Errorf("Delay(%d, floor %s, rnd %v) = %s; want %s", tt.attempt, tt.floor, tt.rnd, got, tt.want)
		}
	}
}

// The back-off must stay inside [0, ceiling) for any sample, or a fleet
// would not spread out.
func TestBackoffBounds(t *testing.T) {
	t.Parallel()
	for attempt := range 12 {
		ceil := min(time.Second<<attempt, time.Minute)
		for _, rnd := range []float64{0, 0.25, 0.5, 0.75, 1 - 1e-12} {
			if got := Delay(attempt, time.Second, time.Minute, 0, rnd); got < 0 || got >= ceil {
				t.Errorf("Delay(%d, rnd %v) = %s; want in [0, %s)", attempt, rnd, got, ceil)
			}
		}
	}
}

// Equal jitter keeps at least half the ceiling; full jitter may pick zero.
func TestJitter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		ceil      time.Duration
		keep, rnd float64
		want      time.Duration
	}{
		{8 * time.Second, 0, 0, 0},
		{8 * time.Second, 0, 0.5, 4 * time.Second},
		{8 * time.Second, 0.5, 0, 4 * time.Second},
		{8 * time.Second, 0.5, 0.5, 6 * time.Second},
		{8 * time.Second, 0.5, 1 - 1e-12, 8 * time.Second},
	}
	for _, tt := range tests {
		if got := Jitter(tt.ceil, tt.keep, tt.rnd); got.Round(time.Millisecond) != tt.want {
			t.Errorf("Jitter(%s, keep %v, rnd %v) = %s; want %s", tt.ceil, tt.keep, tt.rnd, got, tt.want)
		}
	}
}
