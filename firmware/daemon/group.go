package daemon

import (
	"context"
	"sync"
)

// group runs the daemon's loops in stages. Every stage has its own context,
// so that Stop can end them in order, each after the one before has
// returned; a loop returning an error ends the run (Wait returns).
type group struct {
	bg     context.Context // the run's values, without its cancellation
	stages []*stage

	once   sync.Once
	err    error
	failed chan struct{} // closed with err set
}

type stage struct {
	g      *group
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newGroup(ctx context.Context) *group {
	return &group{bg: context.WithoutCancel(ctx), failed: make(chan struct{})}
}

// stage adds a stage; Stop ends the stages in the order they were added.
func (g *group) stage() *stage {
	ctx, cancel := context.WithCancel(g.bg)
	s := &stage{g: g, ctx: ctx, cancel: cancel}
	g.stages = append(g.stages, s)
	return s
}

// Go runs f in the stage. A non-nil error from f ends the run; the first
// one is what Wait returns.
func (s *stage) Go(f func(ctx context.Context) error) {
	s.wg.Go(func() {
		if err := f(s.ctx); err != nil {
			s.g.once.Do(func() {
				s.g.err = err
				close(s.g.failed)
			})
		}
	})
}

// Wait blocks until ctx ends (it returns nil) or a loop fails (it returns
// that loop's error). The loops keep running until Stop.
func (g *group) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case <-g.failed:
		return g.err
	}
}

// Stop ends the stages in order and waits for each.
func (g *group) Stop() {
	for _, s := range g.stages {
		s.cancel()
		s.wg.Wait()
	}
}
