package agenttest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/reefer/tracker/drivers"
	"github.com/reefer/tracker/firmware/agent"
	"github.com/reefer/tracker/firmware/telemetry"
)

// Queue is an in-memory agent.Queue. The zero value is ready for use and
// unbounded; set Max to make Put drop the oldest message when full.
type Queue struct {
	Max int

	mu      sync.Mutex
	msgs    []agent.Queued
	seq     uint64
	dropped uint64
	puts    int
	acks    int
	putErr  error
}

var _ agent.Queue = (*Queue)(nil)

// Append numbers 1, 2, 3, ... and appends what build returns, dropping
// the oldest message if the queue is full. A failed Append (FailPut, or
// build) uses no number.
func (q *Queue) Append(build func(seq uint64) (agent.Queued, error)) (agent.Queued, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.putErr != nil {
		return agent.Queued{}, q.putErr
	}
	m, err := build(q.seq + 1)
	if err != nil {
		return agent.Queued{}, err
	}
	q.seq++
	m.Seq = q.seq
	q.puts++
	q.msgs = append(q.msgs, m)
	if q.Max > 0 && len(q.msgs) > q.Max {
		q.msgs = q.msgs[1:]
		q.dropped++
	}
	return m, nil
}

// Peek returns up to n messages, oldest first.
func (q *Queue) Peek(n int) ([]agent.Queued, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Clone(q.msgs[:min(n, len(q.msgs))]), nil
}

// Ack removes the messages with the given seqs.
func (q *Queue) Ack(seqs ...uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.acks++
	q.msgs = slices.DeleteFunc(q.msgs, func(m agent.Queued) bool { return slices.Contains(seqs, m.Seq) })
	return nil
}

// Len returns the number of messages and their body bytes.
func (q *Queue) Len() (int, int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var b int64
	for _, m := range q.msgs {
		b += int64(len(m.Body))
	}
	return len(q.msgs), b
}

// Dropped counts messages dropped because the queue was full.
func (q *Queue) Dropped() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.dropped
}

// Puts counts successful Append calls.
func (q *Queue) Puts() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.puts
}

// Acks counts Ack calls (transactions, not messages).
func (q *Queue) Acks() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.acks
}

// Messages returns a copy of the queued messages, oldest first.
func (q *Queue) Messages() []agent.Queued {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Clone(q.msgs)
}

// FailPut makes Append return err (nil restores it).
func (q *Queue) FailPut(err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.putErr = err
}

// ErrFake is what fakes told to fail return unless given another error.
var ErrFake = errors.New("agenttest: fake failure")

// Publisher is an agent.Publisher that records what it sent. It succeeds
// until told to Fail or Block.
type Publisher struct {
	mu    sync.Mutex
	sent  []agent.Queued
	calls int
	err   error
	gate  chan struct{} // non-nil while blocked
	// entered receives a value each time Send starts, if a test listens.
	entered chan struct{}
}

var _ agent.Publisher = (*Publisher)(nil)

// NewPublisher returns a publisher that succeeds.
func NewPublisher() *Publisher { return &Publisher{entered: make(chan struct{}, 1)} }

// Send records m unless the publisher is failing or blocked. A blocked Send
// waits for Unblock or ctx.
func (p *Publisher) Send(ctx context.Context, m agent.Queued) error {
	p.mu.Lock()
	p.calls++
	gate := p.gate
	p.mu.Unlock()
	select {
	case p.entered <- struct{}{}:
	default:
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return fmt.Errorf("agenttest publisher: %w", ctx.Err())
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return p.err
	}
	p.sent = append(p.sent, m)
	return nil
}

// Fail makes Send return err; nil makes it succeed again.
func (p *Publisher) Fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.err = err
}

// Block makes Send wait until Unblock (or its context ends).
func (p *Publisher) Block() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gate == nil {
		p.gate = make(chan struct{})
	}
}

// Unblock releases blocked and future Sends.
func (p *Publisher) Unblock() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gate != nil {
		close(p.gate)
		p.gate = nil
	}
}

// Entered receives when a Send starts (one pending signal at most).
func (p *Publisher) Entered() <-chan struct{} { return p.entered }

// Sent returns the messages sent so far, in order.
func (p *Publisher) Sent() []agent.Queued {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.sent)
}

// Calls counts Send calls, failed ones included.
func (p *Publisher) Calls() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls
}

// Reporter is an agent.Reporter that records reported patches.
type Reporter struct {
	mu      sync.Mutex
	patches []map[string]any
	err     error
}

var _ agent.Reporter = (*Reporter)(nil)

// UpdateReported records a copy of patch unless told to fail.
func (r *Reporter) UpdateReported(ctx context.Context, patch map[string]any) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.patches = append(r.patches, maps.Clone(patch))
	return nil
}

// Fail makes UpdateReported return err; nil makes it succeed again.
func (r *Reporter) Fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err = err
}

// Patches returns the recorded patches, oldest first.
func (r *Reporter) Patches() []map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.patches)
}

// Last returns the latest patch, or nil.
func (r *Reporter) Last() map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.patches) == 0 {
		return nil
	}
	return r.patches[len(r.patches)-1]
}

// Sensor is an agent.EnvSensor returning a reading a test sets.
type Sensor struct {
	mu    sync.Mutex
	env   drivers.Env
	err   error
	reads int
}

var _ agent.EnvSensor = (*Sensor)(nil)

// NewSensor returns a sensor that reads env.
func NewSensor(env drivers.Env) *Sensor { return &Sensor{env: env} }

// Sense returns the current reading or error.
func (s *Sensor) Sense(ctx context.Context) (drivers.Env, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads++
	if s.err != nil {
		return drivers.Env{}, s.err
	}
	return s.env, nil
}

// Close does nothing.
func (s *Sensor) Close() error { return nil }

// Set changes the reading and clears any error.
func (s *Sensor) Set(env drivers.Env) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.env, s.err = env, nil
}

// Fail makes Sense return err.
func (s *Sensor) Fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err = err
}

// Reads counts Sense calls.
func (s *Sensor) Reads() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reads
}

// Positioner is an agent.Positioner with a settable fix.
type Positioner struct {
	mu      sync.Mutex
	pos     *telemetry.Position
	src     drivers.Source
	problem string
}

var _ agent.Positioner = (*Positioner)(nil)

// NewPositioner returns a positioner without a fix.
func NewPositioner(src drivers.Source) *Positioner { return &Positioner{src: src} }

// Latest returns the fix, if any.
func (p *Positioner) Latest() (telemetry.Position, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pos == nil {
		return telemetry.Position{}, false
	}
	return *p.pos, true
}

// Source returns the receiver's source.
func (p *Positioner) Source() drivers.Source {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.src
}

// Problem returns what SetProblem set.
func (p *Positioner) Problem() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.problem
}

// SetProblem makes the receiver missing, with reason s ("" brings it back).
func (p *Positioner) SetProblem(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.problem = s
}

// SetFix sets the fix; nil clears it.
func (p *Positioner) SetFix(pos *telemetry.Position) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pos = pos
}
