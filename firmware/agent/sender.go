package agent

import (
	"context"
	"time"
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
		for _, m := range batch {
			if err := a.cfg.Publisher.Send(ctx, m); err != nil {
				failures++
				a.sendFailed(m, err, failures)
				if flush {
					return
				}
				a.backoff(ctx, flushing, failures)
				break
			}
			failures = 0
			a.sentOK(m)
			if err := a.cfg.Queue.Ack(m.ID); err != nil {
				// The hub has it; it will be sent again after a restart
				// with the same id, which the cloud de-duplicates.
				a.queueFailed("ack "+m.ID, err)
			}
			if ctx.Err() != nil || !a.connected() {
				break
			}
		}
	}
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
	d := a.cfg.BackoffMin
	for i := 1; i < n && d < a.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, a.cfg.BackoffMax)
	return d/2 + time.Duration(a.cfg.Rand()*float64(d/2))
}

func (a *Agent) sendFailed(m Queued, err error, failures int) {
	a.mu.Lock()
	a.st.sendErrs++
	a.setErrLocked("send " + m.ID + ": " + err.Error())
	a.mu.Unlock()
	a.log.Warn("send failed, message kept", "id", m.ID, "seq", m.Seq, "err", err, "consecutive", failures)
}

func (a *Agent) sentOK(m Queued) {
	now := a.clock.Now()
	a.mu.Lock()
	a.st.sent++
	a.st.lastSend = now
	a.mu.Unlock()
	a.log.Info("telemetry sent", "id", m.ID, "seq", m.Seq, "created", m.Created)
}
