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

// sendBatch sends messages in order until one fails, the link drops or ctx
// ends, and returns the seqs the hub accepted.
func (a *Agent) sendBatch(ctx context.Context, batch []Queued) ([]uint64, error) {
	var sent []uint64
	for _, m := range batch {
		if err := a.cfg.Publisher.Send(ctx, m); err != nil {
			a.sendFailed(m, err)
			return sent, err
		}
		a.sentOK(m)
		sent = append(sent, m.Seq)
		if ctx.Err() != nil || !a.connected() {
			break
		}
	}
	return sent, nil
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

func (a *Agent) sendFailed(m Queued, err error) {
	a.mu.Lock()
	a.st.sendErrs++
	failures := a.st.sendErrs
	a.setErrLocked("send " + m.ID + ": " + err.Error())
	a.mu.Unlock()
	a.log.Warn("send failed, message kept", "id", m.ID, "seq", m.Seq, "err", err, "send_errors", failures)
}

func (a *Agent) sentOK(m Queued) {
	now := a.clock.Now()
	a.mu.Lock()
	a.st.sent++
	a.st.lastSend = now
	a.mu.Unlock()
	a.log.Info("telemetry sent", "id", m.ID, "seq", m.Seq, "created", m.Created)
}
