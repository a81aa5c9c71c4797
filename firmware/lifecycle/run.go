package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/reefer/tracker/internal/backoff"
	"github.com/reefer/tracker/internal/ctxtime"
	"github.com/reefer/tracker/provisioning/cache"
	"github.com/reefer/tracker/provisioning/dps"
	"github.com/reefer/tracker/provisioning/iothub"
)

// Session is a live hub connection; *iothub.Client is one.
type Session interface {
	// Done is closed when the session ends for good (not on a reconnect).
	Done() <-chan struct{}
	// Err says why it ended; an error wrapping iothub.ErrNotAuthorized
	// means the hub refuses the device.
	Err() error
	Close() error
}

// Connector connects to the assigned hub. Connect blocks until connected,
// refused (an error wrapping iothub.ErrNotAuthorized) or ctx ends, and
// cleans up after itself when it fails. ctx bounds the connect only, not
// the session it returns.
type Connector interface {
	Connect(ctx context.Context, a cache.Assignment) (Session, error)
}

// ConnectorFunc adapts a function to Connector.
type ConnectorFunc func(ctx context.Context, a cache.Assignment) (Session, error)

// Connect calls f.
func (f ConnectorFunc) Connect(ctx context.Context, a cache.Assignment) (Session, error) {
	return f(ctx, a)
}

// IoTHub is a Connector that makes an *iothub.Client from Base with the
// assignment's hub and device id.
type IoTHub struct {
	// Base is the client configuration without Hub and DeviceID; its TLS
	// config should leave ServerName empty.
	Base iothub.Config
	// OnConnected, if set, receives each connected client (for the
	// telemetry agent) before Connect returns.
	OnConnected func(*iothub.Client)
}

// Connect implements Connector.
func (h *IoTHub) Connect(ctx context.Context, a cache.Assignment) (Session, error) {
	cfg := h.Base
	cfg.Hub, cfg.DeviceID = a.Hub, a.DeviceID
	c, err := iothub.New(cfg)
	if err != nil {
		return nil, err
	}
	if err := c.Connect(ctx); err != nil {
		c.Close()
		return nil, err
	}
	if h.OnConnected != nil {
		h.OnConnected(c)
	}
	return c, nil
}

// errHubGiveUp ends a connect attempt that took longer than HubGiveUp.
var errHubGiveUp = errors.New("no connection within the give-up time")

// Run keeps the device provisioned and connected until ctx ends, and then
// returns ctx's cause. It never gives up: every failure leads to a wait
// chosen by its cause (see the package comment) and another attempt, so a
// re-enrolled tracker comes back without a restart. The status (Status,
// Config.OnStatus) follows every step.
func (p *Provisioner) Run(ctx context.Context, conn Connector) error {
	var (
		force     bool // skip the cache: the hub refused what it said
		transient int  // consecutive transient failures
		refused   int  // consecutive waits on the long schedule
	)
	for {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		a, err := p.Assignment(ctx, force)
		if err != nil {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			if err := p.afterDPSFailure(ctx, err, &transient, &refused); err != nil {
				return err
			}
			continue
		}
		fresh := !p.Status().FromCache
		if fresh {
			force = false
			transient = 0
		}

		cctx, ccancel := context.WithTimeoutCause(ctx, p.cfg.HubGiveUp, errHubGiveUp)
		sess, err := conn.Connect(cctx, a)
		gaveUp := errors.Is(context.Cause(cctx), errHubGiveUp)
		ccancel()
		if err != nil {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			if gaveUp {
				// Unreachable, not refused: perhaps the hub is gone or the
				// device was moved. DPS knows; its own failures back off.
				err = fmt.Errorf("hub %s: %w: %w", a.Hub, errHubGiveUp, err)
				p.log.Warn("hub unreachable; asking DPS again", "hub", a.Hub, "after", p.cfg.HubGiveUp, "err", err)
				p.update(func(s *Status) { s.Err, s.LastError, s.Advice = err, err.Error(), "" })
				force = true
				continue
			}
			if !errors.Is(err, iothub.ErrNotAuthorized) {
				p.log.Warn("hub connect failed", "hub", a.Hub, "err", err)
				if err := p.wait(ctx, PhaseBackingOff, err, p.backoff(transient, 0)); err != nil {
					return err
				}
				transient++
				continue
			}
			force = true
			p.invalidate()
			p.refused()
			if !fresh {
				// docs/protocol.md B.7 and the SDKs' guidance: a refused device (deleted,
				// disabled, certificate changed) goes back to DPS, at once.
				p.log.Warn("hub refused the device; registering with DPS again", "hub", a.Hub, "err", err)
				p.update(func(s *Status) { s.Err, s.LastError, s.Advice = err, err.Error(), Explain(err) })
				continue
			}
			// DPS has just assigned this hub and the hub still refuses:
			// another DPS round would end the same way.
			err = fmt.Errorf("%w: %w", ErrHubRefused, err)
			d := p.long(refused)
			refused++
			p.log.Error("hub refuses the device DPS assigned to it", "hub", a.Hub, "device_id", a.DeviceID,
				"meaning", AdviceHubRefused, "retry_in", d.Round(time.Second), "err", err)
			if err := p.wait(ctx, PhaseRefusedUnauthorized, err, d); err != nil {
				return err
			}
			continue
		}

		transient, refused = 0, 0
		p.accepted()
		p.update(func(s *Status) { s.Phase = PhaseConnected; s.NextAttempt = time.Time{} })
		p.log.Info("connected", "hub", a.Hub, "device_id", a.DeviceID)
		renewed, err := p.connected(ctx, sess)
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if renewed {
			// docs/protocol.md B.7: one connection per device, so the
			// new certificate is tried after the old session closed.
			p.log.Info("reconnecting with the renewed operational certificate", "hub", p.Status().Hub)
			continue
		}
		if errors.Is(err, iothub.ErrNotAuthorized) {
			p.log.Warn("hub refused the device after a disconnect; registering with DPS again", "hub", a.Hub, "err", err)
			p.update(func(s *Status) { s.Err, s.LastError, s.Advice = err, err.Error(), Explain(err) })
			force = true
			p.invalidate()
			p.refused()
			continue
		}
		if err == nil {
			err = errors.New("hub session closed")
		}
		p.log.Warn("hub session ended", "hub", a.Hub, "err", err)
		if err := p.wait(ctx, PhaseBackingOff, err, p.backoff(0, 0)); err != nil {
			return err
		}
	}
}

// connected holds the session until it ends (its error), ctx ends, or
// the operational certificate was renewed (renewed: the caller reconnects
// with the new one). A failed renewal keeps the session. The session is
// closed on return.
func (p *Provisioner) connected(ctx context.Context, sess Session) (renewed bool, err error) {
	defer sess.Close()
	for {
		due, stop := p.renewalTimer()
		select {
		case <-ctx.Done():
			stop()
			return false, nil
		case <-sess.Done():
			stop()
			return false, sess.Err()
		case <-due:
			if p.renew(ctx) {
				return true, nil
			}
		}
	}
}

// afterDPSFailure picks the wait after a failed registration and waits.
func (p *Provisioner) afterDPSFailure(ctx context.Context, err error, transient, refused *int) error {
	var (
		phase = PhaseBackingOff
		d     time.Duration
	)
	switch {
	case errors.Is(err, dps.ErrDisabled), errors.Is(err, dps.ErrUnauthorized):
		// docs/protocol.md A.4, C: final until an operator acts; retry rarely, forever.
		phase = PhaseRefusedUnauthorized
		if errors.Is(err, dps.ErrDisabled) {
			phase = PhaseRefusedDisabled
		}
		d = p.long(*refused)
		*refused++
		p.log.Error("DPS refused the device", "meaning", Explain(err), "retry_in", d.Round(time.Second), "err", err)
	case errors.Is(err, dps.ErrFailed), errors.Is(err, dps.ErrBadRequest), errors.Is(err, dps.ErrNotFound):
		// docs/protocol.md A.4: do not retry unchanged; the configuration must change,
		// which the long schedule will notice.
		d = p.long(*refused)
		*refused++
		p.log.Error("DPS registration failed", "meaning", Explain(err), "retry_in", d.Round(time.Second), "err", err)
	default:
		// Throttled (docs/protocol.md A.4: honour retry-after), network, 5xx, timeouts.
		var floor time.Duration
		var de *dps.Error
		if errors.As(err, &de) && errors.Is(err, dps.ErrThrottled) {
			floor = de.RetryAfter
		}
		d = p.backoff(*transient, floor)
		*transient++
		p.log.Warn("DPS registration failed; backing off", "retry_in", d.Round(time.Second), "err", err)
	}
	return p.wait(ctx, phase, err, d)
}

// wait records phase and err, then sleeps d.
func (p *Provisioner) wait(ctx context.Context, phase Phase, err error, d time.Duration) error {
	next := p.cfg.Now().Add(d)
	p.update(func(s *Status) {
		s.Phase = phase
		s.Err, s.LastError, s.Advice = err, err.Error(), Explain(err)
		s.NextAttempt = next
	})
	if err := ctxtime.Sleep(ctx, d); err != nil {
		return context.Cause(ctx)
	}
	return nil
}

// invalidate drops the cache; on failure force=true still skips it.
func (p *Provisioner) invalidate() {
	if err := p.Invalidate(); err != nil {
		p.log.Warn("could not remove the assignment cache", "err", err)
	}
}

// backoff is full jitter: uniform in [0, min(BackoffMax, BackoffBase·2^n)),
// so a fleet recovering from an outage spreads out; floor (a retry-after)
// wins when larger, capped at BackoffMax.
func (p *Provisioner) backoff(n int, floor time.Duration) time.Duration {
	d := backoff.Jitter(backoff.Ceiling(n, p.cfg.BackoffBase, p.cfg.BackoffMax), 0, p.cfg.Rand())
	return max(d, min(floor, p.cfg.BackoffMax))
}

// long is the schedule while an operator has to act: the ceiling doubles
// from 2·RetryMin up to RetryMax and the wait is uniform in its upper half,
// clamped to [RetryMin, RetryMax]. The first retry comes after RetryMin to
// 2·RetryMin, later ones settle between RetryMax/2 and RetryMax, and a fleet
// disenrolled at once does not come back in lockstep.
func (p *Provisioner) long(n int) time.Duration {
	d := backoff.Jitter(backoff.Ceiling(n, 2*p.cfg.RetryMin, p.cfg.RetryMax), 0.5, p.cfg.Rand())
	return min(max(d, p.cfg.RetryMin), p.cfg.RetryMax)
}
