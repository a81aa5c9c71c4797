package faketime

import (
	"context"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 28, 13, 0, 0, 0, time.UTC)

func recv(ch <-chan time.Time) (time.Time, bool) {
	select {
	case v := <-ch:
		return v, true
	default:
		return time.Time{}, false
	}
}

func TestTickerFiresOnPeriodAndDropsUntaken(t *testing.T) {
	t.Parallel()
	c := NewClock(t0)
	tk := c.NewTicker(time.Second)
	c.Advance(999 * time.Millisecond)
	if v, ok := recv(tk.C()); ok {
		t.Fatalf("tick at %v before the period", v)
	}
	c.Advance(time.Millisecond)
	if v, ok := recv(tk.C()); !ok || !v.Equal(t0.Add(time.Second)) {
		t.Fatalf("tick = %v, %v; want %v, true", v, ok, t0.Add(time.Second))
	}
	c.Advance(3 * time.Second) // three ticks, the buffer holds the first
	if v, ok := recv(tk.C()); !ok || !v.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("tick = %v, %v; want %v, true", v, ok, t0.Add(2*time.Second))
	}
	if v, ok := recv(tk.C()); ok {
		t.Fatalf("extra tick %v; untaken ticks must be dropped", v)
	}
	if got := c.Now(); !got.Equal(t0.Add(4 * time.Second)) {
		t.Fatalf("Now() = %v; want %v", got, t0.Add(4*time.Second))
	}
}

func TestTickerResetAndStop(t *testing.T) {
	t.Parallel()
	c := NewClock(t0)
	tk := c.NewTicker(10 * time.Second)
	c.Advance(10 * time.Second) // a pending tick that Reset must discard
	tk.Reset(3 * time.Second)
	if v, ok := recv(tk.C()); ok {
		t.Fatalf("stale tick %v after Reset", v)
	}
	c.Advance(3 * time.Second)
	if v, ok := recv(tk.C()); !ok || !v.Equal(t0.Add(13*time.Second)) {
		t.Fatalf("tick = %v, %v; want %v, true", v, ok, t0.Add(13*time.Second))
	}
	tk.Stop()
	if n := c.Waiters(); n != 0 {
		t.Fatalf("Waiters() = %d after Stop; want 0", n)
	}
	c.Advance(time.Minute)
	if v, ok := recv(tk.C()); ok {
		t.Fatalf("tick %v after Stop", v)
	}
}

func TestAfterAndWaitForWaiters(t *testing.T) {
	t.Parallel()
	c := NewClock(t0)
	done := make(chan time.Time)
	go func() { done <- <-c.After(5 * time.Second) }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.WaitForWaiters(ctx, 1); err != nil {
		t.Fatalf("WaitForWaiters: %v", err)
	}
	c.Advance(5 * time.Second)
	if got := <-done; !got.Equal(t0.Add(5 * time.Second)) {
		t.Fatalf("After fired at %v; want %v", got, t0.Add(5*time.Second))
	}
	if n := c.Waiters(); n != 0 {
		t.Fatalf("Waiters() = %d after firing; want 0", n)
	}
	if _, ok := recv(c.After(0)); !ok {
		t.Fatal("After(0) did not fire at once")
	}
}

func TestSetWallStepsOnlyTheWallClock(t *testing.T) {
	t.Parallel()
	boot := time.Unix(0, 0).UTC() // a Pi without an RTC
	c := NewClock(boot)
	tk := c.NewTicker(10 * time.Second)
	c.Advance(4 * time.Second)
	m0 := c.Monotonic()
	c.SetWall(t0)
	if got := c.Now(); !got.Equal(t0) {
		t.Fatalf("Now() after SetWall = %v; want %v", got, t0)
	}
	if got := c.Monotonic(); got != m0 {
		t.Fatalf("Monotonic() after SetWall = %v; want %v unchanged", got, m0)
	}
	if v, ok := recv(tk.C()); ok {
		t.Fatalf("a wall step fired the ticker at %v", v)
	}
	if got := c.Deadlines(); len(got) != 1 || got[0] != 6*time.Second {
		t.Fatalf("Deadlines() after SetWall = %v; want [6s]", got)
	}
	// Timers keep their monotonic schedule and report the new wall time.
	c.Advance(6 * time.Second)
	if v, ok := recv(tk.C()); !ok || !v.Equal(t0.Add(6*time.Second)) {
		t.Fatalf("tick = %v, %v; want %v, true", v, ok, t0.Add(6*time.Second))
	}
	if got := c.Monotonic() - m0; got != 6*time.Second {
		t.Fatalf("monotonic elapsed across the step = %v; want 6s", got)
	}
	// Stepping back does not rewind the monotonic clock either.
	c.SetWall(boot)
	c.Advance(time.Second)
	if got, want := c.Now(), boot.Add(time.Second); !got.Equal(want) {
		t.Fatalf("Now() = %v; want %v", got, want)
	}
	if got := c.Monotonic(); got != 11*time.Second {
		t.Fatalf("Monotonic() = %v; want 11s", got)
	}
}
