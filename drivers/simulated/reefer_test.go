package simulated

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/reefer/tracker/drivers"
)

var reeferStart = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

// reeferClock is a fake clock the test moves by hand.
type reeferClock struct{ t time.Time }

func (c *reeferClock) now() time.Time { return c.t }

// reeferRun samples a new Reefer every interval for total and returns the
// readings.
func reeferRun(t *testing.T, seed int64, interval, total time.Duration) []drivers.Env {
	t.Helper()
	clk := &reeferClock{t: reeferStart}
	r := NewReefer(seed, clk.now)
	defer r.Close()
	var out []drivers.Env
	for ; clk.t.Sub(reeferStart) <= total; clk.t = clk.t.Add(interval) {
		e, err := r.Sense(context.Background())
		if err != nil {
			t.Fatalf("Sense at %v: %v", clk.t, err)
		}
		out = append(out, e)
	}
	return out
}

func TestReeferDeterministic(t *testing.T) {
	t.Parallel()
	a := reeferRun(t, 42, 10*time.Second, 6*time.Hour)
	b := reeferRun(t, 42, 10*time.Second, 6*time.Hour)
	c := reeferRun(t, 43, 10*time.Second, 6*time.Hour)
	same := 0
	for i := range a {
		if a[i].TemperatureC != b[i].TemperatureC || a[i].PressureHPa != b[i].PressureHPa ||
			*a[i].HumidityRH != *b[i].HumidityRH || !a[i].Time.Equal(b[i].Time) {
			t.Fatalf("seed 42 run differs at reading %d: %+v vs %+v", i, a[i], b[i])
		}
		if a[i].TemperatureC == c[i].TemperatureC && a[i].PressureHPa == c[i].PressureHPa {
			same++
		}
	}
	if same > len(a)/100 {
		t.Errorf("seeds 42 and 43 agree on %d of %d readings; want different runs", same, len(a))
	}
}

// TestReeferStateFollowsClock checks that the model state depends on the
// clock, not on how often it is read.
func TestReeferStateFollowsClock(t *testing.T) {
	t.Parallel()
	clkA, clkB := &reeferClock{t: reeferStart}, &reeferClock{t: reeferStart}
	a, b := NewReefer(7, clkA.now), NewReefer(7, clkB.now)
	ctx := context.Background()
	a.Sense(ctx)
	b.Sense(ctx)
	// a is read every 10 s, b every 7 min (not a multiple), both up to 14 h.
	end := reeferStart.Add(14 * time.Hour)
	for clkA.t.Before(end) {
		clkA.t = clkA.t.Add(10 * time.Second)
		a.Sense(ctx)
	}
	for clkB.t.Before(end) {
		clkB.t = clkB.t.Add(7 * time.Minute)
		if clkB.t.After(end) {
			clkB.t = end
		}
		b.Sense(ctx)
	}
	if a.airC != b.airC || a.hPa != b.hPa || a.rh != b.rh || a.openings != b.openings {
		t.Errorf("state at %v: every 10 s gives %.4f °C %.4f hPa %.4f %%RH %d openings; every 7 min gives %.4f °C %.4f hPa %.4f %%RH %d openings",
			end, a.airC, a.hPa, a.rh, a.openings, b.airC, b.hPa, b.rh, b.openings)
	}
	// Reading without moving the clock does not advance the model.
	before := a.airC
	for range 100 {
		a.Sense(ctx)
	}
	if a.airC != before {
		t.Errorf("100 reads at a fixed time moved air from %v to %v °C", before, a.airC)
	}
}

// TestReeferLongRun simulates 48 h of 10 s readings for a few seeds and
// checks ranges, door excursions and their recovery.
func TestReeferLongRun(t *testing.T) {
	t.Parallel()
	for _, seed := range []int64{1, 2, 3, 2026} {
		t.Run("", func(t *testing.T) {
			t.Parallel()
			readings := reeferRun(t, seed, 10*time.Second, 48*time.Hour)
			var excursions, closedNear int
			var peak float64
			var excursionStart time.Time
			for _, e := range readings {
				if e.Source != drivers.Simulated || e.Chip != ReeferChip {
					t.Fatalf("reading source %q chip %q; want %q %q", e.Source, e.Chip, drivers.Simulated, ReeferChip)
				}
				if e.TemperatureC < 2 || e.TemperatureC > 33 {
					t.Errorf("seed %d at %v: %.2f °C outside 2…33", seed, e.Time, e.TemperatureC)
				}
				if e.HumidityRH == nil || *e.HumidityRH < 85 || *e.HumidityRH > 95 {
					t.Errorf("seed %d at %v: humidity %v outside 85…95 %%RH", seed, e.Time, e.HumidityRH)
				}
				if e.PressureHPa < 970 || e.PressureHPa > 1056 {
					t.Errorf("seed %d at %v: %.2f hPa outside 970…1056", seed, e.Time, e.PressureHPa)
				}
				if math.Abs(e.TemperatureC-4) < 1 {
					closedNear++
				}
				// An excursion starts above 7 °C and ends back below 5 °C.
				switch {
				case excursionStart.IsZero() && e.TemperatureC > 7:
					excursionStart = e.Time
					excursions++
					peak = e.TemperatureC
				case !excursionStart.IsZero() && e.TemperatureC > peak:
					peak = e.TemperatureC
				case !excursionStart.IsZero() && e.TemperatureC < 5:
					if d := e.Time.Sub(excursionStart); d > time.Hour {
						t.Errorf("seed %d: excursion from %v (peak %.1f °C) took %v to recover; want < 1 h", seed, excursionStart, peak, d)
					}
					if peak < 8 {
						t.Errorf("seed %d: excursion at %v peaked at only %.1f °C", seed, excursionStart, peak)
					}
					excursionStart = time.Time{}
				}
			}
			if !excursionStart.IsZero() && readings[len(readings)-1].Time.Sub(excursionStart) > time.Hour {
				t.Errorf("seed %d: excursion from %v never recovered", seed, excursionStart)
			}
			if excursions < 2 || excursions > 20 {
				t.Errorf("seed %d: %d door excursions in 48 h; want 2…20 (one per ~6 h)", seed, excursions)
			}
			// Outside excursions the reefer holds its setpoint.
			if frac := float64(closedNear) / float64(len(readings)); frac < 0.9 {
				t.Errorf("seed %d: %.0f%% of readings within 1 °C of setpoint; want ≥ 90%%", seed, frac*100)
			}
		})
	}
}

func TestReeferPressureDrifts(t *testing.T) {
	t.Parallel()
	readings := reeferRun(t, 5, time.Minute, 48*time.Hour)
	lo, hi := math.Inf(1), math.Inf(-1)
	var maxStep float64
	for i, e := range readings {
		lo, hi = math.Min(lo, e.PressureHPa), math.Max(hi, e.PressureHPa)
		if i > 0 {
			maxStep = math.Max(maxStep, math.Abs(e.PressureHPa-readings[i-1].PressureHPa))
		}
	}
	// Weather moves pressure by hPa over a day, but never jumps in a minute.
	if hi-lo < 1 {
		t.Errorf("pressure spans %.2f hPa in 48 h; want drift ≥ 1 hPa", hi-lo)
	}
	if maxStep > 0.5 {
		t.Errorf("pressure jumped %.2f hPa in one minute; want ≤ 0.5", maxStep)
	}
}

func TestReeferClockJumps(t *testing.T) {
	t.Parallel()
	clk := &reeferClock{t: time.Unix(0, 0)} // a Pi without RTC boots in 1970
	r := NewReefer(9, clk.now)
	ctx := context.Background()
	if _, err := r.Sense(ctx); err != nil {
		t.Fatal(err)
	}
	clk.t = reeferStart // NTP sync: 56 years forward
	begin := time.Now()
	e, err := r.Sense(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(begin); d > 2*time.Second {
		t.Errorf("Sense after a 56-year clock jump took %v; want it bounded", d)
	}
	if !e.Time.Equal(reeferStart) {
		t.Errorf("reading time %v; want %v", e.Time, reeferStart)
	}
	clk.t = reeferStart.Add(-time.Hour) // and backwards
	if _, err := r.Sense(ctx); err != nil {
		t.Errorf("Sense after the clock went back: %v", err)
	}
}

func TestReeferContextAndClose(t *testing.T) {
	t.Parallel()
	r := NewReefer(1, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.Sense(ctx); err == nil {
		t.Error("Sense(canceled ctx) = nil error; want context.Canceled")
	}
	if _, err := r.Sense(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Sense(context.Background()); err == nil {
		t.Error("Sense after Close = nil error; want an error")
	}
}
