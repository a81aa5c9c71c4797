package agent

import (
	"context"
	"time"

	"github.com/reefer/tracker/internal/backoff"
)

// sender forwards the queue to the hub, oldest first, while connected. A
// message is Acked only after Publisher.Send returned nil. After a failed
// send it waits a jittered, capped back-off, or less if the link comes back.
// Once flushing is closed it returns as soon as there is nothing it can
// send: queue empty, link down, or a send failed.
//
// With a Pipeliner a backlog drains two batches deep: the next batch is
// published before the sender waits for the one before it, so the hub
// always has a batch to work on while the sender collects the previous
// one's acknowledgements, writes them to the queue and logs them.
func (a *Agent) sender(ctx context.Context, flushing <-chan struct{}) {
	var failures int
	_, pipelined := a.cfg.Publisher.(Pipeliner)
	var prev *inFlight // published, not yet collected
	// settle collects the batches and acknowledges what the hub took; false
	// after any failure.
	settle := func(batches ...*inFlight) bool {
		ok := true
		for _, b := range batches {
			if b == nil {
				continue
			}
			sent, err := a.collect(ctx, b)
			ackErr := a.ack(sent)
			if len(sent) > 0 && ackErr == nil {
				failures = 0
			}
			if err == nil {
				// Sent but still queued: retrying at once would resend the
				// same batch in a tight loop for as long as the disk fails.
				err = ackErr
			}
			ok = ok && err == nil
		}
		return ok
	}
	defer func() { settle(prev) }()
	for ctx.Err() == nil {
		flush := isClosed(flushing)
		// Consume a pending link signal before reading the state it stands
		// for, so a stale one cannot cut a later back-off short.
		select {
		case <-a.connSender:
		default:
		}
		if !a.connected() {
			ok := settle(prev)
			prev = nil
			if flush {
				return
			}
			if !ok {
				failures++
				a.backoff(ctx, flushing, failures)
				continue
			}
			select {
			case <-ctx.Done():
			case <-a.connSender:
			case <-flushing:
			}
			continue
		}
		batch, err := a.peekAfter(prev)
		if err != nil {
			a.queueFailed("peek", err)
			settle(prev)
			prev = nil
			if flush {
				return
			}
			failures++
			a.backoff(ctx, flushing, failures)
			continue
		}
		if len(batch) == 0 && prev == nil {
			if flush {
				return
			}
			select {
			case <-ctx.Done():
			case <-a.wakeSender:
			case <-a.connSender:
			case <-flushing:
			}
			continue
		}
		var next *inFlight
		if len(batch) > 0 {
			next = a.publishBatch(ctx, batch)
		}
		// Leave next in flight while collecting prev only when it is a
		// full batch that went out whole: a backlog, with more behind it.
		// At one reading a time there is nothing to overlap with.
		keep := pipelined && next != nil && next.err == nil && len(batch) == sendBatch
		var ok bool
		if keep {
			if ok = settle(prev); !ok {
				settle(next)
			}
		} else {
			ok = settle(prev, next)
		}
		prev = nil
		if !ok {
			failures++
			if flush {
				return
			}
			a.backoff(ctx, flushing, failures)
			continue
		}
		if keep {
			prev = next
		}
	}
}

// inFlight is a published batch whose acknowledgements are not collected.
type inFlight struct {
	batch []Queued
	waits []func(context.Context) error // one per published message, in order
	err   error                         // the publish failure that stopped it, if any
}

// peekAfter returns the next batch to send: the oldest queued messages
// that are not in prev, which is still in flight (the queue shows its
// messages until they are acknowledged).
func (a *Agent) peekAfter(prev *inFlight) ([]Queued, error) {
	if prev == nil {
		return a.cfg.Queue.Peek(sendBatch)
	}
	all, err := a.cfg.Queue.Peek(sendBatch + len(prev.batch))
	if err != nil {
		return nil, err
	}
	flying := make(map[uint64]bool, len(prev.batch))
	for _, m := range prev.batch {
		flying[m.Seq] = true
	}
	out := all[:0]
	for _, m := range all {
		if !flying[m.Seq] {
			out = append(out, m)
		}
	}
	return out, nil
}

// publishBatch publishes the batch in order with every message in flight
// at once (when the Publisher is a Pipeliner), stopping at the first
// failure, a dropped link or the end of ctx.
func (a *Agent) publishBatch(ctx context.Context, batch []Queued) *inFlight {
	b := &inFlight{batch: batch, waits: make([]func(context.Context) error, 0, len(batch))}
	for _, m := range batch {
		wait, err := a.publish(ctx, m)
		if err != nil {
			a.sendFailed(m, err)
			b.err = err
			break
		}
		b.waits = append(b.waits, wait)
		if ctx.Err() != nil || !a.connected() {
			break
		}
	}
	return b
}

// collect waits for the acknowledgements of a published batch and returns
// the seqs the hub accepted and the first error. The log gets one line per
// batch, not one per message: a drain of thousands would otherwise fill
// the journal.
func (a *Agent) collect(ctx context.Context, b *inFlight) ([]uint64, error) {
	firstErr := b.err
	var sent []uint64
	for i, wait := range b.waits {
		if err := wait(ctx); err != nil {
			if firstErr == nil {
				firstErr = err
				a.sendFailed(b.batch[i], err)
			} else {
				// Same cause, most likely (a lost link): counted, not
				// logged once each.
				a.countSendErr()
			}
			continue
		}
		sent = append(sent, b.batch[i].Seq)
	}
	a.sentOK(b.batch, sent)
	return sent, firstErr
}

// publish starts sending m: pipelined when the Publisher can, else a
// whole Send, whose result the returned wait gives.
func (a *Agent) publish(ctx context.Context, m Queued) (func(context.Context) error, error) {
	if p, ok := a.cfg.Publisher.(Pipeliner); ok {
		return p.Publish(ctx, m)
	}
	if err := a.cfg.Publisher.Send(ctx, m); err != nil {
		return nil, err
	}
	return func(context.Context) error { return nil }, nil
}

// ack removes sent messages, one call per batch. The queue writes
// acknowledgements lazily (see firmware/queue): a crash before that
// resends them with the same ids, which the cloud de-duplicates.
func (a *Agent) ack(seqs []uint64) error {
	if len(seqs) == 0 {
		return nil
	}
	if err := a.cfg.Queue.Ack(seqs...); err != nil {
		a.queueFailed("ack", err)
		return err
	}
	return nil
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// backoff waits after the n-th consecutive failure. A change of link state
// or the start of the flush ends the wait early.
func (a *Agent) backoff(ctx context.Context, flushing <-chan struct{}, n int) {
	select {
	case <-ctx.Done():
	case <-a.clock.After(a.backoffDelay(n)):
	case <-a.connSender:
	case <-flushing:
	}
}

// backoffDelay doubles from BackoffMin up to BackoffMax and keeps a random
// half of it ("equal jitter"), so a fleet that lost the hub together does
// not come back in lock step.
func (a *Agent) backoffDelay(n int) time.Duration {
	ceil := backoff.Ceiling(max(n-1, 0), a.cfg.BackoffMin, a.cfg.BackoffMax)
	return backoff.Jitter(ceil, 0.5, a.cfg.Rand())
}

func (a *Agent) countSendErr() {
	a.mu.Lock()
	a.st.sendErrs++
	a.mu.Unlock()
}

func (a *Agent) sendFailed(m Queued, err error) {
	a.mu.Lock()
	a.st.sendErrs++
	failures := a.st.sendErrs
	a.setErrLocked("send " + m.ID + ": " + err.Error())
	a.mu.Unlock()
	a.log.Warn("send failed, message kept", "id", m.ID, "seq", m.Seq, "err", err, "send_errors", failures)
}

// sentOK counts what the hub accepted from batch and logs it: the message
// itself when it is one, else a summary.
func (a *Agent) sentOK(batch []Queued, sent []uint64) {
	if len(sent) == 0 {
		return
	}
	now := a.clock.Now()
	a.mu.Lock()
	a.st.sent += uint64(len(sent))
	a.st.lastSend = now
	a.mu.Unlock()
	if len(batch) == 1 {
		m := batch[0]
		a.log.Info("telemetry sent", "id", m.ID, "seq", m.Seq, "created", m.Created)
		return
	}
	queued, _ := a.cfg.Queue.Len()
	a.log.Info("telemetry batch sent", "sent", len(sent), "of", len(batch), "first_seq", sent[0], "last_seq", sent[len(sent)-1],
		"oldest_created", batch[0].Created, "still_queued", queued-len(sent))
}
