package lifecycle

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/reefer/tracker/provisioning/cache"
	"github.com/reefer/tracker/provisioning/certs"
	"github.com/reefer/tracker/provisioning/dps"
	"github.com/reefer/tracker/provisioning/opcert"
)

// ErrCacheSave wraps a failure to write the assignment cache. The assignment
// itself is good; only the next start will have to ask DPS again.
var ErrCacheSave = errors.New("saving the assignment cache failed")

// ErrHubRefused: the hub refused a device DPS had just assigned to it, so
// asking DPS again will not help (the hub identity is disabled, or does not
// match the certificate).
var ErrHubRefused = errors.New("IoT Hub refuses the freshly assigned device")

// RegisterFunc registers with DPS; dps.Register in production.
type RegisterFunc func(ctx context.Context, cfg dps.Config) (*dps.Result, error)

// Config configures a Provisioner. Identity, TLS, DPS.IDScope and StateDir
// are required; every other zero value picks a default.
type Config struct {
	// Identity is the device certificate; its CN is the registration id
	// and its fingerprint binds the cached assignment.
	Identity *certs.Identity
	// TLS carries the client certificate and the server roots. Leave
	// ServerName empty: the DPS and hub clients each fill in their host.
	TLS *tls.Config
	// DPS holds Endpoint, IDScope and any tuning; RegistrationID and TLS
	// are filled in from Identity and TLS, Logger from Logger.
	DPS dps.Config
	// StateDir holds the assignment cache (provisioning/cache).
	StateDir string

	// RetryMin and RetryMax bound the long schedule used while DPS refuses
	// the device (config reprovisionRetry). Defaults 5 min and 60 min.
	RetryMin, RetryMax time.Duration
	// BackoffBase and BackoffMax shape the full-jitter back-off after
	// transient failures (each DPS attempt already retries internally).
	// Defaults 10 s and 10 min.
	BackoffBase, BackoffMax time.Duration
	// HubGiveUp bounds one attempt to connect to the assigned hub. When it
	// runs out (hub unreachable, not refused) Run asks DPS again, in case
	// the device was moved to another hub or its hub was deleted. Default
	// 30 min.
	HubGiveUp time.Duration

	Logger *slog.Logger
	// Now is the device's wall clock, for Status times (the daemon passes
	// the agent's, which a test may set apart from the monotonic clock).
	// Default time.Now. Waits run on the time package's timers; tests run
	// them in a testing/synctest bubble.
	Now func() time.Time
	// Rand is uniform in [0, 1), for jitter. Default math/rand/v2.
	Rand func() float64
	// Register defaults to dps.Register.
	Register RegisterFunc
	// OnStatus, if set, receives every status change, synchronously.
	OnStatus func(Status)

	// Operational, when set, has DPS issue the hub certificate
	// (docs/protocol.md A.5): every registration sends a CSR for a key
	// made on the device, the issued bundle is kept in this store, and the
	// hub connection uses it (HubTLS). Identity and TLS stay for DPS.
	// Nil: the device certificate serves DPS and the hub.
	Operational *opcert.Store
	// RenewAt is the fraction of the operational certificate's lifetime
	// after which Run renews it. Default opcert.DefaultRenewAt.
	RenewAt float64
	// NewRequest makes the key and the CSR of one registration; default
	// opcert.NewRequest with crypto/rand. Tests replace it.
	NewRequest func(registrationID string) (*opcert.Request, error)
}

// Provisioner finds the hub for a device and keeps the lifecycle status.
// Its methods are safe for concurrent use, but Assignment and Run are meant
// to be called from one goroutine at a time.
type Provisioner struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	status Status
	// The operational certificate the next hub connection uses, and
	// whether it is pending (issued, not yet accepted by the hub).
	hub        *certs.Identity
	hubPending bool
	// Renewal failures in a row and when to try again.
	renewFailures int
	renewRetryAt  time.Time
}

// New validates cfg and returns a Provisioner.
func New(cfg Config) (*Provisioner, error) {
	switch {
	case cfg.Identity == nil:
		return nil, errors.New("lifecycle: Identity is nil")
	case cfg.Identity.RegistrationID == "" || cfg.Identity.FingerprintSHA256 == "":
		return nil, errors.New("lifecycle: Identity has no registration id or fingerprint")
	case cfg.TLS == nil:
		return nil, errors.New("lifecycle: TLS is nil")
	case cfg.DPS.IDScope == "":
		return nil, errors.New("lifecycle: DPS.IDScope is empty")
	case cfg.StateDir == "":
		return nil, errors.New("lifecycle: StateDir is empty")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.RetryMin, 5*time.Minute)
	def(&cfg.RetryMax, 60*time.Minute)
	cfg.RetryMax = max(cfg.RetryMax, cfg.RetryMin)
	def(&cfg.BackoffBase, 10*time.Second)
	def(&cfg.BackoffMax, 10*time.Minute)
	cfg.BackoffMax = max(cfg.BackoffMax, cfg.BackoffBase)
	def(&cfg.HubGiveUp, 30*time.Minute)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	if cfg.Register == nil {
		cfg.Register = dps.Register
	}
	if cfg.RenewAt <= 0 || cfg.RenewAt >= 1 {
		cfg.RenewAt = opcert.DefaultRenewAt
	}
	if cfg.NewRequest == nil {
		cfg.NewRequest = func(id string) (*opcert.Request, error) { return opcert.NewRequest(id, nil) }
	}
	d := cfg.DPS
	d.RegistrationID = cfg.Identity.RegistrationID
	d.TLS = cfg.TLS
	if d.Logger == nil {
		d.Logger = cfg.Logger
	}
	cfg.DPS = d
	p := &Provisioner{
		cfg: cfg,
		log: cfg.Logger.With("registration_id", cfg.Identity.RegistrationID),
	}
	p.status = Status{Phase: PhaseStarting, Since: cfg.Now()}
	if cfg.Operational != nil {
		if err := cfg.Operational.Clean(); err != nil {
			p.log.Warn("could not remove what an interrupted write of the operational certificate left", "err", err)
		}
	}
	return p, nil
}

// Status returns the current status.
func (p *Provisioner) Status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status
}

// update applies f to the status, stamps Since on a phase change and
// reports the result.
func (p *Provisioner) update(f func(*Status)) {
	p.mu.Lock()
	old := p.status.Phase
	f(&p.status)
	if p.status.Phase != old {
		p.status.Since = p.cfg.Now()
	}
	s := p.status
	p.mu.Unlock()
	if p.cfg.OnStatus != nil {
		p.cfg.OnStatus(s)
	}
}

// Provisioned is a fresh DPS assignment.
type Provisioned struct {
	Assignment cache.Assignment
	Result     *dps.Result
	// Issued is the operational certificate DPS issued with it (pending
	// until the hub accepts it), nil without Config.Operational.
	Issued *certs.Identity
}

// Provision registers with DPS (ignoring the cache) and saves the
// assignment. When only the save fails it returns the assignment and an
// error wrapping ErrCacheSave.
func (p *Provisioner) Provision(ctx context.Context) (*Provisioned, error) {
	p.update(func(s *Status) { s.Phase = PhaseProvisioning; s.NextAttempt = time.Time{} })
	out, err := p.register(ctx)
	if out == nil {
		p.update(func(s *Status) { s.Err, s.LastError, s.Advice = err, err.Error(), Explain(err) })
		return nil, err
	}
	res := out.Result
	p.log.Info("provisioned", "hub", res.AssignedHub, "device_id", res.DeviceID, "substatus", res.Substatus)
	p.update(func(s *Status) {
		s.Phase = PhaseAssigned
		s.Hub, s.DeviceID, s.FromCache = res.AssignedHub, res.DeviceID, false
		s.LastProvisioned = out.Assignment.AssignedAt
		s.NextAttempt = time.Time{}
	})
	return out, err
}

// register is one DPS registration, with a CSR when DPS issues the hub
// certificate: the issued bundle is saved as pending (opcert) before the
// assignment bound to it is cached, so a crash between the two leaves a
// cache that names another certificate, which only costs a registration.
// A nil result is a failure; a result with an error is ErrCacheSave.
func (p *Provisioner) register(ctx context.Context) (*Provisioned, error) {
	dcfg := p.cfg.DPS
	var req *opcert.Request
	if p.cfg.Operational != nil {
		var err error
		if req, err = p.cfg.NewRequest(p.cfg.Identity.RegistrationID); err != nil {
			return nil, fmt.Errorf("lifecycle: %w", err)
		}
		dcfg.CSR = req.CSR
	}
	res, err := p.cfg.Register(ctx, dcfg)
	if err != nil {
		return nil, err
	}
	out := &Provisioned{
		Result: res,
		Assignment: cache.Assignment{
			Hub:                   res.AssignedHub,
			DeviceID:              res.DeviceID,
			CertFingerprintSHA256: p.cfg.Identity.FingerprintSHA256,
			AssignedAt:            p.cfg.Now(),
		},
	}
	if req != nil {
		id, err := p.cfg.Operational.SavePending(req, res.IssuedCertificateChain)
		if err != nil {
			return nil, fmt.Errorf("dps register %s: %w", p.cfg.Identity.RegistrationID, err)
		}
		p.setHub(id, true)
		out.Issued = id
		out.Assignment.CertFingerprintSHA256 = id.FingerprintSHA256
		p.log.Info("DPS issued an operational certificate", "sha256", id.FingerprintSHA256,
			"not_before", id.Leaf.NotBefore.UTC().Format(time.RFC3339), "not_after", id.Leaf.NotAfter.UTC().Format(time.RFC3339),
			"issuer", id.Leaf.Issuer.CommonName)
	}
	if err := cache.Save(p.cfg.StateDir, &out.Assignment); err != nil {
		return out, fmt.Errorf("%w: %w", ErrCacheSave, err)
	}
	return out, nil
}

// Assignment returns the hub to connect to: the cached one when it exists
// and belongs to the current certificate, otherwise (no cache, a corrupt
// one, a renewed certificate, or force) a fresh DPS registration, saved
// atomically. A failure to save is logged, not returned: the device can
// still connect. DPS errors are returned as dps.Register wraps them.
func (p *Provisioner) Assignment(ctx context.Context, force bool) (cache.Assignment, error) {
	fp := p.cfg.Identity.FingerprintSHA256
	if p.cfg.Operational != nil {
		fp = ""
		if id := p.pickHub(); id != nil {
			fp = id.FingerprintSHA256
		}
	}
	switch {
	case force:
	case fp == "":
		p.log.Info("no usable operational certificate; registering with DPS for one")
	default:
		a, err := cache.Load(p.cfg.StateDir)
		switch {
		case err == nil && cache.Valid(a, fp):
			p.log.Info("using cached assignment", "hub", a.Hub, "device_id", a.DeviceID, "assigned_at", a.AssignedAt)
			p.update(func(s *Status) {
				s.Phase = PhaseAssigned
				s.Hub, s.DeviceID, s.FromCache = a.Hub, a.DeviceID, true
				s.LastProvisioned = a.AssignedAt
				s.NextAttempt = time.Time{}
			})
			return *a, nil
		case err == nil:
			p.log.Info("certificate changed since the cached assignment; registering with DPS again",
				"cached_fingerprint", a.CertFingerprintSHA256, "fingerprint", fp)
		case errors.Is(err, cache.ErrCorrupt):
			p.log.Warn("assignment cache unusable; registering with DPS again", "err", err)
		case errors.Is(err, cache.ErrNoCache):
			p.log.Info("no cached assignment; registering with DPS")
		default:
			p.log.Warn("cannot read the assignment cache; registering with DPS again", "err", err)
		}
	}
	out, err := p.Provision(ctx)
	if errors.Is(err, ErrCacheSave) {
		p.log.Error("could not cache the assignment; the next start registers with DPS again", "err", err)
		return out.Assignment, nil
	}
	if err != nil {
		return cache.Assignment{}, err
	}
	return out.Assignment, nil
}

// Invalidate forgets the cached assignment, after the hub refused the
// device, so that the next Assignment registers with DPS.
func (p *Provisioner) Invalidate() error {
	if err := cache.Remove(p.cfg.StateDir); err != nil {
		return fmt.Errorf("lifecycle: invalidate: %w", err)
	}
	p.log.Info("assignment cache removed")
	return nil
}
