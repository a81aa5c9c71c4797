package gps

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/reefer/tracker/drivers"
	"github.com/reefer/tracker/internal/ctxtime"
)

// Defaults for zero Options fields.
const (
	DefaultMaxAge     = 5 * time.Second
	DefaultBackoffMin = 500 * time.Millisecond
	DefaultBackoffMax = 30 * time.Second
)

// ErrNoOpen is returned by Run when Options.Open is nil.
var ErrNoOpen = errors.New("gps: no Open function")

// Options configure a Receiver. Only Open is required.
type Options struct {
	// Open opens the NMEA byte stream: OpenSerial for hardware, the
	// simulator's reader for simulated data. It is called again after
	// the stream fails.
	Open func(ctx context.Context) (io.ReadCloser, error)
	// MaxAge is how long a fix stays current without a new RMC.
	MaxAge time.Duration
	// Now is the local clock; time.Now by default.
	Now func() time.Time
	// BackoffMin and BackoffMax bound the wait between reopen attempts;
	// the wait doubles after each failure and resets once data flows.
	BackoffMin, BackoffMax time.Duration
	// Sleep waits d or until ctx is done; tests inject a fast one.
	Sleep func(ctx context.Context, d time.Duration) error
	// Source is stamped on every Fix: Hardware or Simulated.
	Source drivers.Source
	// MaxLineLen bounds one sentence; MaxLineLen (the constant) by default.
	MaxLineLen int
}

// Receiver keeps the latest GPS fix from an NMEA stream. Latest and Stats
// are safe to call from any goroutine while Run runs.
type Receiver struct {
	opts Options
	log  *slog.Logger

	mu  sync.Mutex
	dec decoder
}

// New makes a Receiver; call Run to start reading.
func New(opts Options, log *slog.Logger) *Receiver {
	if opts.MaxAge <= 0 {
		opts.MaxAge = DefaultMaxAge
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.BackoffMin <= 0 {
		opts.BackoffMin = DefaultBackoffMin
	}
	if opts.BackoffMax < opts.BackoffMin {
		opts.BackoffMax = max(DefaultBackoffMax, opts.BackoffMin)
	}
	if opts.Sleep == nil {
		opts.Sleep = ctxtime.Sleep
	}
	if opts.Source == "" {
		opts.Source = drivers.Hardware
	}
	if opts.MaxLineLen <= 0 {
		opts.MaxLineLen = MaxLineLen
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Receiver{opts: opts, log: log.With("driver", "gps", "source", string(opts.Source))}
}

// Latest returns the current fix. It returns false when the receiver has
// no valid fix or the last one is older than MaxAge.
func (r *Receiver) Latest() (Fix, bool) {
	now := r.opts.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dec.fix(now, r.opts.MaxAge, r.opts.Source)
}

// Stats returns a snapshot of the counters.
func (r *Receiver) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dec.stats
}

// Source says whether this receiver reads hardware or the simulator.
func (r *Receiver) Source() drivers.Source { return r.opts.Source }

// Run reads the stream until ctx is done and then returns nil. When the
// stream fails (read error or EOF, e.g. a USB receiver unplugged) it
// closes it and reopens with capped exponential backoff.
func (r *Receiver) Run(ctx context.Context) error {
	if r.opts.Open == nil {
		return ErrNoOpen
	}
	wait := r.opts.BackoffMin
	failed := 0 // open failures in a row
	for ctx.Err() == nil {
		rc, err := r.opts.Open(ctx)
		if err != nil {
			r.mu.Lock()
			r.dec.stats.OpenFailures++
			same := r.dec.stats.LastError == err.Error()
			r.dec.stats.LastError = err.Error()
			r.mu.Unlock()
			failed++
			// A port missing for months must not flood the journal.
			level := slog.LevelWarn
			if same && failed > 1 {
				level = slog.LevelDebug
			}
			r.log.Log(ctx, level, "gps open failed", "err", err, "retry_in", wait, "attempts", failed)
		} else {
			failed = 0
			r.mu.Lock()
			r.dec.stats.Opens++
			r.dec.stats.Connected = true
			r.dec.stats.OpenedAt = r.opts.Now()
			r.mu.Unlock()
			r.log.Info("gps stream open")
			good, err := r.read(ctx, rc)
			r.mu.Lock()
			r.dec.stats.Connected = false
			if ctx.Err() == nil {
				r.dec.stats.LastError = err.Error()
			}
			r.mu.Unlock()
			if ctx.Err() != nil {
				return nil
			}
			if good {
				// The link worked: treat this loss as the first failure.
				wait = r.opts.BackoffMin
			}
			r.log.Warn("gps stream lost", "err", err, "retry_in", wait)
		}
		if r.opts.Sleep(ctx, wait) != nil {
			return nil
		}
		wait = min(wait*2, r.opts.BackoffMax)
	}
	return nil
}

// read consumes rc until it fails, then closes it. It reports whether at
// least one good sentence arrived.
func (r *Receiver) read(ctx context.Context, rc io.ReadCloser) (good bool, err error) {
	var once sync.Once
	closeRC := func() { once.Do(func() { _ = rc.Close() }) }
	// A blocking serial read only returns when the port is closed.
	stop := context.AfterFunc(ctx, closeRC)
	defer func() {
		stop()
		closeRC()
	}()
	lr := newLineReader(rc, r.opts.MaxLineLen)
	for {
		line, err := lr.next()
		now := r.opts.Now()
		switch {
		case errors.Is(err, ErrLineTooLong), errors.Is(err, ErrLineCut), errors.Is(err, ErrLineGarbled):
			r.mu.Lock()
			r.dec.lineError(err)
			r.mu.Unlock()
			r.log.Debug("gps line dropped", "err", err)
		case err != nil:
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return good, fmt.Errorf("gps read: %w", err)
		default:
			r.mu.Lock()
			before := r.dec.stats.Sentences
			perr := r.dec.feed(line, now)
			good = good || r.dec.stats.Sentences > before
			r.mu.Unlock()
			if perr != nil {
				r.log.Debug("gps sentence rejected", "line", line, "err", perr)
			}
		}
	}
}
