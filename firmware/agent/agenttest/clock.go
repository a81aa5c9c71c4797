package agenttest

import (
	"context"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/reefer/tracker/firmware/agent"
)

// Clock is a manual agent.Clock: time moves only when Advance is called.
// Timers and tickers deliver on buffered channels of one and drop ticks the
// receiver has not taken yet, like the time package does.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []*waiter
	changed chan struct{} // closed and replaced whenever waiters change
}

type waiter struct {
	at     time.Time
	period time.Duration // 0 for a one-shot timer
	ch     chan time.Time
}

var _ agent.Clock = (*Clock)(nil)

// NewClock returns a clock set to start.
func NewClock(start time.Time) *Clock {
	return &Clock{now: start, changed: make(chan struct{})}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After returns a channel that receives the time once d has passed.
func (c *Clock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := &waiter{at: c.now.Add(d), ch: make(chan time.Time, 1)}
	if d <= 0 {
		w.ch <- c.now
		return w.ch
	}
	c.add(w)
	return w.ch
}

// NewTicker returns a ticker firing every d.
func (c *Clock) NewTicker(d time.Duration) agent.Ticker {
	if d <= 0 {
		panic("agenttest: non-positive ticker period")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	w := &waiter{at: c.now.Add(d), period: d, ch: make(chan time.Time, 1)}
	c.add(w)
	return &ticker{c: c, w: w}
}

// Advance moves the clock forward by d, firing every timer and ticker due
// on the way in time order.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	end := c.now.Add(d)
	for {
		sort.SliceStable(c.waiters, func(i, j int) bool { return c.waiters[i].at.Before(c.waiters[j].at) })
		if len(c.waiters) == 0 || c.waiters[0].at.After(end) {
			break
		}
		w := c.waiters[0]
		c.now = w.at
		select {
		case w.ch <- w.at:
		default: // receiver is behind: drop the tick like time.Ticker
		}
		if w.period > 0 {
			w.at = w.at.Add(w.period)
		} else {
			c.remove(w)
		}
	}
	c.now = end
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
		ds = append(ds, w.at.Sub(c.now))
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
		panic("agenttest: non-positive ticker period")
	}
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	t.c.remove(t.w)
	drain(t.w.ch) // Go 1.23+ tickers deliver no stale tick after Reset
	t.w.at, t.w.period = t.c.now.Add(d), d
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
