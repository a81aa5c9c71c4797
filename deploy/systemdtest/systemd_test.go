package systemdtest

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/reefer/tracker/deploy/emulator"
	"github.com/reefer/tracker/deploy/emulator/emulatortest"
	"github.com/reefer/tracker/deploy/emulator/store"
	"github.com/reefer/tracker/internal/pnp"
	"github.com/reefer/tracker/internal/waitfor"
)

const deviceID = "sensor-systemd-001"

// slow scales every wait: a foreign rootfs runs under qemu-user, several
// times slower than natively.
var slow time.Duration = 1

// TestSystemd installs the package in a booted Debian 12 and shows, with
// the evidence in the test log (go test -v), the eight checks of
// `make test-systemd` (see README "Proven under a live systemd").
func TestSystemd(t *testing.T) {
	deb, upgrade := os.Getenv("TRACKER_DEB"), os.Getenv("TRACKER_DEB_UPGRADE")
	switch {
	case os.Getenv("TRACKER_SYSTEMD_TEST") == "":
		t.Skip("SKIP: boots a container; run it with `make test-systemd` (TRACKER_SYSTEMD_TEST=1)")
	case os.Geteuid() != 0:
		t.Skip("SKIP: systemd-nspawn needs root")
	case deb == "" || upgrade == "":
		t.Fatal("TRACKER_DEB and TRACKER_DEB_UPGRADE must name the package and a newer build of it (make test-systemd sets them)")
	}
	for _, tool := range []string{"systemd-nspawn", "mmdebstrap", "nsenter", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("SKIP: %s not installed (apt-get install systemd-container mmdebstrap util-linux openssl)", tool)
		}
	}
	debArch := strings.TrimSuffix(deb[strings.LastIndex(deb, "_")+1:], ".deb")
	if host, _ := exec.Command("dpkg", "--print-architecture").Output(); strings.TrimSpace(string(host)) != debArch {
		slow = 5
		// A foreign rootfs runs through qemu-user binfmt; mmdebstrap
		// checks for it with arch-test.
		if _, err := os.Stat("/proc/sys/fs/binfmt_misc/status"); err != nil {
			t.Skipf("SKIP: %s on a %s host needs binfmt_misc: mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; update-binfmts --enable", debArch, host)
		}
		if _, err := exec.LookPath("arch-test"); err != nil {
			t.Skip("SKIP: a foreign rootfs needs arch-test and qemu-user-static (apt-get install arch-test qemu-user-static binfmt-support)")
		}
	}
	start := time.Now()

	work := t.TempDir()
	cache := os.Getenv("TRACKER_ROOTFS_CACHE")
	if cache == "" {
		cache = filepath.Join("..", "..", ".cache", "systemd-test")
	}
	c := boot(t, rootfs(t, cache, debArch), work)
	for _, p := range []string{deb, upgrade} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		c.file("/root/"+filepath.Base(p), b, 0o644)
	}

	e := emulatortest.Start(t)
	hub := e.HubHost(0)
	t.Logf("emulator: DPS %s, hub %s, ID scope %s (on the host's loopback)", e.DPSEndpoint(), hub, e.IDScope())

	check := func(n int, what string) {
		t.Logf("\n==== %d. %s (%s)", n, what, time.Since(start).Round(time.Second))
	}

	// 1. Fresh install, unconfigured.
	check(1, "fresh install: user, directories, unit enabled and idle while unconfigured")
	c.run("dpkg -i /root/" + filepath.Base(deb))
	c.run("id tracker")
	stat := c.run("stat -c '%U:%G %a %n' /etc/tracker /var/lib/tracker")
	for _, want := range []string{"root:tracker 750 /etc/tracker", "tracker:tracker 700 /var/lib/tracker"} {
		if !strings.Contains(stat, want) {
			t.Errorf("want %q in %q", want, stat)
		}
	}
	if got := strings.TrimSpace(c.run("systemctl is-enabled tracker")); got != "enabled" {
		t.Errorf("is-enabled = %q; want enabled", got)
	}
	time.Sleep(6 * time.Second) // longer than RestartSec: a restart loop would show
	st := c.show("ActiveState", "Result", "NRestarts", "ConditionResult")
	t.Logf("after 6 s: %v", st)
	if st["ActiveState"] != "inactive" || st["Result"] != "success" || st["NRestarts"] != "0" || st["ConditionResult"] != "no" {
		t.Errorf("unconfigured unit: %v; want inactive, success, 0 restarts, condition not met", st)
	}
	doc, _ := c.sh("tracker doctor --offline --no-sensors")
	t.Logf("# tracker doctor --offline --no-sensors\n%s", doc)
	if !strings.Contains(doc, "no config file at /etc/tracker/tracker.json") {
		t.Error("tracker doctor does not say the config is missing")
	}

	// 2. Configured: identity from deploy/certs, config for the emulator.
	check(2, "configured: start reaches READY, StatusText, telemetry at the emulator")
	if slow > 1 {
		// qemu-user cannot emulate unshare(CLONE_NEWIPC): systemd fails
		// the unit with 226/NAMESPACE ("Failed to set up IPC namespacing:
		// Input/output error"). Real arm64 hardware has no such limit.
		t.Log("qemu-user: dropping PrivateIPC= for this emulated run only")
		c.run("mkdir -p /etc/systemd/system/tracker.service.d && printf '[Service]\\nPrivateIPC=no\\n' > /etc/systemd/system/tracker.service.d/qemu-user.conf && systemctl daemon-reload")
	}
	identity(t, c, e, work)
	writeConfig(t, c, e, "")
	c.run("systemctl start tracker") // Type=notify: returns after READY=1
	st = c.show("ActiveState", "SubState", "StatusText", "MainPID", "NRestarts")
	t.Logf("after start: %v", st)
	if st["ActiveState"] != "active" || !strings.Contains(st["StatusText"], "connected to hub") {
		t.Errorf("after start: %v; want active with a StatusText saying it is connected", st)
	}
	waitSeqs(t, e, hub, 3, 30*time.Second)

	// 3. Watchdog.
	check(3, "watchdog: SIGSTOP, killed after WatchdogSec, restarted, no seq lost")
	c.run("mkdir -p /etc/systemd/system/tracker.service.d && printf '[Service]\\nWatchdogSec=6\\n' > /etc/systemd/system/tracker.service.d/watchdog.conf && systemctl daemon-reload && systemctl restart tracker")
	before := c.show("MainPID", "NRestarts")
	c.run("kill -STOP " + before["MainPID"] + "; date +%T")
	waitUnit(t, c, 40*time.Second, func(s map[string]string) bool {
		return s["ActiveState"] == "active" && s["MainPID"] != before["MainPID"] && s["MainPID"] != "0" && s["NRestarts"] != before["NRestarts"]
	})
	if wd := c.run("journalctl -u tracker --no-pager -o short-precise | grep -E 'Watchdog timeout|Scheduled restart|Started' | tail -n 4"); !strings.Contains(wd, "Watchdog timeout") {
		t.Error("no watchdog timeout in the journal")
	}
	mark := maxSeq(t, e, hub)
	waitSeqs(t, e, hub, mark+3, 40*time.Second)
	c.run("rm /etc/systemd/system/tracker.service.d/watchdog.conf && systemctl daemon-reload")

	// 4. Invalid config.
	check(4, "invalid config: exit 78, stays failed, NRestarts does not grow")
	good, _ := os.ReadFile(filepath.Join(c.root, "etc/tracker/tracker.json"))
	c.file("/etc/tracker/tracker.json", []byte(`{"version": 1, "idScope": "x", "certFile": "/etc/tracker/device-chain.pem", "keyFile": "/etc/tracker/device.key", "telemetryDelay": 0}`), 0o640)
	c.sh("systemctl restart tracker")
	st = c.show("ActiveState", "Result", "ExecMainStatus", "NRestarts", "StatusText")
	time.Sleep(7 * time.Second)
	st2 := c.show("ActiveState", "Result", "ExecMainStatus", "NRestarts")
	t.Logf("at once: %v\n7 s later: %v", st, st2)
	if st2["ActiveState"] != "failed" || st2["ExecMainStatus"] != "78" || st2["NRestarts"] != st["NRestarts"] {
		t.Errorf("invalid config: %v then %v; want failed, exit 78, NRestarts unchanged", st, st2)
	}
	c.file("/etc/tracker/tracker.json", good, 0o640)
	c.run("systemctl reset-failed tracker; systemctl start tracker; systemctl is-active tracker")

	// 5. Hardening at run time: twin change and method too.
	check(5, "hardening: a full run (provision, telemetry, twin, method) without seccomp/EPERM denials; systemd-analyze security <= 2.0")
	v, err := e.UpdateDesired(hub, deviceID, map[string]any{"telemetryDelay": 2})
	if err != nil {
		t.Fatal(err)
	}
	waitAcknowledged(t, e, hub, "telemetryDelay", v, 2, 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second*slow)
	res, err := e.InvokeMethod(ctx, hub, deviceID, store.MethodRequest{MethodName: "getStatus", ResponseTimeoutInSeconds: 20 * int(slow)})
	cancel()
	if err != nil || res.Status != 200 {
		t.Errorf("getStatus: %v, %+v", err, res)
	}
	t.Logf("getStatus: status %d, %d bytes of payload", res.Status, len(res.Payload))
	denials, _ := c.sh("journalctl --no-pager -o cat _SYSTEMD_UNIT=tracker.service | grep -Ei 'seccomp|SIGSYS|bad system call|operation not permitted|permission denied|EPERM' || true")
	t.Logf("# denials in the tracker's journal:\n%s(end)", denials)
	if strings.TrimSpace(denials) != "" {
		t.Errorf("the tracker logged denials under its sandbox:\n%s", denials)
	}
	sec := c.run("systemd-analyze security --no-pager tracker.service | tail -n 1")
	if m := regexp.MustCompile(`Overall exposure level for tracker.service: ([0-9.]+)`).FindStringSubmatch(sec); m == nil {
		t.Errorf("no exposure level in %q", sec)
	} else if v, _ := strconv.ParseFloat(m[1], 64); v > 2.0 {
		t.Errorf("live exposure %.1f; want <= 2.0", v)
	}

	// 6. Journal priorities: a rejected desired value (WARN) and the
	// invalid config of check 4 (ERROR).
	check(6, "journald priorities: WARN at warning, ERROR at err, INFO not in -p warning")
	if _, err := e.UpdateDesired(hub, deviceID, map[string]any{"telemetryDelay": -5}); err != nil {
		t.Fatal(err)
	}
	waitJournal(t, c, "-p warning", "desired properties rejected", 30*time.Second)
	warn := c.run("journalctl --no-pager -o cat _SYSTEMD_UNIT=tracker.service -p warning")
	errs := c.run("journalctl --no-pager -o cat _SYSTEMD_UNIT=tracker.service -p err")
	info, _ := c.sh("journalctl --no-pager -o cat _SYSTEMD_UNIT=tracker.service -p info | grep -c 'level=INFO'")
	t.Logf("INFO lines in the journal at -p info: %s", strings.TrimSpace(info))
	switch {
	case !strings.Contains(warn, "level=WARN msg=\"desired properties rejected\""):
		t.Error("the WARN line is not at priority warning")
	case strings.Contains(warn, "level=INFO"):
		t.Error("INFO lines are at priority warning or above")
	case !strings.Contains(errs, "tracker run: "):
		t.Error("the config error is not at priority err")
	case strings.Contains(errs, "level=WARN"):
		t.Error("WARN lines are at priority err")
	case strings.TrimSpace(info) == "0":
		t.Error("no INFO lines at all: the test would not notice them leaking")
	}
	if _, err := e.UpdateDesired(hub, deviceID, map[string]any{"telemetryDelay": 1}); err != nil {
		t.Fatal(err)
	}

	// 7. Upgrade.
	check(7, "upgrade: restarts, keeps config, cache and queue; every seq reaches the emulator")
	sums := "sha256sum /etc/tracker/* /etc/default/tracker; ls -l /var/lib/tracker"
	beforeSums := c.run(sums)
	pid := c.show("MainPID")["MainPID"]
	mark = maxSeq(t, e, hub)
	c.run("dpkg -i /root/" + filepath.Base(upgrade))
	c.run("tracker version; dpkg-query -W tracker")
	afterSums := c.run(sums)
	if hashes(beforeSums) != hashes(afterSums) {
		t.Errorf("config or identity changed by the upgrade")
	}
	for _, f := range []string{" queue.db\n", " dps-assignment.json\n"} {
		if !strings.Contains(afterSums, f) {
			t.Errorf("%s not in /var/lib/tracker after the upgrade", strings.TrimSpace(f))
		}
	}
	st = c.show("ActiveState", "MainPID")
	if st["ActiveState"] != "active" || st["MainPID"] == pid {
		t.Errorf("after the upgrade: %v (MainPID was %s); want active under a new process", st, pid)
	}
	c.run("journalctl -u tracker --no-pager -o cat | grep 'tracker starting' | tail -n 2")
	waitSeqs(t, e, hub, mark+3, 40*time.Second)

	// 8. Remove, then purge.
	check(8, "remove stops; purge leaves no state")
	c.run("dpkg -r tracker; systemctl is-active tracker || true; ls /etc/tracker")
	c.run("dpkg --purge tracker")
	left, _ := c.sh("ls -d /etc/tracker /var/lib/tracker /etc/default/tracker /lib/systemd/system/tracker.service /etc/systemd/system/multi-user.target.wants/tracker.service /var/lib/systemd/deb-systemd-helper-enabled/tracker.service.dsh-also /var/lib/systemd/deb-systemd-helper-masked/tracker.service 2>/dev/null; grep -lx tracker /proc/[0-9]*/comm 2>/dev/null; dpkg-query -W tracker 2>&1 | grep -v 'no packages found'")
	t.Logf("# what is left of tracker after purge:\n%s(end)", left)
	if strings.TrimSpace(left) != "" {
		t.Errorf("purge left:\n%s", left)
	}
	t.Logf("all checks done in %s", time.Since(start).Round(time.Second))
}

// identity makes a device certificate with deploy/certs, enrolls its root
// in the emulator's DPS and puts the files where the config points.
func identity(t *testing.T, c *container, e *emulator.Emulator, work string) {
	t.Helper()
	dir := filepath.Join(work, "certs")
	for _, args := range [][]string{{"../certs/ca.sh", "--dir", dir}, {"../certs/device.sh", "--dir", dir, deviceID}} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", args, err, out)
		}
	}
	rootPEM, err := os.ReadFile(filepath.Join(dir, "root.pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(rootPEM)
	root, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.EnrollGroup("enrollgroup-systemd", root, func(g *store.EnrollmentGroup) {
		g.IoTHubs = []string{e.HubHost(0)}
		g.InitialTwin = &store.InitialTwin{Properties: store.InitialTwinProperties{Desired: map[string]any{"telemetryDelay": 1}}}
	}); err != nil {
		t.Fatal(err)
	}
	for src, dst := range map[string]string{
		filepath.Join(dir, "devices", deviceID, deviceID+"-chain.pem"): "/etc/tracker/device-chain.pem",
		filepath.Join(dir, "devices", deviceID, deviceID+".key"):       "/etc/tracker/device.key",
		e.Info().CACertPath: "/etc/tracker/azemu-ca.pem",
	} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		c.file(dst, b, 0o644)
	}
	c.run("chown tracker:tracker /etc/tracker/device.key && chmod 0600 /etc/tracker/device.key && ls -l /etc/tracker")
}

func writeConfig(t *testing.T, c *container, e *emulator.Emulator, _ string) {
	t.Helper()
	cfg, _ := json.MarshalIndent(map[string]any{
		"version": 1, "idScope": e.IDScope(), "dpsEndpoint": e.DPSEndpoint(),
		"certFile": "/etc/tracker/device-chain.pem", "keyFile": "/etc/tracker/device.key", "caFile": "/etc/tracker/azemu-ca.pem",
		"sensors": map[string]any{"env": map[string]any{"mode": "simulated"}, "gps": map[string]any{"mode": "simulated"}},
	}, "", "  ")
	c.file("/etc/tracker/tracker.json", cfg, 0o640)
	c.run("chgrp tracker /etc/tracker/tracker.json")
}

// seqs returns the sequence numbers that reached the hub, each once.
func seqs(t *testing.T, e *emulator.Emulator, hub string) []uint64 {
	t.Helper()
	seen := map[uint64]bool{}
	for _, m := range e.Telemetry(hub, deviceID) {
		var body struct {
			Seq uint64 `json:"seq"`
		}
		if err := json.Unmarshal(m.Body, &body); err != nil {
			t.Fatalf("telemetry body %q: %v", m.Body, err)
		}
		seen[body.Seq] = true
	}
	var s []uint64
	for n := range seen {
		s = append(s, n)
	}
	slices.Sort(s)
	return s
}

func maxSeq(t *testing.T, e *emulator.Emulator, hub string) uint64 {
	s := seqs(t, e, hub)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)-1]
}

// waitSeqs waits until seq n has arrived and checks that every seq from
// the first up to the highest arrived at least once.
func waitSeqs(t *testing.T, e *emulator.Emulator, hub string, n uint64, timeout time.Duration) {
	t.Helper()
	waitfor.Until(t, fmt.Sprintf("seq %d at the emulator", n), timeout*slow, 200*time.Millisecond, func() bool { return maxSeq(t, e, hub) >= n })
	s := seqs(t, e, hub)
	var missing []uint64
	for want, i := s[0], 0; want <= s[len(s)-1]; want++ {
		if s[i] == want {
			i++
		} else {
			missing = append(missing, want)
		}
	}
	t.Logf("emulator: %d messages, seq %d..%d, missing %v", len(e.Telemetry(hub, deviceID)), s[0], s[len(s)-1], missing)
	if len(missing) > 0 {
		t.Errorf("sequence numbers lost: %v", missing)
	}
}

func waitUnit(t *testing.T, c *container, timeout time.Duration, ok func(map[string]string) bool) {
	t.Helper()
	var st map[string]string
	waitfor.Until(t, "the unit's restart", timeout*slow, 250*time.Millisecond, func() bool {
		st = c.show("ActiveState", "SubState", "MainPID", "NRestarts", "Result")
		return ok(st)
	})
	t.Logf("unit: %v", st)
}

// waitAcknowledged waits for the tracker to accept a writable property at
// desired version: the twin's Plug and Play acknowledgement (docs/protocol.md
// B.5) with ac 200, that av and value.
func waitAcknowledged(t *testing.T, e *emulator.Emulator, hub, key string, version int64, want float64, timeout time.Duration) {
	t.Helper()
	var got any
	waitfor.Until(t, fmt.Sprintf("reported %s = %v accepted at version %d", key, want, version), timeout*slow, 200*time.Millisecond, func() bool {
		tw, err := e.Store().GetTwin(hub, deviceID)
		if err != nil {
			return false
		}
		got = tw.Properties.Reported.Props[key]
		a, err := pnp.From(got)
		v, _ := a.Number()
		return err == nil && a.Code == pnp.Accepted && a.Version == version && v == want
	})
	b, _ := json.Marshal(got)
	t.Logf("twin: reported %s = %s", key, b)
}

func waitJournal(t *testing.T, c *container, filter, want string, timeout time.Duration) {
	t.Helper()
	waitfor.Until(t, fmt.Sprintf("%q in journalctl %s", want, filter), timeout*slow, 250*time.Millisecond, func() bool {
		out, _ := c.sh("journalctl --no-pager -o cat _SYSTEMD_UNIT=tracker.service " + filter)
		return strings.Contains(out, want)
	})
}

// hashes keeps the sha256sum lines of a listing.
func hashes(listing string) string {
	var keep []string
	for _, l := range strings.Split(listing, "\n") {
		if f := strings.Fields(l); len(f) == 2 && len(f[0]) == 64 {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}
