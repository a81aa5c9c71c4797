package emulator

import (
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reefer/tracker/internal/waitfor"
)

func TestLimiterBoundsConcurrency(t *testing.T) {
	const n, total = 3, 40
	l := newLimiter(n)
	var running, peak atomic.Int32
	release := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(total)
	for range total {
		l.Go(func() {
			defer wg.Done()
			r := running.Add(1)
			for p := peak.Load(); r > p && !peak.CompareAndSwap(p, r); p = peak.Load() {
			}
			<-release
			running.Add(-1)
		})
	}
	waitfor.Until(t, "the first functions to start", waitTime, time.Millisecond, func() bool { return running.Load() == n })
	// The rest wait as queue entries.
	if w := l.waiting(); w != total-n {
		t.Errorf("waiting = %d, want %d", w, total-n)
	}
	close(release)
	wg.Wait()
	if p := peak.Load(); p != n {
		t.Errorf("%d ran at once, want the limit %d", p, n)
	}
	// Nothing runs once the queue is empty.
	waitfor.Until(t, "the limiter to go idle", waitTime, time.Millisecond, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.active == 0
	})
}

func TestLimiterRunsInArrivalOrder(t *testing.T) {
	l := newLimiter(1)
	release := make(chan struct{})
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	wg.Add(20)
	for i := range 20 {
		l.Go(func() {
			defer wg.Done()
			if i == 0 {
				<-release // everything else queues behind it
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
		})
	}
	close(release)
	wg.Wait()
	if !slices.IsSorted(order) {
		t.Errorf("ran in order %v", order)
	}
}
