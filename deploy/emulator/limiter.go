package emulator

import "sync"

// limiter runs functions on at most n goroutines at once. Functions
// beyond that wait in arrival order and run on a goroutine that finishes
// its own, so waiting costs a queue slot, not a goroutine and its stack,
// and no goroutine exists while there is nothing to do.
type limiter struct {
	n int

	mu     sync.Mutex
	active int
	queue  []func()
}

func newLimiter(n int) *limiter { return &limiter{n: n} }

// Go runs f now if fewer than n functions run, else queues it.
func (l *limiter) Go(f func()) {
	l.mu.Lock()
	if l.active < l.n {
		l.active++
		l.mu.Unlock()
		go l.run(f)
		return
	}
	l.queue = append(l.queue, f)
	l.mu.Unlock()
}

// run runs f, then queued functions until the queue is empty.
func (l *limiter) run(f func()) {
	for f != nil {
		f()
		l.mu.Lock()
		f = nil
		if len(l.queue) > 0 {
			f = l.queue[0]
			l.queue[0] = nil
			l.queue = l.queue[1:]
		} else {
			l.active--
		}
		l.mu.Unlock()
	}
}

// waiting is the number of queued functions.
func (l *limiter) waiting() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.queue)
}
