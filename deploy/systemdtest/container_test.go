package systemdtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/reefer/tracker/internal/syncbuf"
)

// rootfs returns the cached Debian 12 minbase rootfs with systemd and dbus
// for debArch, building it with mmdebstrap when missing. The cache is only
// read afterwards: each test boots a copy.
func rootfs(t *testing.T, cache, debArch string) string {
	t.Helper()
	dir := filepath.Join(cache, "rootfs-bookworm-"+debArch)
	if _, err := os.Stat(filepath.Join(dir, "lib/systemd/systemd")); err == nil {
		t.Logf("rootfs: cached %s", dir)
		return dir
	}
	tmp := dir + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	t.Logf("rootfs: building %s with mmdebstrap (about a minute natively, much longer under qemu-user)", dir)
	cmd := exec.Command("mmdebstrap", "--variant=minbase", "--arch="+debArch, "--include=systemd,dbus", "bookworm", tmp)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mmdebstrap: %v\n%s", err, tail(out, 40))
	}
	if err := os.Rename(tmp, dir); err != nil {
		t.Fatal(err)
	}
	t.Logf("rootfs: built in %s", time.Since(start).Round(time.Second))
	return dir
}

// container is a booted systemd-nspawn container.
type container struct {
	t      *testing.T
	root   string
	leader int // the container's PID 1, as seen from the host
	cmd    *exec.Cmd
	exited chan struct{}
	out    syncbuf.Buffer // nspawn's console
}

// boot copies the rootfs and boots it; t.Cleanup powers it off and
// deletes the copy.
func boot(t *testing.T, rootfs, work string) *container {
	t.Helper()
	c := &container{t: t, root: filepath.Join(work, "root"), exited: make(chan struct{})}
	start := time.Now()
	if out, err := exec.Command("cp", "-a", "--reflink=auto", rootfs, c.root).CombinedOutput(); err != nil {
		t.Fatalf("copy rootfs: %v\n%s", err, out)
	}
	// The names the tracker dials ("localhost:PORT") resolve without DNS.
	if err := os.WriteFile(filepath.Join(c.root, "etc/hosts"), []byte("127.0.0.1 localhost\n::1 localhost\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("trk%d", os.Getpid())
	c.cmd = exec.Command("systemd-nspawn", "--boot", "--register=no", "--keep-unit", "--console=passive", "--quiet",
		"--directory="+c.root, "--machine="+name)
	c.cmd.Stdout, c.cmd.Stderr = &c.out, &c.out
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("systemd-nspawn: %v", err)
	}
	go func() { c.cmd.Wait(); close(c.exited) }()
	t.Cleanup(c.poweroff)

	// PID 1 of the container is the nspawn child that runs systemd (nspawn
	// forks helpers before it).
	deadline := time.Now().Add(60 * time.Second * slow)
	for c.leader == 0 {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", c.cmd.Process.Pid, c.cmd.Process.Pid))
		for _, f := range strings.Fields(string(b)) {
			comm, _ := os.ReadFile("/proc/" + f + "/comm")
			if strings.TrimSpace(string(comm)) == "systemd" {
				c.leader, _ = strconv.Atoi(f)
			}
		}
		if c.leader != 0 {
			break
		}
		select {
		case <-c.exited:
			t.Fatalf("systemd-nspawn exited during boot:\n%s", c.console())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no container init after %s:\n%s", 60*time.Second*slow, c.console())
		}
	}
	// Wait for the boot to finish (degraded is fine: a minimal rootfs
	// may lack units the host environment would start).
	for {
		out, _ := c.sh("systemctl is-system-running --wait")
		s := strings.TrimSpace(out)
		if s == "running" || s == "degraded" {
			t.Logf("container: booted (%s) in %s", s, time.Since(start).Round(100*time.Millisecond))
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("container did not finish booting: %q\n%s", s, c.console())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (c *container) console() string { return string(tail([]byte(c.out.String()), 30)) }

// sh runs a shell script inside the container (all its namespaces) and
// returns the combined output.
func (c *container) sh(script string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute*slow)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", "--target="+strconv.Itoa(c.leader), "--all", "/bin/sh", "-c", script)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// run is sh for a step that must succeed; the command and its output are
// logged as the evidence.
func (c *container) run(script string) string {
	c.t.Helper()
	out, err := c.sh(script)
	c.t.Logf("# %s\n%s", script, strings.TrimRight(out, "\n"))
	if err != nil {
		c.t.Fatalf("%s: %v", script, err)
	}
	return out
}

// show returns systemctl show properties of the tracker unit.
func (c *container) show(props ...string) map[string]string {
	c.t.Helper()
	out, err := c.sh("systemctl show tracker.service -p " + strings.Join(props, ","))
	if err != nil {
		c.t.Fatalf("systemctl show: %v\n%s", err, out)
	}
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, _ := strings.Cut(line, "=")
		m[k] = v
	}
	return m
}

// file writes a file into the container's tree.
func (c *container) file(path string, data []byte, mode os.FileMode) {
	c.t.Helper()
	if err := os.WriteFile(filepath.Join(c.root, path), data, mode); err != nil {
		c.t.Fatal(err)
	}
}

// poweroff stops the container (SIGTERM makes nspawn shut systemd down),
// killing it if it takes too long, and removes its tree.
func (c *container) poweroff() {
	select {
	case <-c.exited:
	default:
		c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(30 * time.Second):
			c.t.Logf("container did not power off in 30 s; killing it")
			c.cmd.Process.Kill()
			<-c.exited
		}
	}
	if err := os.RemoveAll(c.root); err != nil && !errors.Is(err, os.ErrNotExist) {
		c.t.Errorf("remove the container tree: %v", err)
	}
}

func tail(b []byte, lines int) []byte {
	parts := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return bytes.Join(parts, []byte("\n"))
}
