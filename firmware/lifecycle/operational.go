package lifecycle

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"time"

	"github.com/reefer/tracker/provisioning/certs"
	"github.com/reefer/tracker/provisioning/dps"
	"github.com/reefer/tracker/provisioning/opcert"
)

// The operational certificate (Config.Operational): which bundle the hub
// connection uses, its switch once the hub accepted a new one, and its
// renewal. docs/protocol.md A.5.

// setHub makes id the certificate of the next hub connection.
func (p *Provisioner) setHub(id *certs.Identity, pending bool) {
	p.mu.Lock()
	p.hub, p.hubPending = id, pending
	p.mu.Unlock()
}

// HubTLS is the TLS configuration for the hub: the operational
// certificate when DPS issues it, otherwise Config.TLS (the device
// certificate). ServerName is left empty, as in Config.TLS.
func (p *Provisioner) HubTLS() *tls.Config {
	p.mu.Lock()
	id := p.hub
	p.mu.Unlock()
	if p.cfg.Operational == nil || id == nil {
		return p.cfg.TLS
	}
	return certs.TLSConfig(id, p.cfg.TLS.RootCAs, "")
}

// HubLeaf is the operational certificate the tracker holds (the one in
// use or about to be tried), nil when there is none or DPS does not issue
// it.
func (p *Provisioner) HubLeaf() *x509.Certificate {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.hub == nil {
		return nil
	}
	return p.hub.Leaf
}

// pickHub loads the bundle the next hub connection uses: the pending one
// when it is valid now (issued, not yet tried or accepted), else the
// current one when valid. It returns nil when neither is, so that DPS is
// asked for a new certificate; an expired current one is still kept for
// the expiry report.
func (p *Provisioner) pickHub() *certs.Identity {
	st, now := p.cfg.Operational, p.cfg.Now()
	id, err := st.Pending()
	switch {
	case err == nil && opcert.Usable(id, now):
		p.setHub(id, true)
		return id
	case err == nil:
		p.log.Warn("discarding the pending operational certificate: not valid now", "not_after", id.Leaf.NotAfter.UTC().Format(time.RFC3339))
		p.discardPending()
	case !errors.Is(err, opcert.ErrNone):
		p.log.Warn("discarding the pending operational certificate: unusable", "err", err)
		p.discardPending()
	}
	id, err = st.Current()
	switch {
	case err == nil && opcert.Usable(id, now):
		p.setHub(id, false)
		return id
	case err == nil:
		p.setHub(id, false)
		p.log.Warn("operational certificate not valid now; asking DPS for a new one",
			"not_before", id.Leaf.NotBefore.UTC().Format(time.RFC3339), "not_after", id.Leaf.NotAfter.UTC().Format(time.RFC3339))
	case !errors.Is(err, opcert.ErrNone):
		p.log.Warn("operational certificate unusable; asking DPS for a new one", "err", err)
	}
	return nil
}

func (p *Provisioner) discardPending() {
	if err := p.cfg.Operational.DiscardPending(); err != nil {
		p.log.Warn("could not remove the pending operational certificate", "err", err)
	}
}

// accepted is called once the hub took the connection: a pending
// certificate becomes the current one (one rename, opcert.Promote) and the
// old one is gone.
func (p *Provisioner) accepted() {
	if p.cfg.Operational == nil {
		return
	}
	p.mu.Lock()
	id, pending := p.hub, p.hubPending
	p.mu.Unlock()
	if !pending {
		return
	}
	if err := p.cfg.Operational.Promote(); err != nil {
		// Still pending on disk: the next start tries it first again.
		p.log.Error("could not switch to the accepted operational certificate", "err", err)
		return
	}
	p.setHub(id, false)
	p.log.Info("hub accepted the new operational certificate; switched to it", "sha256", id.FingerprintSHA256,
		"not_after", id.Leaf.NotAfter.UTC().Format(time.RFC3339))
}

// refused is called when the hub refused the device: a pending
// certificate is dropped (the current one, if any, stays); either way the
// caller goes back to DPS, which issues a new one.
func (p *Provisioner) refused() {
	if p.cfg.Operational == nil {
		return
	}
	p.mu.Lock()
	pending := p.hubPending
	p.mu.Unlock()
	if pending {
		p.log.Warn("hub refused the new operational certificate; discarding it")
		p.discardPending()
		p.setHub(nil, false)
	}
}

// renewalDue is when Run renews the operational certificate in use:
// RenewAt of its lifetime, or the retry time after a failed renewal. ok
// is false without one.
func (p *Provisioner) renewalDue() (due time.Time, ok bool) {
	if p.cfg.Operational == nil {
		return time.Time{}, false
	}
	p.mu.Lock()
	id, retry := p.hub, p.renewRetryAt
	p.mu.Unlock()
	if id == nil {
		return time.Time{}, false
	}
	due = opcert.RenewalDue(id.Leaf, p.cfg.RenewAt)
	if retry.After(due) {
		due = retry
	}
	return due, true
}

// renewalTimer fires when the renewal is due (nil channel without one)
// and records the time in the status.
func (p *Provisioner) renewalTimer() (<-chan time.Time, func()) {
	due, ok := p.renewalDue()
	if !ok {
		return nil, func() {}
	}
	p.update(func(s *Status) { s.NextRenewal = due })
	t := time.NewTimer(max(due.Sub(p.cfg.Now()), 0))
	return t.C, func() { t.Stop() }
}

// renew registers again with a fresh key and CSR while the current
// certificate keeps the hub connection. On success the new certificate is
// pending (and the assignment cached for it): the caller reconnects with
// it, and it becomes the current one only once the hub accepts it. On
// failure the old one stays in use and the next attempt waits a jittered
// back-off (Config.BackoffBase, BackoffMax).
func (p *Provisioner) renew(ctx context.Context) bool {
	p.mu.Lock()
	old := p.hub
	p.mu.Unlock()
	p.log.Info("renewing the operational certificate through DPS", "not_after", old.Leaf.NotAfter.UTC().Format(time.RFC3339))
	out, err := p.register(ctx)
	if errors.Is(err, ErrCacheSave) {
		p.log.Error("could not cache the assignment; the next start registers with DPS again", "err", err)
		err = nil
	}
	if err == nil {
		p.mu.Lock()
		p.renewFailures, p.renewRetryAt = 0, time.Time{}
		p.mu.Unlock()
		p.update(func(s *Status) {
			s.RenewalError = ""
			s.Hub, s.DeviceID, s.LastProvisioned = out.Result.AssignedHub, out.Result.DeviceID, out.Assignment.AssignedAt
		})
		return true
	}
	if ctx.Err() != nil {
		return false
	}
	var floor time.Duration
	var de *dps.Error
	if errors.As(err, &de) && errors.Is(err, dps.ErrThrottled) {
		floor = de.RetryAfter
	}
	p.mu.Lock()
	d := p.backoff(p.renewFailures, floor)
	p.renewFailures++
	n := p.renewFailures
	p.renewRetryAt = p.cfg.Now().Add(d)
	p.mu.Unlock()
	p.log.Warn("renewing the operational certificate failed; keeping the current one", "attempt", n,
		"retry_in", d.Round(time.Millisecond), "valid_until", old.Leaf.NotAfter.UTC().Format(time.RFC3339), "err", err)
	p.update(func(s *Status) { s.RenewalError = err.Error() })
	return false
}
