package daemon

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"time"

	"github.com/reefer/tracker/firmware/config"
	"github.com/reefer/tracker/firmware/lifecycle"
	"github.com/reefer/tracker/firmware/model"
	"github.com/reefer/tracker/provisioning/certs"
	"github.com/reefer/tracker/provisioning/opcert"
)

// Device is the start-up sequence `tracker run` and `tracker provision`
// share, up to the network: the identity and trust roots checked, the TLS
// config built (OpenDevice); the wait for a
// plausible clock (WaitForClock); the lifecycle (Provisioner).
type Device struct {
	Identity *certs.Identity
	// TLS carries the device chain and the server roots; each client
	// sets its own ServerName.
	TLS *tls.Config
	// Floor is lifecycle.ClockFloor: no TLS before the clock reaches it.
	Floor time.Time

	tc *config.Config
}

// OpenDevice checks the identity in tc and loads the trust roots (an
// error wraps ErrIdentity: restarting cannot fix it). Validity is judged at now, or at the clock floor when
// now is before it, so a board still in 1970 gets to WaitForClock instead
// of failing with "not yet valid".
func OpenDevice(tc *config.Config, now time.Time) (*Device, error) {
	dev := &Device{tc: tc, Floor: lifecycle.ClockFloor(tc.CertFile)}
	checkAt := now
	if checkAt.Before(dev.Floor) {
		checkAt = dev.Floor
	}
	id, err := certs.LoadIdentity(tc.CertFile, tc.KeyFile, checkAt)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrIdentity, err)
	}
	roots, err := certs.ServerRoots(tc.CAFile)
	if err != nil {
		return nil, fmt.Errorf("%w: trust roots: %w", ErrIdentity, err)
	}
	dev.Identity = id
	dev.TLS = certs.TLSConfig(id, roots, "")
	// The state directory is made where it is used: a tracker runs on
	// without it (firmware/statequeue), `tracker provision` needs it.
	return dev, nil
}

// WaitForClock waits until now() reaches the floor (lifecycle.WaitForClock,
// polling every poll), then checks the identity again at the real time.
func (dev *Device) WaitForClock(ctx context.Context, now func() time.Time, poll time.Duration, log *slog.Logger) error {
	if err := lifecycle.WaitForClock(ctx, now, dev.Floor, poll, log); err != nil {
		return err
	}
	if _, err := certs.LoadIdentity(dev.tc.CertFile, dev.tc.KeyFile, now()); err != nil {
		return fmt.Errorf("%w: %w", ErrIdentity, err)
	}
	return nil
}

// Provisioner returns the device's lifecycle: lc with the identity, TLS,
// DPS endpoint and ID scope and state directory filled in, and, unless lc
// has a payload, the registration payload announcing the Plug and Play
// model (docs/protocol.md A.3).
func (dev *Device) Provisioner(lc lifecycle.Config) (*lifecycle.Provisioner, error) {
	lc.Identity, lc.TLS = dev.Identity, dev.TLS
	lc.DPS.Endpoint, lc.DPS.IDScope = dev.tc.DPSEndpoint, dev.tc.IDScope
	if lc.DPS.Payload == nil {
		lc.DPS.Payload = model.DPSPayload()
	}
	lc.StateDir = dev.tc.StateDir
	if ci := dev.tc.CertificateIssuance; ci.Enabled {
		// DPS issues the hub certificate; certFile and keyFile serve DPS only.
		lc.Operational = &opcert.Store{Dir: dev.tc.StateDir}
		if lc.RenewAt == 0 {
			lc.RenewAt = ci.RenewAt
		}
	}
	return lifecycle.New(lc)
}
