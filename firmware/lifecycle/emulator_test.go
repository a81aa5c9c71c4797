package lifecycle_test

// Integration tests against the in-process DPS + IoT Hub emulator
// (deploy/emulator): real MQTT over mutual TLS on 127.0.0.1, real
// enrollments, real hub identities. Retry intervals are shortened through
// the Config; nothing else is faked.

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reefer/tracker/deploy/emulator"
	"github.com/reefer/tracker/deploy/emulator/emulatortest"
	"github.com/reefer/tracker/deploy/emulator/store"
	"github.com/reefer/tracker/firmware/lifecycle"
	"github.com/reefer/tracker/provisioning/cache"
	"github.com/reefer/tracker/provisioning/certs"
	"github.com/reefer/tracker/provisioning/certs/certstest"
	"github.com/reefer/tracker/provisioning/dps"
	"github.com/reefer/tracker/provisioning/iothub"
)

const groupID = "enrollgroup-sensors"

// world is an emulator with the reference flow's PKI (root → intermediate →
// devices) and an enrollment group on the root (reference flow steps 1–3).
type world struct {
	e           *emulator.Emulator
	root, inter *certstest.Cert
}

func newWorld(t *testing.T) *world {
	t.Helper()
	e := emulatortest.Start(t, func(c *emulator.Config) {
		// Our short retry schedules poll more often than 5 per 10 s.
		c.PollLimit = 10_000
	})
	w := &world{e: e, root: certstest.Root(t, "groupCA-sensors", certstest.Options{})}
	w.inter = w.root.Intermediate(t, "groupCA-sensors-intermediate", certstest.Options{})
	w.enrollGroup(t, store.StatusEnabled)
	return w
}

func (w *world) enrollGroup(t *testing.T, status string) {
	t.Helper()
	if _, err := w.e.EnrollGroup(groupID, w.root.Cert, func(g *store.EnrollmentGroup) {
		g.ProvisioningStatus = status
		g.AllocationPolicy = store.AllocationStatic
		g.IoTHubs = []string{w.e.HubHost(0)}
	}); err != nil {
		t.Fatal(err)
	}
}

func (w *world) hub() string { return w.e.HubHost(0) }

// device is one tracker: certificate files, identity and state directory.
type device struct {
	cn       string
	leaf     *certstest.Cert
	id       *certs.Identity
	stateDir string
	regs     atomic.Int32 // DPS registrations made

	mu       sync.Mutex
	statuses []lifecycle.Status
	changed  chan struct{}
}

func (w *world) device(t *testing.T, cn string) *device {
	t.Helper()
	dir := t.TempDir()
	d := &device{cn: cn, leaf: w.inter.Leaf(t, cn, certstest.Options{}), stateDir: filepath.Join(dir, "state"), changed: make(chan struct{}, 1)}
	certFile, keyFile := filepath.Join(dir, cn+"-chain.pem"), filepath.Join(dir, cn+".key")
	certstest.WriteCerts(t, certFile, d.leaf.Cert, w.inter.Cert) // docs/protocol.md C: leaf + intermediate
	certstest.WriteKey(t, keyFile, d.leaf.Key, certstest.PKCS8)
	if err := os.Mkdir(d.stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	id, err := certs.LoadIdentity(certFile, keyFile, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	d.id = id
	return d
}

func (d *device) onStatus(s lifecycle.Status) {
	d.mu.Lock()
	d.statuses = append(d.statuses, s)
	d.mu.Unlock()
	select {
	case d.changed <- struct{}{}:
	default:
	}
}

// entered counts the transitions into phase so far.
func (d *device) entered(phase lifecycle.Phase) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	prev := lifecycle.Phase("")
	for _, s := range d.statuses {
		if s.Phase == phase && prev != phase {
			n++
		}
		prev = s.Phase
	}
	return n
}

// waitEntered waits until the device has entered phase n times.
func (d *device) waitEntered(t *testing.T, phase lifecycle.Phase, n int) lifecycle.Status {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		if d.entered(phase) >= n {
			d.mu.Lock()
			defer d.mu.Unlock()
			return d.statuses[len(d.statuses)-1]
		}
		select {
		case <-d.changed:
		case <-deadline:
			d.mu.Lock()
			defer d.mu.Unlock()
			var phases []lifecycle.Phase
			for _, s := range d.statuses {
				phases = append(phases, s.Phase)
			}
			t.Fatalf("%s: did not enter %s %d times; phases so far %v", d.cn, phase, n, phases)
		}
	}
}

func fastSleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(min(d, 5*time.Millisecond))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("LIFECYCLE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

// provisioner makes the device's Provisioner against the emulator with
// short schedules: the long (refused) schedule is 20–80 ms here.
func (w *world) provisioner(t *testing.T, d *device) *lifecycle.Provisioner {
	t.Helper()
	tlsCfg := certs.TLSConfig(d.id, w.e.CACertPool(), "") // ServerName set per client
	p, err := lifecycle.New(lifecycle.Config{
		Identity: d.id,
		TLS:      tlsCfg,
		DPS: dps.Config{
			Endpoint: w.e.DPSEndpoint(), IDScope: w.e.IDScope(),
			MaxWait: 20 * time.Second, BackoffBase: 5 * time.Millisecond, BackoffMax: 20 * time.Millisecond,
			Sleep: fastSleep, // dps waits at least 2 s between polls
		},
		StateDir: d.stateDir,
		RetryMin: 20 * time.Millisecond, RetryMax: 80 * time.Millisecond,
		BackoffBase: 5 * time.Millisecond, BackoffMax: 20 * time.Millisecond,
		Logger: testLogger(t),
		Register: func(ctx context.Context, c dps.Config) (*dps.Result, error) {
			d.regs.Add(1)
			return dps.Register(ctx, c)
		},
		OnStatus: d.onStatus,
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (w *world) connector(t *testing.T, d *device) *lifecycle.IoTHub {
	return &lifecycle.IoTHub{Base: iothub.Config{
		TLS:                certs.TLSConfig(d.id, w.e.CACertPool(), ""),
		Logger:             testLogger(t),
		BackoffBase:        5 * time.Millisecond,
		BackoffMax:         20 * time.Millisecond,
		NotAuthorizedLimit: 2,
	}}
}

// run starts Run in the background and stops it at the end of the test.
func (w *world) run(t *testing.T, d *device) *lifecycle.Provisioner {
	t.Helper()
	p := w.provisioner(t, d)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, w.connector(t, d)) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("%s: Run = %v; want context.Canceled", d.cn, err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("%s: Run did not stop", d.cn)
		}
	})
	return p
}

// Reference flow step 5: assigned through DPS, cached, and a restart uses the
// cache instead of DPS.
func TestEmulatorAssignedCachedReused(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	d := w.device(t, "sensor-thl-001")
	ctx := context.Background()

	a, err := w.provisioner(t, d).Assignment(ctx, false)
	if err != nil {
		t.Fatalf("Assignment = %v", err)
	}
	if a.Hub != w.hub() || a.DeviceID != d.cn || a.CertFingerprintSHA256 != d.id.FingerprintSHA256 {
		t.Errorf("Assignment = %+v; want %s as %s bound to the certificate", a, w.hub(), d.cn)
	}
	if n := d.regs.Load(); n != 1 {
		t.Errorf("DPS registrations = %d; want 1", n)
	}
	if c, err := cache.Load(d.stateDir); err != nil || c.Hub != w.hub() {
		t.Errorf("cache = %+v, %v; want %s", c, err, w.hub())
	}

	// "Restart": a new Provisioner on the same state directory.
	p := w.run(t, d)
	s := d.waitEntered(t, lifecycle.PhaseConnected, 1)
	if !s.FromCache || s.Hub != w.hub() || s.DeviceID != d.cn {
		t.Errorf("status = %+v; want connected from the cache", s)
	}
	if n := d.regs.Load(); n != 1 {
		t.Errorf("DPS registrations after restart = %d; want still 1", n)
	}
	if !w.e.IsConnected(w.hub(), d.cn) {
		t.Error("the emulator hub has no connection from the device")
	}
	if got := p.Status().String(); got != "connected to "+w.hub()+" as "+d.cn {
		t.Errorf("STATUS = %q", got)
	}
}

// Hub identity deleted while connected: the hub refuses the reconnect
// (CONNACK 5), the tracker goes back to DPS, which re-creates the identity.
func TestEmulatorHubIdentityDeleted(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	d := w.device(t, "sensor-thl-001")
	w.run(t, d)
	d.waitEntered(t, lifecycle.PhaseConnected, 1)
	if err := w.e.Store().DeleteDevice(w.hub(), d.cn, ""); err != nil {
		t.Fatal(err)
	}
	s := d.waitEntered(t, lifecycle.PhaseConnected, 2)
	if d.entered(lifecycle.PhaseProvisioning) != 2 || d.regs.Load() != 2 {
		t.Errorf("provisioning phases = %d, registrations = %d; want 2 each", d.entered(lifecycle.PhaseProvisioning), d.regs.Load())
	}
	if s.FromCache || !errors.Is(s.Err, iothub.ErrNotAuthorized) {
		t.Errorf("status = %+v; want a fresh assignment after ErrNotAuthorized", s)
	}
	if _, err := w.e.Store().GetDevice(w.hub(), d.cn); err != nil {
		t.Errorf("hub identity not re-created: %v", err)
	}
	if !w.e.IsConnected(w.hub(), d.cn) {
		t.Error("not connected with the fresh identity")
	}
}

// Reference flow steps 7 and 9: an individual enrollment disables 002 and its
// identity is deleted; 002 is refused-disabled and retries on the long
// schedule while 001 is unaffected; deleting the individual enrollment
// re-admits 002 without a restart.
func TestEmulatorIndividualDisabledThenReadmitted(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	d1, d2 := w.device(t, "sensor-thl-001"), w.device(t, "sensor-thl-002")
	w.run(t, d1)
	p2 := w.run(t, d2)
	d1.waitEntered(t, lifecycle.PhaseConnected, 1)
	d2.waitEntered(t, lifecycle.PhaseConnected, 1)

	if _, err := w.e.EnrollDevice(d2.leaf.Cert, func(en *store.IndividualEnrollment) {
		en.ProvisioningStatus = store.StatusDisabled
	}); err != nil {
		t.Fatal(err)
	}
	if err := w.e.Store().DeleteDevice(w.hub(), d2.cn, ""); err != nil {
		t.Fatal(err)
	}
	s := d2.waitEntered(t, lifecycle.PhaseRefusedDisabled, 3) // it keeps retrying
	if !errors.Is(s.Err, dps.ErrDisabled) || s.Advice != lifecycle.AdviceDisabled || s.NextAttempt.IsZero() {
		t.Errorf("002 status = %+v; want ErrDisabled with the advice and a next attempt", s)
	}
	if _, err := os.Stat(cache.Path(d2.stateDir)); err == nil {
		t.Error("002 still has a cached assignment after the hub refused it")
	}
	if d1.entered(lifecycle.PhaseConnected) != 1 || d1.regs.Load() != 1 || !w.e.IsConnected(w.hub(), d1.cn) {
		t.Errorf("001 was affected: connected %d times, %d registrations, connected now %v",
			d1.entered(lifecycle.PhaseConnected), d1.regs.Load(), w.e.IsConnected(w.hub(), d1.cn))
	}

	if err := w.e.Store().DeleteIndividualEnrollment(d2.cn, ""); err != nil {
		t.Fatal(err)
	}
	d2.waitEntered(t, lifecycle.PhaseConnected, 2)
	if st := p2.Status(); st.Phase != lifecycle.PhaseConnected || st.FromCache {
		// Phase may have moved on only if the test is broken; report it.
		t.Errorf("002 status after re-admission = %+v", st)
	}
	if !w.e.IsConnected(w.hub(), d2.cn) {
		t.Error("002 not connected after re-admission")
	}
}

// Reference flow steps 8 and 9: the group is disabled (refused-disabled), then
// deleted (401002: refused-unauthorized), then enrolled again: the tracker
// comes back by itself.
func TestEmulatorGroupDisabledDeletedRestored(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	d := w.device(t, "sensor-thl-001")
	w.run(t, d)
	d.waitEntered(t, lifecycle.PhaseConnected, 1)

	w.enrollGroup(t, store.StatusDisabled)
	if err := w.e.Store().DeleteDevice(w.hub(), d.cn, ""); err != nil {
		t.Fatal(err)
	}
	s := d.waitEntered(t, lifecycle.PhaseRefusedDisabled, 2)
	if !errors.Is(s.Err, dps.ErrDisabled) {
		t.Errorf("status = %+v; want ErrDisabled", s)
	}

	if err := w.e.Store().DeleteEnrollmentGroup(groupID, ""); err != nil {
		t.Fatal(err)
	}
	s = d.waitEntered(t, lifecycle.PhaseRefusedUnauthorized, 2)
	var de *dps.Error
	if !errors.Is(s.Err, dps.ErrUnauthorized) || !errors.As(s.Err, &de) || de.ErrorCode != 401002 || s.Advice != lifecycle.AdviceUnauthorized {
		t.Errorf("status = %+v; want ErrUnauthorized 401002 with the advice", s)
	}

	w.enrollGroup(t, store.StatusEnabled)
	d.waitEntered(t, lifecycle.PhaseConnected, 2)
	if !w.e.IsConnected(w.hub(), d.cn) {
		t.Error("not connected after the group was restored")
	}
}

// A device disabled in the hub itself: DPS assigns it again (it does not
// re-enable hub identities, docs/protocol.md C), the hub still refuses, so the tracker
// waits on the long schedule instead of ping-ponging; re-enabling the
// identity brings it back.
func TestEmulatorHubIdentityDisabled(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	d := w.device(t, "sensor-thl-001")
	w.run(t, d)
	d.waitEntered(t, lifecycle.PhaseConnected, 1)

	if err := w.e.SetDeviceStatus(w.hub(), d.cn, store.StatusDisabled); err != nil {
		t.Fatal(err)
	}
	s := d.waitEntered(t, lifecycle.PhaseRefusedUnauthorized, 2)
	if !errors.Is(s.Err, lifecycle.ErrHubRefused) || !errors.Is(s.Err, iothub.ErrNotAuthorized) || s.Advice != lifecycle.AdviceHubRefused {
		t.Errorf("status = %+v; want ErrHubRefused with the advice", s)
	}
	if err := w.e.SetDeviceStatus(w.hub(), d.cn, store.StatusEnabled); err != nil {
		t.Fatal(err)
	}
	d.waitEntered(t, lifecycle.PhaseConnected, 2)
}
