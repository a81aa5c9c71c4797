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
func (a *Agent) sender(ctx context.Context, flushing <-chan struct{}) {
	var failures int
	for ctx.Err() == nil {
		flush := isClosed(flushing)
		// Consume a pending link signal before reading the state it stands
		// for, so a stale one cannot cut a later back-off short.
		select {
		case <-a.connSender:
		default:
		}
		if !a.connected() {
			if flush {
				return
			}
			select {
			case <-ctx.Done():
			case <-a.connSender:
			case <-flushing:
			}
			continue
		}
		batch, err := a.cfg.Queue.Peek(sendBatch)
		if err != nil {
			a.queueFailed("peek", err)
			if flush {
				return
			}
			failures++
			a.backoff(ctx, flushing, failures)
			continue
		}
		if len(batch) == 0 {
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
		sent, err := a.sendBatch(ctx, batch)
		ackErr := a.ack(sent)
		if len(sent) > 0 && ackErr == nil {
			failures = 0
		}
		if err == nil {
			// Sent but still queued: retrying at once would resend the
			// same batch in a tight loop for as long as the disk fails.
			err = ackErr
		}
		if err != nil {
			failures++
			if flush {
				return
			}
			a.backoff(ctx, flushing, failures)
			continue
		}
		failures = 0
	}
}

// sendBatch publishes the batch in order with every message in flight at
// once (when the Publisher is a Pipeliner), stopping at the first failure,
// a dropped link or the end of ctx, then waits for the acknowledgements.
// It returns the seqs the hub accepted and the first error. The log gets
// one line per batch, not one per message: a drain of thousands would
// otherwise fill the journal.
func (a *Agent) sendBatch(ctx context.Context, batch []Queued) ([]uint64, error) {
	waits := make([]func(context.Context) error, 0, len(batch))
	var firstErr error
	for _, m := range batch {
		wait, err := a.publish(ctx, m)
		if err != nil {
			a.sendFailed(m, err)
			firstErr = err
			break
		}
		waits = append(waits, wait)
		if ctx.Err() != nil || !a.connected() {
			break
		}
	}
	var sent []uint64
	for i, wait := range waits {
		if err := wait(ctx); err != nil {
			if firstErr == nil {
				firstErr = err
				a.sendFailed(batch[i], err)
			} else {
				// Same cause, most likely (a lost link): counted, not
				// logged once each.
				a.countSendErr()
			}
			continue
		}
		sent = append(sent, batch[i].Seq)
	}
	a.sentOK(batch, sent)
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
