package integration

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/reefer/tracker/deploy/emulator"
	"github.com/reefer/tracker/deploy/emulator/emulatortest"
	"github.com/reefer/tracker/deploy/emulator/store"
	"github.com/reefer/tracker/internal/faketime"
	"github.com/reefer/tracker/provisioning/dps"
)

func TestDPSAssigned(t *testing.T) {
	t.Parallel()
	e := emulatortest.Start(t)
	f := newFleet(t)
	enrollFleet(t, e, f, nil)
	s := &faketime.Sleeps{}
	res, err := dps.Register(testCtx(t), dpsConfig(e, "dev-0001", f.chain(f.device(t, "dev-0001")), s))
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	if res.AssignedHub != e.HubHost(0) || res.DeviceID != "dev-0001" || res.Status != "assigned" ||
		res.Substatus != "initialAssignment" || res.OperationID == "" {
		t.Errorf("Register = %+v; want dev-0001 assigned to %s (initialAssignment)", res, e.HubHost(0))
	}
	// The emulator sends retry-after=0 in tests; docs/protocol.md A.4 says never poll
	// faster than every 2 s, so the one wait before the poll is 2 s.
	if got := s.Got(); len(got) != 1 || got[0] != 2*time.Second {
		t.Errorf("waits = %v; want [2s] before the one poll", got)
	}
	// DPS created the hub identity (docs/protocol.md B.1, G.11).
	if _, err := e.Store().GetDevice(res.AssignedHub, "dev-0001"); err != nil {
		t.Errorf("hub identity after assignment: %v", err)
	}
}

// Refusals: each ends Register at once with the sentinel a caller acts on.
func TestDPSRefusals(t *testing.T) {
	t.Parallel()
	e := emulatortest.Start(t)
	f := newFleet(t)
	enrollFleet(t, e, f, nil)

	// A second group whose enrollment is disabled, with its own PKI.
	off := newFleet(t)
	if _, err := e.EnrollGroup("fleet-off", off.root.Cert, func(g *store.EnrollmentGroup) {
		g.ProvisioningStatus = store.StatusDisabled
	}); err != nil {
		t.Fatal(err)
	}
	// One device of the enabled group blocked by a disabled individual
	// enrollment (docs/protocol.md C: "Blocking one device in a group").
	blocked := f.device(t, "blocked-1")
	if _, err := e.EnrollDevice(blocked.Cert, func(en *store.IndividualEnrollment) {
		en.ProvisioningStatus = store.StatusDisabled
	}); err != nil {
		t.Fatal(err)
	}
	stranger := newFleet(t) // never enrolled, CA unknown to DPS

	good := f.device(t, "dev-1")
	tests := []struct {
		name       string
		regID      string
		cfg        func() dps.Config
		want       error
		wantStatus int
		wantCode   int
	}{
		{"disabled individual enrollment", "blocked-1", func() dps.Config {
			return dpsConfig(e, "blocked-1", f.chain(blocked), &faketime.Sleeps{})
		}, dps.ErrDisabled, 200, 0},
		{"disabled group", "off-1", func() dps.Config {
			return dpsConfig(e, "off-1", off.chain(off.device(t, "off-1")), &faketime.Sleeps{})
		}, dps.ErrDisabled, 200, 0},
		{"unknown CA", "x-1", func() dps.Config {
			return dpsConfig(e, "x-1", stranger.chain(stranger.device(t, "x-1")), &faketime.Sleeps{})
		}, dps.ErrUnauthorized, 401, 401002},
		{"registration id is not the CN", "dev-other", func() dps.Config {
			return dpsConfig(e, "dev-other", f.chain(good), &faketime.Sleeps{})
		}, dps.ErrBadRequest, 400, 400004},
		{"leaf without the intermediate that signed it", "dev-2", func() dps.Config {
			return dpsConfig(e, "dev-2", tlsCert(f.device(t, "dev-2")), &faketime.Sleeps{})
		}, dps.ErrUnauthorized, 401, 401002},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := &faketime.Sleeps{}
			cfg := tt.cfg()
			cfg.Sleep = s.Sleep
			res, err := dps.Register(testCtx(t), cfg)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Register(%s) = %+v, %v; want %v", tt.regID, res, err, tt.want)
			}
			var de *dps.Error
			if !errors.As(err, &de) || de.Status != tt.wantStatus || de.ErrorCode != tt.wantCode {
				t.Errorf("Register(%s) error = %#v; want status %d errorCode %d", tt.regID, de, tt.wantStatus, tt.wantCode)
			}
			// None of these is retried: at most the one poll wait.
			if n := len(s.Got()); n > 1 {
				t.Errorf("Register(%s) waited %v; a permanent refusal must not be retried", tt.regID, s.Got())
			}
		})
	}
}

// TestDPSThrottledThenAssigned: over the registration rate limit DPS
// answers 429 with retry-after (docs/protocol.md A.4, F); the client waits at least
// that long and registers again. The emulator has no injectable clock and
// its limit window is a minute, so the test lets the minute pass by
// restarting the emulator (same data dir, same ports, state kept) while
// the client is in its back-off.
func TestDPSThrottledThenAssigned(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var cfg emulator.Config
	e := emulatortest.Start(t, func(c *emulator.Config) {
		c.DataDir = dir
		c.RegistrationsPerMinute = 1
		cfg = *c
	})
	f := newFleet(t)
	enrollFleet(t, e, f, nil)
	provision(t, e, "dev-a", f.chain(f.device(t, "dev-a"))) // uses the minute's only slot

	var waits []time.Duration
	restarted := false
	c := dpsConfig(e, "dev-b", f.chain(f.device(t, "dev-b")), nil)
	c.Sleep = func(ctx context.Context, d time.Duration) error {
		waits = append(waits, d)
		if d >= 30*time.Second && !restarted {
			restarted = true
			e.Close()
			e2, err := emulator.New(cfg)
			if err != nil {
				return err
			}
			if err := e2.Start(context.Background()); err != nil {
				return err
			}
			t.Cleanup(func() { e2.Close() })
		}
		return ctx.Err()
	}
	res, err := dps.Register(testCtx(t), c)
	if err != nil {
		t.Fatalf("Register after throttling: %v (waits %v)", err, waits)
	}
	if res.DeviceID != "dev-b" {
		t.Errorf("Register = %+v; want dev-b", res)
	}
	// The first wait is the back-off after the 429: retry-after (what
	// remains of the minute, almost all of it) plus jitter of up to as much
	// again, so a throttled fleet does not come back in one second.
	if len(waits) == 0 || waits[0] < 50*time.Second || waits[0] > 2*time.Minute {
		t.Errorf("waits = %v; want the first to honour retry-after (~60s) plus jitter (< 60s)", waits)
	}
	if !restarted {
		t.Error("the client never backed off for retry-after")
	}
}
