// Command demo runs the reference flow (docs/reference-flow.md) on this
// machine, with the local emulator standing in for Azure: `make demo`
// builds the binaries and runs it.
//
// It starts azemu on loopback and does the operator's side with fleetctl's
// code (deploy/fleetctl/fleet over the services' REST APIs): upload the
// test CA and prove possession, create the group enrollment with initial
// twin telemetryDelay 1 and a credential policy. It makes device
// certificates with deploy/certs, runs two trackers with simulated
// sensors (sensor-thl-001 asks DPS to issue its hub certificate for a key
// it makes, and renews it; the demo shows both), watches their telemetry, sets
// desired telemetryDelay 3 on sensor-thl-001 and shows the interval change
// and the reported value, disenrolls sensor-thl-002 and shows it refused
// while 001 carries on, re-enrolls it and shows it provision and send again
// without a restart, then deprovisions the group step by step (disable,
// identities, group, registration records, CA) showing each step from the
// emulator's side and in the trackers' logs. It exits non-zero when any of
// that did not happen, so it doubles as an end-to-end check.
//
// The trackers run with reprovisionRetry 2s..5s so re-enrollment is
// picked up within seconds; the default is 5 to 60 minutes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/reefer/tracker/deploy/fleetctl/azrest"
	"github.com/reefer/tracker/deploy/fleetctl/fleet"
	"github.com/reefer/tracker/internal/pnp"
)

var devices = []string{"sensor-thl-001", "sensor-thl-002"}

// The names of the reference flow.
const (
	groupID = "enrollgroup-sensors"
	caName  = "groupCA-sensors"
)

// Certificate issuance (docs/protocol.md A.5): sensor-thl-001's hub
// certificate is issued by DPS under the emulator's credential policy,
// with a validity short enough to watch a renewal.
const (
	issuingDevice  = "sensor-thl-001"
	policyName     = "trackers"
	issuedValidity = 30 * time.Second
	renewAt        = 0.5
)

// The demo's reprovisionRetry (config: a duration string below a minute).
const (
	retryMin = 2 * time.Second
	retryMax = 5 * time.Second
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo: FAILED: %v\n", err)
		os.Exit(1)
	}
}

type demo struct {
	mu      sync.Mutex
	waiters map[string][]logWaiter
	procs   map[string]*exec.Cmd
	exited  map[string]bool

	work, tracker, azemu, certs string
	info                        emulatorInfo
	fleet                       *fleet.Fleet
	start                       time.Time
	out                         *lockedWriter
}

// emulatorInfo is the part of azemu's emulator.json the demo reads.
type emulatorInfo struct {
	DPS struct {
		IDScope, DeviceEndpoint string
	} `json:"dps"`
	Hubs []struct {
		HostName string
	} `json:"hubs"`
	ServiceURL string `json:"serviceUrl"`
	CACertPath string `json:"caCertPath"`
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	d := &demo{start: time.Now(), out: &lockedWriter{w: os.Stdout}, waiters: map[string][]logWaiter{},
		procs: map[string]*exec.Cmd{}, exited: map[string]bool{}}
	fs.StringVar(&d.work, "work", ".demo", "working directory (emulator state, certificates, tracker state)")
	fs.StringVar(&d.tracker, "tracker", "", "tracker binary")
	fs.StringVar(&d.azemu, "azemu", "", "azemu binary")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if d.tracker == "" || d.azemu == "" {
		return errors.New("--tracker and --azemu are required (make demo passes them)")
	}
	d.certs = filepath.Join(d.work, "certs")
	// Fresh emulator and tracker state every run; the test CA is kept.
	for _, dir := range []string{"azemu", "trackers"} {
		if err := os.RemoveAll(filepath.Join(d.work, dir)); err != nil {
			return err
		}
	}
	one, two := devices[0], devices[1]

	d.step("1. Start the local DPS + IoT Hub emulator (azemu) on loopback")
	stopEmu, err := d.startEmulator(ctx)
	if err != nil {
		return err
	}
	defer stopEmu()
	d.say("ID scope %s, DPS %s, hub %s, service API %s", d.info.DPS.IDScope, d.info.DPS.DeviceEndpoint, d.hub(), d.info.ServiceURL)
	d.say("the operator's steps below are fleetctl's (fleetctl --emulator %s ...)", filepath.Join(d.work, "azemu", "emulator.json"))

	d.step("2. Test CA with OpenSSL, uploaded to DPS with proof of possession")
	if err := d.sh("deploy/certs/ca.sh", "--dir", d.certs); err != nil {
		return err
	}
	if err := d.uploadCA(ctx); err != nil {
		return err
	}

	d.step("3. Group enrollment %s (static to %s, initial twin telemetryDelay 1, credential policy %s)", groupID, d.hub(), policyName)
	g, err := d.fleet.CreateGroup(ctx, fleet.GroupSpec{ID: groupID, CAName: caName, Common: fleet.Common{Hubs: []string{d.hub()},
		InitialDesired: map[string]any{"telemetryDelay": 1}, CredentialPolicy: policyName}})
	if err != nil {
		return err
	}
	d.say("fleetctl group create %s --ca-name %s --iot-hub %s --initial-twin '{\"telemetryDelay\":1}' --credential-policy %s: %s, etag %s",
		groupID, caName, d.hub(), policyName, g.ProvisioningStatus, g.ETag)
	d.say("a tracker that sends a CSR gets its hub certificate from the policy's CA (azemu --credential-policy %s --issued-cert-validity %s); one that does not keeps its own", policyName, issuedValidity)

	d.step("4. Device certificates (CN = device id, signed by the intermediate)")
	for _, id := range devices {
		if err := d.sh("deploy/certs/device.sh", "--dir", d.certs, id); err != nil {
			return err
		}
	}

	d.step("5. Run two trackers with simulated sensors; watch telemetry arrive")
	d.say("reprovisionRetry is %s..%s here, for the demo (default 5..60 min), so a re-enrollment is picked up in seconds", retryMin, retryMax)
	events, stopMon, err := d.monitor(ctx)
	if err != nil {
		return err
	}
	defer stopMon()
	renewed := d.waitLog(issuingDevice, 60*time.Second, "hub accepted the new operational certificate; switched to it")
	stopTrackers, err := d.startTrackers(ctx)
	if err != nil {
		return err
	}
	defer stopTrackers()
	seen := newArrivals()
	if err := d.watch(ctx, events, seen, 25*time.Second, func() bool {
		return seen.count(one) >= 4 && seen.count(two) >= 4
	}); err != nil {
		return fmt.Errorf("waiting for telemetry from both trackers: %w", err)
	}
	before := seen.interval(one)
	d.say("%s sends every %.1f s (the enrollment's initial twin)", one, before.Seconds())

	if err := d.showIssued(ctx, events, seen, renewed); err != nil {
		return err
	}

	d.step("6. Twin update: desired telemetryDelay 3 on %s", one)
	version, err := d.patchDesired(ctx, one, map[string]any{"telemetryDelay": 3})
	if err != nil {
		return err
	}
	mark := seen.count(one)
	if err := d.watch(ctx, events, seen, 20*time.Second, func() bool { return seen.count(one) >= mark+4 }); err != nil {
		return fmt.Errorf("waiting for telemetry at the new interval: %w", err)
	}
	after := seen.intervalSince(one, mark+1)
	ack, err := d.acknowledged(ctx, one, "telemetryDelay", version)
	if err != nil {
		return err
	}
	reported, _ := ack.Number()
	d.say("%s now sends every %.1f s; its twin reports telemetryDelay = %v (ac %d, av %d: %s)",
		one, after.Seconds(), reported, ack.Code, ack.Version, ack.Description)
	d.say("%s is unaffected: every %.1f s", two, seen.interval(two).Seconds())
	switch {
	case before < 500*time.Millisecond || before > 2*time.Second:
		return fmt.Errorf("interval before the twin change = %s; want about 1 s", before)
	case after < 2500*time.Millisecond || after > 4*time.Second:
		return fmt.Errorf("interval after the twin change = %s; want about 3 s", after)
	case reported != 3 || ack.Code != pnp.Accepted || ack.Version != version:
		return fmt.Errorf("reported telemetryDelay = %+v; want value 3 accepted (ac 200) at desired version %d", ack, version)
	}

	d.step("7. Disenroll %s: disabled individual enrollment, hub identity deleted", two)
	refused := d.waitLog(two, 30*time.Second, "DPS refused the device", "disabled")
	leaf, err := os.ReadFile(filepath.Join(d.certs, "devices", two, two+".pem"))
	if err != nil {
		return err
	}
	res, err := d.fleet.Disenroll(ctx, two, string(leaf))
	if err != nil {
		return err
	}
	d.say("fleetctl enrollment disenroll %s --cert %s.pem: %s %s individual enrollment, hub identity deleted: %v", two, two, res.Enrollment, res.Attestation, res.IdentityDeleted)
	if !<-refused {
		return fmt.Errorf("%s was not refused by DPS after disenrollment", two)
	}
	mark1, mark2 := seen.count(one), seen.count(two)
	if err := d.watch(ctx, events, seen, 15*time.Second, func() bool { return seen.count(one) >= mark1+2 }); err != nil {
		return fmt.Errorf("%s after disenrolling %s: %w", one, two, err)
	}
	if err := d.showDPSSide(ctx, two, "disabled", false); err != nil {
		return err
	}
	d.say("%s is refused (status disabled) and waits on its retry schedule; it sent %d message(s) since; %s sent %d",
		two, seen.count(two)-mark2, one, seen.count(one)-mark1)

	d.step("9. Re-enroll %s for its next trip: delete its individual enrollment (no restart, no technician)", two)
	pid := d.procs[two].Process.Pid
	back := d.waitLog(two, 30*time.Second, "msg=provisioned")
	if _, err := d.fleet.Reenroll(ctx, two); err != nil {
		return err
	}
	d.say("fleetctl enrollment reenroll %s: the group admits it again at its next retry", two)
	if !<-back {
		return fmt.Errorf("%s did not provision again after re-enrollment", two)
	}
	mark2 = seen.count(two)
	if err := d.watch(ctx, events, seen, 20*time.Second, func() bool { return seen.count(two) >= mark2+2 }); err != nil {
		return fmt.Errorf("telemetry from %s after re-enrollment: %w", two, err)
	}
	if d.restarted(two, pid) {
		return fmt.Errorf("%s was restarted (pid %d gone); re-enrollment must be picked up by the running tracker", two, pid)
	}
	if err := d.showDPSSide(ctx, two, "assigned", true); err != nil {
		return err
	}
	d.say("%s (still pid %d, never restarted) provisioned again and sends telemetry", two, pid)

	if err := d.deprovision(ctx, events, seen); err != nil {
		return err
	}

	d.step("Stop the trackers (SIGTERM: flush, close the queue) and the emulator")
	stopTrackers()
	stopMon()
	stopEmu()
	fmt.Fprintf(d.out, "\nDemo finished in %.0f s: both trackers provisioned through DPS and sent telemetry, %s on a hub certificate DPS issued "+
		"for a key it made and renewed before expiry, %s followed its twin, "+
		"%s was disenrolled, refused and re-enrolled without a restart, and the group was deprovisioned down to its CA.\n",
		time.Since(d.start).Seconds(), issuingDevice, one, two)
	return nil
}

// deprovision is reference flow step 8 taken to the end of the group's
// life, one fleetctl step at a time, each shown from the emulator's side
// and in the trackers' logs.
func (d *demo) deprovision(ctx context.Context, events <-chan azrest.Event, seen *arrivals) error {
	d.step("8. Deprovision the group")
	g, err := d.fleet.SetGroupStatus(ctx, groupID, azrest.StatusDisabled)
	if err != nil {
		return err
	}
	d.say("fleetctl group disable %s: provisioningStatus %s (connected trackers keep their hub session until the hub refuses them)", groupID, g.ProvisioningStatus)

	var refused []<-chan bool
	for _, id := range devices {
		refused = append(refused, d.waitLog(id, 30*time.Second, "DPS refused the device", "disabled"))
	}
	recs, ids, err := d.fleet.GroupDevices(ctx, groupID)
	if err != nil {
		return err
	}
	if len(recs) != len(devices) {
		return fmt.Errorf("the group has %d registration records; want %d", len(recs), len(devices))
	}
	s, err := d.fleet.DeleteIdentities(ctx, ids)
	if err == nil {
		err = s.Err()
	}
	if err != nil {
		return err
	}
	d.say("fleetctl device delete --group %s: %d hub identities deleted", groupID, s.Done)
	for i, ch := range refused {
		if !<-ch {
			return fmt.Errorf("%s was not refused (disabled) after the group was disabled and its identity deleted", devices[i])
		}
	}
	twins, err := d.fleet.Hub.Query(ctx, "")
	if err != nil {
		return err
	}
	if len(twins) != 0 {
		return fmt.Errorf("%d hub identities left after deleting them", len(twins))
	}
	d.say("emulator: fleetctl device list shows no devices; both trackers logged 'DPS refused the device' (disabled)")

	// Deleting the group before its records: a tracker still retrying
	// against a disabled group writes a fresh "disabled" record, one
	// without an enrollment does not (DPS answers 401).
	for i, id := range devices {
		refused[i] = d.waitLog(id, 30*time.Second, "DPS refused the device", "401")
	}
	if err := d.fleet.DPS.DeleteGroup(ctx, groupID, ""); err != nil {
		return err
	}
	d.say("fleetctl group delete %s", groupID)
	if _, err := d.fleet.DPS.GetGroup(ctx, groupID); !errors.Is(err, azrest.ErrNotFound) {
		return fmt.Errorf("group still there after delete: %v", err)
	}
	for i, ch := range refused {
		if !<-ch {
			return fmt.Errorf("%s was not refused with 401 once the group was deleted", devices[i])
		}
	}
	d.say("emulator: fleetctl group show %s answers 404; both trackers logged 'DPS refused the device' (401: no enrollment)", groupID)

	s, err = d.fleet.DeleteRegistrations(ctx, ids)
	if err == nil {
		err = s.Err()
	}
	if err != nil {
		return err
	}
	d.say("fleetctl registration delete --group %s: %d registration records deleted (deleting a group keeps them; they count against the DPS quota)", groupID, s.Done)
	// One more retry of each tracker, then the records must still be gone.
	for i, id := range devices {
		refused[i] = d.waitLog(id, 30*time.Second, "DPS refused the device", "401")
	}
	for i, ch := range refused {
		if !<-ch {
			return fmt.Errorf("%s did not retry after its record was deleted", devices[i])
		}
	}
	if recs, _, err := d.fleet.GroupDevices(ctx, groupID); err != nil || len(recs) != 0 {
		return fmt.Errorf("registration records after deleting them: %d, %v", len(recs), err)
	}
	d.say("emulator: fleetctl registration list --group %s is empty, and stays so while the trackers keep asking", groupID)

	if err := d.fleet.DPS.DeleteCA(ctx, caName); err != nil {
		return err
	}
	if _, err := d.fleet.DPS.GetCA(ctx, caName); !errors.Is(err, azrest.ErrNotFound) {
		return fmt.Errorf("CA %s still there after delete: %v", caName, err)
	}
	d.say("fleetctl ca delete %s: the CA is gone (on Azure: fleet.sh teardown, az iot dps certificate delete)", caName)
	return nil
}

// showDPSSide prints (and checks) a device's registration record and
// hub identity as the emulator has them.
func (d *demo) showDPSSide(ctx context.Context, id, status string, identity bool) error {
	rec, err := d.fleet.DPS.GetRegistration(ctx, id)
	if err != nil {
		return err
	}
	if rec.Status != status {
		return fmt.Errorf("%s's registration record says %q; want %q", id, rec.Status, status)
	}
	_, derr := d.fleet.Hub.GetDevice(ctx, id)
	switch {
	case identity && derr != nil:
		return fmt.Errorf("%s has no hub identity: %v", id, derr)
	case !identity && !errors.Is(derr, azrest.ErrNotFound):
		return fmt.Errorf("%s's hub identity: %v; want not found", id, derr)
	}
	idText := "none"
	if identity {
		idText = "present"
	}
	d.say("emulator: fleetctl registration show %s: status %s %s; hub identity %s", id, rec.Status, rec.Substatus, idText)
	return nil
}

// restarted reports whether tracker id is no longer the process pid.
func (d *demo) restarted(id string, pid int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.exited[id] || d.procs[id].Process.Pid != pid
}

// uploadCA is step 2 with fleetctl's ca commands (on Azure these are ARM
// calls: fleet.sh setup).
func (d *demo) uploadCA(ctx context.Context) error {
	root, err := os.ReadFile(filepath.Join(d.certs, "root.pem"))
	if err != nil {
		return err
	}
	if _, err := d.fleet.DPS.UploadCA(ctx, caName, string(root), false); err != nil {
		return err
	}
	c, err := d.fleet.DPS.VerificationCode(ctx, caName)
	if err != nil {
		return err
	}
	d.say("fleetctl ca upload %s --cert root.pem; fleetctl ca code %s: %s", caName, caName, c.Properties.VerificationCode)
	if err := d.sh("deploy/certs/verification.sh", "--dir", d.certs, c.Properties.VerificationCode); err != nil {
		return err
	}
	proof, err := os.ReadFile(filepath.Join(d.certs, "verification.pem"))
	if err != nil {
		return err
	}
	v, err := d.fleet.DPS.VerifyCA(ctx, caName, string(proof))
	if err != nil {
		return err
	}
	if !v.Properties.IsVerified {
		return fmt.Errorf("%s is not verified after proof of possession", caName)
	}
	d.say("fleetctl ca verify %s --cert verification.pem: verified", caName)
	return nil
}

func (d *demo) hub() string { return d.info.Hubs[0].HostName }

func (d *demo) step(format string, args ...any) {
	fmt.Fprintf(d.out, "\n\033[1m== "+format+"\033[0m\n", args...)
}

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, "   "+format+"\n", args...)
}

// sh runs a deploy script, showing its output indented.
func (d *demo) sh(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" && !strings.HasPrefix(l, "  ") {
			d.say("%s", l)
		}
	}
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// lockedWriter keeps lines from several goroutines whole.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
