package bme280

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"periph.io/x/conn/v3/i2c"
)

// ErrStuck means the chip kept reporting "measuring" far longer than a
// conversion takes, e.g. because SDA is stuck high and every read is 0xFF.
var ErrStuck = errors.New("status register stuck at measuring")

// maxStatusPolls bounds bmxx80's status loop. bmxx80 sleeps for the typical
// conversion time (8 ms at 1x) and then polls register 0xF3 with no limit
// and no delay; the datasheet maximum is only ~1.3 ms longer, which is a
// handful of polls even on a 400 kHz bus.
const maxStatusPolls = 200

// guardBus sits between bmxx80 and the real bus so that its unbounded
// status polling ends with an error instead of spinning forever, and stops
// when the Sense context is done.
//
// It also keeps the last transfer error: bmxx80 formats errors with %v,
// which drops the chain, so Dev wraps the kept error instead and callers
// can still use errors.Is (ErrStuck, context.Canceled, syscall errnos).
type guardBus struct {
	i2c.Bus

	mu    sync.Mutex
	ctx   context.Context // of the Sense in progress; nil outside Sense
	polls int
	err   error // last transfer error, until takeErr
}

func (g *guardBus) Tx(addr uint16, w, r []byte) error {
	g.mu.Lock()
	ctx := g.ctx
	if len(w) == 1 && w[0] == 0xF3 && len(r) == 1 {
		g.polls++
	} else {
		g.polls = 0
	}
	polls := g.polls
	g.mu.Unlock()
	var err error
	switch {
	case ctx != nil && ctx.Err() != nil:
		err = ctx.Err()
	case polls > maxStatusPolls:
		err = fmt.Errorf("%w after %d reads", ErrStuck, maxStatusPolls)
	default:
		err = g.Bus.Tx(addr, w, r)
	}
	if err != nil {
		g.mu.Lock()
		g.err = err
		g.mu.Unlock()
	}
	return err
}

// takeErr returns and clears the last transfer error.
func (g *guardBus) takeErr() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	err := g.err
	g.err = nil
	return err
}

// cause prefers the kept transfer error, which still unwraps, over bmxx80's
// flattened copy of it.
func (g *guardBus) cause(err error) error {
	if terr := g.takeErr(); terr != nil {
		return terr
	}
	return err
}

func (g *guardBus) setContext(ctx context.Context) {
	g.mu.Lock()
	g.ctx = ctx
	g.mu.Unlock()
}
