// Package faketime is the injected time of tests: a clock that moves only
// when told, and a Sleep that records what it was asked to wait and returns
// at once, so tests run at full speed and still check every wait.
package faketime

import (
	"context"
	"sync"
	"time"
)

// Clock is a Now for code under test; it moves only by Advance.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a Clock that reads t.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
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
