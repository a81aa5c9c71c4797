package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reefer/tracker/deploy/emulator"
	"github.com/reefer/tracker/deploy/emulator/store"
	"github.com/reefer/tracker/internal/syncbuf"
	"github.com/reefer/tracker/provisioning/opcert"
)

// issuing has DPS issue the tracker's hub certificate, valid for
// validity, renewed at half of it.
func issuing(validity time.Duration) rigOpt {
	return func(e *emulator.Emulator, g *store.EnrollmentGroup, cfg map[string]any) {
		if _, err := e.CreateCredentialPolicy("trackers", validity); err != nil {
			panic(err)
		}
		g.CredentialPolicyName = "trackers"
		cfg["certificateIssuance"] = map[string]any{"enabled": true, "renewAt": 0.5}
		cfg["reprovisionRetry"] = map[string]any{"min": "1s", "max": "2s"}
	}
}

// TestKill9DuringRenewalKeepsAUsableIdentity SIGKILLs the real binary at
// each step of a renewal (while DPS signs, right after the new bundle is
// written, while it reconnects with it) and at a moment of its own. After
// every kill each operational bundle on disk is whole (key with its
// chain), and the restarted tracker is back on the hub and sending.
func TestKill9DuringRenewalKeepsAUsableIdentity(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	b := newBinaryRig(t, issuing(8*time.Second))
	st := opcert.Store{Dir: b.state}
	type proc struct {
		cmd  *exec.Cmd
		logs *syncbuf.Buffer
	}
	run := func() proc {
		p := proc{cmd: exec.Command(b.bin, "run", "--config", b.cfg), logs: &syncbuf.Buffer{}}
		p.cmd.Env = append(os.Environ(), "JOURNAL_STREAM=")
		p.cmd.Stderr = p.logs
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return p
	}
	kill := func(p proc) {
		t.Helper()
		if err := p.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		p.cmd.Wait()
	}
	sending := func(p proc, round string) {
		t.Helper()
		n := b.e.TelemetryCount(b.hub, binaryDevice)
		waitFor(t, round+": sending on the hub", 60*time.Second, func() bool { return b.e.TelemetryCount(b.hub, binaryDevice) > n })
	}
	// whole: every bundle present loads with its key matching its chain.
	whole := func(round string) {
		t.Helper()
		n := 0
		for name, load := range map[string]func() (any, error){
			opcert.CurrentFile: func() (any, error) { return st.Current() },
			opcert.PendingFile: func() (any, error) { return st.Pending() },
		} {
			_, err := load()
			switch {
			case err == nil:
				n++
			case !errors.Is(err, opcert.ErrNone):
				t.Errorf("%s: %s after kill -9: %v", round, name, err)
			}
		}
		if n == 0 {
			t.Errorf("%s: no operational certificate after kill -9", round)
		}
	}

	for i, at := range []string{
		"renewing the operational certificate through DPS",
		"DPS issued an operational certificate",
		"reconnecting with the renewed operational certificate",
		"",
	} {
		round := fmt.Sprintf("round %d", i)
		p := run()
		sending(p, round)
		if at == "" {
			time.Sleep(2500 * time.Millisecond) // a moment of its own
		} else {
			// The first issuance logs "DPS issued" too: wait for the
			// renewal's (after a renewal was announced).
			waitFor(t, round+": "+at, 60*time.Second, func() bool {
				l := p.logs.String()
				r := strings.LastIndex(l, "renewing the operational certificate through DPS")
				return r >= 0 && strings.Contains(l[r:], at)
			})
		}
		kill(p)
		t.Logf("%s: killed at %q; current %v", round, at, fileExists(filepath.Join(b.state, opcert.CurrentFile)))
		whole(round)
	}
	p := run()
	sending(p, "after the kills")
	first, err := st.Current()
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a renewal after the kills", 60*time.Second, func() bool {
		c, err := st.Current()
		return err == nil && c.FingerprintSHA256 != first.FingerprintSHA256
	})
	sending(p, "after the renewal")
	kill(p)
	if left, _ := filepath.Glob(filepath.Join(b.state, ".operational*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
	if strings.Contains(p.logs.String(), "PRIVATE KEY") {
		t.Error("the log shows key material")
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
