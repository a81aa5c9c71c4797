package sensors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/reefer/tracker/drivers"
)

// ErrMissing: a hardware sensor is absent or stopped answering. The
// tracker goes on without its values and keeps trying to open it.
var ErrMissing = errors.New("sensor missing")

// Defaults of ReopenOptions.
const (
	DefaultReopenMin  = 5 * time.Second
	DefaultReopenMax  = 5 * time.Minute
	DefaultDeadAfter  = 3
	DefaultGPSSilence = 15 * time.Second
)

// ReopenOptions shape how a lost sensor is opened again. Zero values take
// the defaults above.
type ReopenOptions struct {
	// Min and Max bound the wait between open attempts; it doubles after
	// each failure and starts again at Min once the sensor answers.
	Min, Max time.Duration
	// DeadAfter is how many reads in a row must fail before a sensor that
	// opened is judged gone, closed and reopened (one glitch is not).
	DeadAfter int
	// GPSSilence is how long an open GPS port may stay without NMEA before
	// the receiver counts as missing.
	GPSSilence time.Duration
	Now        func() time.Time
}

func (o ReopenOptions) withDefaults() ReopenOptions {
	if o.Min <= 0 {
		o.Min = DefaultReopenMin
	}
	if o.Max < o.Min {
		o.Max = max(DefaultReopenMax, o.Min)
	}
	if o.DeadAfter <= 0 {
		o.DeadAfter = DefaultDeadAfter
	}
	if o.GPSSilence <= 0 {
		o.GPSSilence = DefaultGPSSilence
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// ReopeningEnv is an env sensor for a tracker that runs for months: a chip
// or bus that is missing at start, or stops answering, does not end it.
// While the sensor is missing Sense fails at once with an error wrapping
// ErrMissing and the reason (no I/O), and every so often (ReopenOptions)
// it tries to open the sensor again; once it answers, readings resume.
type ReopeningEnv struct {
	open func(ctx context.Context) (drivers.EnvSensor, error)
	o    ReopenOptions
	log  *slog.Logger

	mu    sync.Mutex
	cur   drivers.EnvSensor // nil while missing
	err   error             // why cur is nil
	wait  time.Duration     // before the next open attempt
	next  time.Time         // earliest next open attempt
	fails int               // reads in a row that failed
	tries int               // open attempts in a row that failed
}

// NewReopeningEnv tries open once and returns the sensor either way: when
// open fails, the sensor starts missing and is retried by Sense.
func NewReopeningEnv(ctx context.Context, open func(context.Context) (drivers.EnvSensor, error), o ReopenOptions, log *slog.Logger) *ReopeningEnv {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &ReopeningEnv{open: open, o: o.withDefaults(), log: log}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tryOpen(ctx)
	return e
}

// tryOpen opens the sensor; on failure it schedules the next attempt. mu held.
func (e *ReopeningEnv) tryOpen(ctx context.Context) {
	s, err := e.open(ctx)
	if err == nil {
		if e.tries > 0 || e.err != nil {
			e.log.Info("env sensor is back", "after_attempts", e.tries+1)
		}
		e.cur, e.err, e.wait, e.tries, e.fails = s, nil, 0, 0, 0
		return
	}
	e.tries++
	e.missing(fmt.Errorf("%w: %w", ErrMissing, err))
}

// missing records why the sensor is gone and when to try again. mu held.
func (e *ReopeningEnv) missing(err error) {
	if e.wait == 0 {
		e.wait = e.o.Min
	} else {
		e.wait = min(2*e.wait, e.o.Max)
	}
	e.next = e.o.Now().Add(e.wait)
	// A sensor gone for months must not flood the journal: the loss and a
	// change of reason at WARN, each retry at DEBUG.
	level := slog.LevelDebug
	if e.err == nil || e.err.Error() != err.Error() {
		level = slog.LevelWarn
	}
	e.err = err
	e.log.Log(context.Background(), level, "env sensor missing: sending without temperature, humidity and pressure; will try to open it again",
		"err", err, "retry_in", e.wait)
}

// Sense reads the sensor, opening it first when it is missing and its
// retry is due.
func (e *ReopeningEnv) Sense(ctx context.Context) (drivers.Env, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cur == nil {
		if e.o.Now().Before(e.next) {
			return drivers.Env{}, e.err
		}
		if e.tryOpen(ctx); e.cur == nil {
			return drivers.Env{}, e.err
		}
	}
	r, err := e.cur.Sense(ctx)
	if err == nil {
		e.fails = 0
		return r, nil
	}
	if ctx.Err() != nil {
		return drivers.Env{}, err
	}
	e.fails++
	if e.fails < e.o.DeadAfter {
		return drivers.Env{}, err
	}
	// Dead: close it (releasing the bus) and reopen on the schedule; the
	// chip may have lost power or its wires.
	if cerr := e.cur.Close(); cerr != nil {
		e.log.Debug("closing the dead env sensor", "err", cerr)
	}
	e.cur = nil
	e.missing(fmt.Errorf("%w: %d reads in a row failed: %w", ErrMissing, e.fails, err))
	e.fails = 0
	return drivers.Env{}, e.err
}

// Err is why the sensor is missing, nil while it works.
func (e *ReopeningEnv) Err() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

// Close closes the sensor if it is open.
func (e *ReopeningEnv) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cur == nil {
		return nil
	}
	err := e.cur.Close()
	e.cur = nil
	return err
}
