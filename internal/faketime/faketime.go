// Package faketime is the hand-written time of tests, for what
// testing/synctest cannot fake: Clock, a clock.Clock whose wall clock a test
// steps apart from the monotonic one (a board before NTP) and whose timers
// fire only when told, also outside a bubble (tests on real sockets); and
// Sleeps, a Sleep option that records what it was asked to wait and returns
// at once, for clients tested against a real broker.
package faketime

import (
	"context"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/reefer/tracker/internal/clock"
)

// Clock is a manual clock.Clock: time moves only when Advance is called.
// Timers and tickers deliver on buffered channels of one and drop ticks the
// receiver has not taken yet, like the time package does.
//
// Like the real thing it has two clocks. Advance moves both; SetWall steps
// only the wall clock (Now), the way NTP or `date -s` does, and leaves the
// monotonic reading and every timer alone: Go's timers and tickers run on
// the monotonic clock, so a step neither fires nor delays them.
type Clock struct {
	mu      sync.Mutex
	wall    time.Time     // Now
	mono    time.Duration // Monotonic; timers are due at a mono reading
	waiters []*waiter
	changed chan struct{} // closed and replaced whenever waiters change
}

type waiter struct {
	at     time.Duration // due when mono reaches it
	period time.Duration // 0 for a one-shot timer
	ch     chan time.Time
}

var _ clock.Clock = (*Clock)(nil)

// NewClock returns a clock whose wall time is start and whose monotonic
// reading is 0.
func NewClock(start time.Time) *Clock {
	return &Clock{wall: start, changed: make(chan struct{})}
}

// Now returns the clock's wall time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wall
}

// Monotonic returns the time Advance has moved the clock since NewClock.
func (c *Clock) Monotonic() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mono
}

// SetWall steps the wall clock to t, forwards or backwards, without moving
// the monotonic clock or firing anything.
func (c *Clock) SetWall(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wall = t
}

// After returns a channel that receives the wall time once d has passed.
func (c *Clock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := &waiter{at: c.mono + d, ch: make(chan time.Time, 1)}
	if d <= 0 {
		w.ch <- c.wall
		return w.ch
	}
	c.add(w)
	return w.ch
}

// NewTicker returns a ticker firing every d.
func (c *Clock) NewTicker(d time.Duration) clock.Ticker {
	if d <= 0 {
		panic("faketime: non-positive ticker period")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	w := &waiter{at: c.mono + d, period: d, ch: make(chan time.Time, 1)}
	c.add(w)
	return &ticker{c: c, w: w}
}

// Advance moves both clocks forward by d, firing every timer and ticker due
// on the way in time order; each delivers the wall time it fired at.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	end := c.mono + d
	for {
		sort.SliceStable(c.waiters, func(i, j int) bool { return c.waiters[i].at < c.waiters[j].at })
		if len(c.waiters) == 0 || c.waiters[0].at > end {
			break
		}
		w := c.waiters[0]
		c.moveTo(w.at)
		select {
		case w.ch <- c.wall:
		default: // receiver is behind: drop the tick like time.Ticker
		}
		if w.period > 0 {
			w.at += w.period
		} else {
			c.remove(w)
		}
	}
	c.moveTo(end)
}

// moveTo advances both clocks to the monotonic reading mono.
func (c *Clock) moveTo(mono time.Duration) {
	c.wall = c.wall.Add(mono - c.mono)
	c.mono = mono
}

// Waiters returns the number of pending timers and running tickers.
func (c *Clock) Waiters() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}

// Deadlines returns when each pending timer and ticker fires next, as
// offsets from Now, soonest first. Tests use it to see that the code under
// test armed the timer it should have.
func (c *Clock) Deadlines() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ds []time.Duration
	for _, w := range c.waiters {
		ds = append(ds, w.at-c.mono)
	}
	slices.Sort(ds)
	return ds
}

// WaitForWaiters blocks until at least n timers and tickers are pending, so
// a test advances time only once the code under test is waiting on it.
func (c *Clock) WaitForWaiters(ctx context.Context, n int) error {
	for {
		c.mu.Lock()
		got, ch := len(c.waiters), c.changed
		c.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// add and remove must be called with c.mu held.
func (c *Clock) add(w *waiter) {
	c.waiters = append(c.waiters, w)
	c.notify()
}

func (c *Clock) remove(w *waiter) {
	for i, x := range c.waiters {
		if x == w {
			c.waiters = append(c.waiters[:i], c.waiters[i+1:]...)
			c.notify()
			return
		}
	}
}

func (c *Clock) notify() {
	close(c.changed)
	c.changed = make(chan struct{})
}

type ticker struct {
	c *Clock
	w *waiter
}

func (t *ticker) C() <-chan time.Time { return t.w.ch }

func (t *ticker) Reset(d time.Duration) {
	if d <= 0 {
		panic("faketime: non-positive ticker period")
	}
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	t.c.remove(t.w)
	drain(t.w.ch) // Go 1.23+ tickers deliver no stale tick after Reset
	t.w.at, t.w.period = t.c.mono+d, d
	t.c.add(t.w)
}

func (t *ticker) Stop() {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	t.c.remove(t.w)
	drain(t.w.ch)
}

func drain(ch chan time.Time) {
	select {
	case <-ch:
	default:
	}
}

// Sleeps stands in for a Sleep option. The zero value is ready.
type Sleeps struct {
	mu sync.Mutex
	ds []time.Duration
}

// Sleep records d and returns ctx.Err() without waiting.
func (s *Sleeps) Sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.ds = append(s.ds, d)
	s.mu.Unlock()
	return ctx.Err()
}

// Got returns the durations Sleep was called with, in order.
func (s *Sleeps) Got() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.ds...)
}
