package doctor

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reefer/tracker/firmware/queue"
	"github.com/reefer/tracker/provisioning/cache"
)

func TestCheckAssignment(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	const fp = "ab12cd34"
	saved := &cache.Assignment{Hub: "reefer-hub.azure-devices.net", DeviceID: "tracker-0042", CertFingerprintSHA256: fp, AssignedAt: now.Add(-3 * day)}
	tests := []struct {
		name        string
		setup       func(t *testing.T, dir string)
		fp          string
		st          Status
		detail, fix string
		wantA       bool
	}{
		{"none", nil, fp, Warn, "not provisioned yet", "systemctl start tracker", false},
		{"matches", func(t *testing.T, dir string) { save(t, dir, saved) }, fp, OK,
			`hub reefer-hub.azure-devices.net, device "tracker-0042", assigned 2026-02-26 12:00 UTC (3 days ago), for this certificate`, "", true},
		{"fingerprint case and colons", func(t *testing.T, dir string) { save(t, dir, saved) }, "AB:12:CD:34", OK, "for this certificate", "", true},
		{"other certificate", func(t *testing.T, dir string) { save(t, dir, saved) }, "ffff", Warn, "obtained with another certificate", "registers with DPS again", false},
		{"certificate unusable", func(t *testing.T, dir string) { save(t, dir, saved) }, "", Warn, "not compared", "fix the certificate", false},
		{"corrupt", func(t *testing.T, dir string) {
			if err := os.WriteFile(cache.Path(dir), []byte("{garbage"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, fp, Warn, "corrupt", "registers with DPS again", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if tt.setup != nil {
				tt.setup(t, dir)
			}
			ck, a := CheckAssignment(dir, tt.fp, now)
			wantCheck(t, ck, "assignment", tt.st, tt.detail, tt.fix)
			if got := a != nil; got != tt.wantA {
				t.Errorf("assignment returned = %v; want %v", got, tt.wantA)
			}
		})
	}
}

func save(t *testing.T, dir string, a *cache.Assignment) {
	t.Helper()
	if err := cache.Save(dir, a); err != nil {
		t.Fatal(err)
	}
}

// fill puts n messages of size bytes into a queue file at path, with the
// given bounds, and closes it.
func fill(t *testing.T, path string, opts queue.Options, n, size int) {
	t.Helper()
	q, err := queue.Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	for i := range n {
		_, err := q.Append(func(uint64) (queue.Message, error) {
			return queue.Message{ID: fmt.Sprint("m", i), Body: make([]byte, size), Created: time.Now()}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestCheckQueue(t *testing.T) {
	t.Parallel()
	small := queue.Options{MaxCount: 10, MaxBytes: 1 << 20}
	tests := []struct {
		name        string
		setup       func(t *testing.T, path string) (release func())
		opts        queue.Options
		st          Status
		detail, fix string
		inUse       bool
	}{
		{"no file", nil, small, OK, "does not exist yet", "", false},
		{"a few readings", func(t *testing.T, p string) func() { fill(t, p, small, 3, 100); return nil }, small, OK, "3 readings queued", "", false},
		{"dropped", func(t *testing.T, p string) func() { fill(t, p, small, 12, 100); return nil }, queue.Options{MaxCount: 100, MaxBytes: 1 << 20}, Warn, "10 readings queued (1 KiB of 1024 KiB), 2 dropped", "readings were lost", false},
		{"nearly full", func(t *testing.T, p string) func() { fill(t, p, small, 9, 100); return nil }, small, Warn, "9 readings queued", "nearly full", false},
		{"held by the tracker", func(t *testing.T, p string) func() {
			q, err := queue.Open(p, small)
			if err != nil {
				t.Fatal(err)
			}
			return func() { q.Close() }
		}, small, OK, "in use by the running tracker", "", true},
		{"not a database", func(t *testing.T, p string) func() {
			if err := os.WriteFile(p, []byte("not bolt"), 0o600); err != nil {
				t.Fatal(err)
			}
			return nil
		}, small, Warn, "database corrupt", "moves the damaged file aside", false},
		{"replaced earlier", func(t *testing.T, p string) func() {
			fill(t, p, small, 2, 100)
			if err := os.WriteFile(p+queue.CorruptSuffix+"20261128T150405Z", []byte("junk"), 0o600); err != nil {
				t.Fatal(err)
			}
			return nil
		}, small, Warn, "found corrupt and replaced", "rm ", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), DefaultQueueFile)
			if tt.setup != nil {
				if release := tt.setup(t, path); release != nil {
					defer release()
				}
			}
			ck, inUse := CheckQueue(path, tt.opts)
			wantCheck(t, ck, "queue", tt.st, tt.detail, tt.fix)
			if inUse != tt.inUse {
				t.Errorf("inUse = %v; want %v", inUse, tt.inUse)
			}
			if tt.setup == nil {
				if _, err := os.Stat(path); !os.IsNotExist(err) {
					t.Errorf("CheckQueue created %s; it must not", path)
				}
			}
		})
	}
}

// A state directory on a read-only filesystem (the SD card's driver
// remounts it after errors) is a FAIL: the tracker keeps its readings in
// memory only. Needs root to mount a tmpfs read-only.
func TestCheckQueueReadOnlyFilesystem(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs read-only")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k,ro", "doctor-test", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	ck, _ := CheckQueue(filepath.Join(mnt, "state", "queue.db"), queue.Options{})
	if ck.Status != Fail || !strings.Contains(ck.Detail, "read-only") || !strings.Contains(ck.Detail, "in memory") || ck.Fix == "" {
		t.Errorf("CheckQueue on a read-only filesystem = %+v; want FAIL saying read-only and in memory, with a fix", ck)
	}
}
