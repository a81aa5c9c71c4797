package queue

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/reefer/tracker/internal/faketime"
	"github.com/reefer/tracker/internal/syncbuf"
	bolt "go.etcd.io/bbolt"
)

func reading(i int) Message {
	return Message{ID: fmt.Sprintf("r%05d", i), Body: bytes.Repeat([]byte{'x'}, 300), Created: time.Unix(int64(i), 0)}
}

// fakeDisk makes write transactions fail with ENOSPC as a filesystem
// holding budget bytes of records would; while stuck, every write fails
// until the reserve file is given up.
type fakeDisk struct {
	mu      sync.Mutex
	budget  int64
	stuck   bool
	reserve string
	fails   int
}

func (d *fakeDisk) hook(tx *bolt.Tx) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stuck {
		if _, err := os.Stat(d.reserve); err == nil {
			d.fails++
			return &os.PathError{Op: "write", Path: "q.db", Err: syscall.ENOSPC}
		}
	}
	var total int64
	_ = tx.Bucket(bucketMsgs).ForEach(func(_, v []byte) error {
		total += int64(len(v))
		return nil
	})
	if total > d.budget {
		d.fails++
		return &os.PathError{Op: "write", Path: "q.db", Err: syscall.ENOSPC}
	}
	return nil
}

func (d *fakeDisk) set(budget int64, stuck bool) {
	d.mu.Lock()
	d.budget, d.stuck = budget, stuck
	d.mu.Unlock()
}

// On a full filesystem Append drops the oldest and keeps recording, counts
// the drops, Ack still works, and once space returns the cap is lifted.
func TestFullDiskDropsOldestAndRecovers(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "q.db")
	clock := faketime.NewClock(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	q := open(t, path, Options{Now: clock.Now, AckDelay: time.Hour})
	size := int64(len(encode(func() Message { m := reading(0); m.Seq = 1; return m }())))
	disk := &fakeDisk{budget: 20 * size, reserve: path + ReserveSuffix}
	q.failWrite = disk.hook
	if _, err := os.Stat(disk.reserve); err != nil {
		t.Fatalf("no reserve file after Open: %v", err)
	}

	const n = 100
	var last Message
	for i := range n {
		m, err := q.Append(func(uint64) (Message, error) { return reading(i), nil })
		if err != nil {
			t.Fatalf("Append #%d on a full disk = %v; want the oldest dropped instead", i, err)
		}
		last = m
	}
	count, _ := q.Len()
	if count == 0 || count > 20 {
		t.Fatalf("Len() = %d; want what fits (at most 20)", count)
	}
	if got := int(q.Dropped()) + count; got != n {
		t.Errorf("Dropped() %d + Len() %d = %d; want %d: every reading queued or counted", q.Dropped(), count, got, n)
	}
	all, _ := q.Peek(n)
	if all[len(all)-1].ID != last.ID {
		t.Errorf("newest queued = %s; want %s", all[len(all)-1].ID, last.ID)
	}
	for i := 1; i < len(all); i++ {
		if all[i].Seq != all[i-1].Seq+1 {
			t.Fatalf("queued seqs %v: want the newest, contiguous", seqs(all))
		}
	}
	if _, err := os.Stat(disk.reserve); err != nil {
		t.Errorf("reserve given up though deletions never failed: %v", err)
	}

	// Acks go through on the full disk.
	if err := q.Ack(seqs(all)...); err != nil {
		t.Fatalf("Ack on a full disk = %v", err)
	}
	if err := q.Sync(); err != nil {
		t.Fatalf("Sync on a full disk = %v", err)
	}
	if c, _ := q.Len(); c != 0 {
		t.Fatalf("Len() after acking everything = %d", c)
	}

	// Space returns: at the next probe the cap goes and the queue grows
	// past it with nothing dropped.
	disk.set(1<<30, false)
	clock.Advance(DefaultSpaceProbe)
	dropped := q.Dropped()
	for i := range 3 * count {
		if _, err := q.Append(func(uint64) (Message, error) { return reading(n + i), nil }); err != nil {
			t.Fatal(err)
		}
	}
	if c, _ := q.Len(); c != 3*count || q.Dropped() != dropped {
		t.Errorf("after space returned: Len() = %d, Dropped() = %d; want %d, %d", c, q.Dropped(), 3*count, dropped)
	}
}

// A filesystem so full that even deletions fail: the reserve is given up
// so acknowledgements and drops can be written, and taken back later.
func TestFullDiskReserveLetsDeletesThrough(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "q.db")
	clock := faketime.NewClock(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	q := open(t, path, Options{Now: clock.Now, AckDelay: time.Hour, AckBatch: 4})
	var added []Message
	for i := range 10 {
		added = append(added, add(t, q, reading(i)))
	}
	disk := &fakeDisk{budget: 1 << 30, stuck: true, reserve: path + ReserveSuffix}
	q.failWrite = disk.hook

	// AckBatch acks: written at once, which needs the reserve.
	if err := q.Ack(seqs(added[:4])...); err != nil {
		t.Fatalf("Ack on a disk with no space at all = %v", err)
	}
	if _, err := os.Stat(disk.reserve); !os.IsNotExist(err) {
		t.Fatalf("reserve still there after a write failed for space (%v)", err)
	}
	if got := onDisk(t, q); got != 6 {
		t.Errorf("records on disk = %d; want 6 (the acks written using the reserve)", got)
	}
	if _, err := q.Append(func(uint64) (Message, error) { return reading(10), nil }); err != nil {
		t.Fatalf("Append after the reserve went = %v", err)
	}
	// Later, space: the reserve comes back at the next probe.
	clock.Advance(DefaultSpaceProbe)
	add(t, q, reading(11))
	if _, err := os.Stat(disk.reserve); err != nil {
		t.Errorf("reserve not taken back once there was space: %v", err)
	}
}

// TestTinyFilesystem runs the queue on a real 256 KiB tmpfs: it fills up,
// keeps taking readings (dropping the oldest, counted), acknowledgements
// still delete, and once a file hogging the space is removed the queue
// grows again. Needs root to mount.
func TestTinyFilesystem(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: mounts a tmpfs")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a 256 KiB tmpfs (mount -t tmpfs -o size=256k); the injected-error tests cover the logic")
	}
	t.Parallel()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs on %s: %v %s", dir, err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	// Something else on the filesystem eats half of it.
	hog := filepath.Join(dir, "hog")
	if err := allocate(hog, 128<<10); err != nil {
		t.Fatal(err)
	}
	clock := faketime.NewClock(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	var logs syncbuf.Buffer
	q := open(t, filepath.Join(dir, "queue.db"), Options{Now: clock.Now, AckDelay: time.Hour,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})

	const n = 1500 // far more than fits
	for i := range n {
		if _, err := q.Append(func(uint64) (Message, error) { return reading(i), nil }); err != nil {
			t.Fatalf("Append #%d = %v; want the oldest dropped instead", i, err)
		}
	}
	full, _ := q.Len()
	t.Logf("full at %d readings, %d dropped", full, q.Dropped())
	// Not a line per reading, as before: the journal is on the same disk.
	if w := strings.Count(logs.String(), "level=WARN") + strings.Count(logs.String(), "level=ERROR"); w > n/20 {
		t.Errorf("%d WARN/ERROR lines for %d readings on a full disk; want a few", w, n)
	}
	if q.Dropped() == 0 || int(q.Dropped())+full != n {
		t.Fatalf("Dropped() = %d, Len() = %d; want drops, and together %d", q.Dropped(), full, n)
	}
	all, err := q.Peek(n)
	if err != nil || all[len(all)-1].ID != reading(n-1).ID {
		t.Fatalf("Peek = %d messages, %v; want the newest last", len(all), err)
	}
	// The hub comes back: everything sent is deleted, in batches.
	for len(all) > 0 {
		k := min(len(all), 16)
		if err := q.Ack(seqs(all[:k])...); err != nil {
			t.Fatalf("Ack on the full filesystem = %v", err)
		}
		all = all[k:]
	}
	if err := q.Sync(); err != nil {
		t.Fatalf("Sync on the full filesystem = %v", err)
	}
	if c, _ := q.Len(); c != 0 {
		t.Fatalf("Len() after acking all = %d", c)
	}
	// Space returns: the queue holds more than before, without drops.
	if err := os.Remove(hog); err != nil {
		t.Fatal(err)
	}
	clock.Advance(DefaultSpaceProbe)
	dropped := q.Dropped()
	for i := range full + full/2 {
		if _, err := q.Append(func(uint64) (Message, error) { return reading(n + i), nil }); err != nil {
			t.Fatalf("Append after space returned = %v", err)
		}
	}
	if c, _ := q.Len(); c != full+full/2 || q.Dropped() != dropped {
		t.Errorf("after space returned: Len() = %d, Dropped() = %d; want %d, %d", c, q.Dropped(), full+full/2, dropped)
	}
}

// On a full filesystem the floor file is rewritten in place and still reads back.
func TestSeqFloorOverwriteInPlace(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "q.db.seq")
	if err := writeSeqFloor(path, 123456789); err != nil {
		t.Fatal(err)
	}
	if err := overwriteSeqFloor(path, "queue-seq-v1 7 "+fmt.Sprintf("%08x", crc32.ChecksumIEEE([]byte("7")))+"\n"); err != nil {
		t.Fatal(err)
	}
	if n, err := readSeqFloor(path); n != 7 || err != nil {
		t.Errorf("readSeqFloor after an in-place rewrite = %d, %v; want 7", n, err)
	}
}
