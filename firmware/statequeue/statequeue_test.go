package statequeue

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reefer/tracker/firmware/queue"
	"github.com/reefer/tracker/internal/faketime"
	"github.com/reefer/tracker/internal/waitfor"
)

var t0 = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

func reading(id string) func(uint64) (queue.Message, error) {
	return func(seq uint64) (queue.Message, error) {
		return queue.Message{ID: fmt.Sprintf("%s-%d", id, seq), Body: []byte(fmt.Sprintf(`{"seq":%d}`, seq))}, nil
	}
}

func appendN(t *testing.T, s *Store, n int) []uint64 {
	t.Helper()
	var seqs []uint64
	for range n {
		m, err := s.Append(reading("d"))
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		seqs = append(seqs, m.Seq)
	}
	return seqs
}

func seqsOf(t *testing.T, s *Store) []uint64 {
	t.Helper()
	msgs, err := s.Peek(math.MaxInt)
	if err != nil {
		t.Fatal(err)
	}
	var out []uint64
	for _, m := range msgs {
		if m.ID != fmt.Sprintf("d-%d", m.Seq) {
			t.Errorf("message %s carries seq %d; id and seq must stay together", m.ID, m.Seq)
		}
		out = append(out, m.Seq)
	}
	return out
}

// A state directory that cannot be made (here a file stands where it
// should be) starts the queue in memory, loudly; once it can be made the
// backlog moves to disk under its own numbers and Append continues above.
func TestUnusableAtStartThenWritable(t *testing.T) {
	t.Parallel()
	clock := faketime.NewClock(t0)
	base := t.TempDir()
	blocker := filepath.Join(base, "state")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	changes := make(chan struct{}, 10)
	s := Open(filepath.Join(blocker, "queue.db"), Options{Now: clock.Now, OnChange: func() { changes <- struct{}{} }})
	defer s.Close()
	f := s.Fallback()
	if f == nil || !strings.Contains(f.Reason, "state directory") || f.Dir != blocker {
		t.Fatalf("Fallback = %+v; want memory with the reason and the directory", f)
	}
	mem := appendN(t, s, 3)
	if mem[0] < uint64(t0.UnixMilli()) || mem[1] != mem[0]+1 {
		t.Errorf("in-memory seqs %v; want from the clock (%d) up", mem, t0.UnixMilli())
	}
	s.Probe() // still blocked
	if s.Fallback() == nil {
		t.Fatal("back on disk while the directory is still unusable")
	}

	os.Remove(blocker)
	s.Probe()
	if f := s.Fallback(); f != nil {
		t.Fatalf("Fallback after the directory became usable = %+v; want nil", f)
	}
	if got := seqsOf(t, s); fmt.Sprint(got) != fmt.Sprint(mem) {
		t.Errorf("disk queue after moving = %v; want the in-memory backlog %v", got, mem)
	}
	next := appendN(t, s, 1)
	if next[0] != mem[2]+1 {
		t.Errorf("first disk seq after moving = %d; want %d", next[0], mem[2]+1)
	}
	if _, err := os.Stat(filepath.Join(blocker, "queue.db")); err != nil {
		t.Errorf("queue database: %v", err)
	}
	waitfor.Until(t, "OnChange for the way to memory and back", 5*time.Second, time.Millisecond, func() bool { return len(changes) == 2 })
}

// A state directory deleted under the running tracker: bbolt would go on
// writing to a file nobody finds at the next start. Probe notices, takes
// the backlog into memory from the open database, and the next Probe
// makes the directory again and moves everything back.
func TestVanishedDirectory(t *testing.T) {
	t.Parallel()
	clock := faketime.NewClock(t0)
	dir := filepath.Join(t.TempDir(), "state")
	s := Open(filepath.Join(dir, "queue.db"), Options{Now: clock.Now})
	defer s.Close()
	disk := appendN(t, s, 3)
	if s.Fallback() != nil {
		t.Fatal("in memory with a good directory")
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	s.Probe()
	f := s.Fallback()
	if f == nil || !strings.Contains(f.Reason, "vanished") {
		t.Fatalf("Fallback after the directory vanished = %+v; want memory, saying it vanished", f)
	}
	if got := seqsOf(t, s); fmt.Sprint(got) != fmt.Sprint(disk) {
		t.Errorf("in-memory backlog %v; want the disk's %v taken along", got, disk)
	}
	mem := appendN(t, s, 1)
	s.Probe()
	if s.Fallback() != nil {
		t.Fatal("still in memory after the directory could be made again")
	}
	if got, want := seqsOf(t, s), append(disk, mem...); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("disk queue = %v; want %v", got, want)
	}
}

// The in-memory queue is bounded: the oldest go and are counted.
func TestMemoryBound(t *testing.T) {
	t.Parallel()
	blocker := filepath.Join(t.TempDir(), "file")
	os.WriteFile(blocker, nil, 0o600)
	s := Open(filepath.Join(blocker, "queue.db"), Options{Queue: queue.Options{MaxCount: 5}, Now: faketime.NewClock(t0).Now})
	defer s.Close()
	seqs := appendN(t, s, 8)
	if got := seqsOf(t, s); fmt.Sprint(got) != fmt.Sprint(seqs[3:]) || s.Dropped() != 3 {
		t.Errorf("queue %v, dropped %d; want the newest 5, 3 dropped", got, s.Dropped())
	}
	msgs, _ := s.Peek(2)
	s.Ack(msgs[0].Seq, msgs[1].Seq)
	if n, _ := s.Len(); n != 3 {
		t.Errorf("Len after acking 2 of 5 = %d; want 3", n)
	}
}

// A disk that fails under Append (here its queue is closed behind the
// store's back, as an I/O error would): the reading goes to memory with
// the backlog, nothing is lost.
func TestAppendFailureGoesToMemory(t *testing.T) {
	t.Parallel()
	s := Open(filepath.Join(t.TempDir(), "state", "queue.db"), Options{Now: faketime.NewClock(t0).Now})
	defer s.Close()
	disk := appendN(t, s, 2)
	s.mu.Lock()
	msgs, _ := s.disk.Peek(math.MaxInt)
	s.disk.Close()
	s.mu.Unlock()
	if len(msgs) != 2 {
		t.Fatal("no backlog")
	}
	mem := appendN(t, s, 1)
	if f := s.Fallback(); f == nil || !strings.Contains(f.Reason, "closed") {
		t.Fatalf("Fallback = %+v; want memory with the disk's error", f)
	}
	// The closed queue could not be read, so only the new reading is
	// in memory: the backlog stays in the database for the return.
	if got := seqsOf(t, s); fmt.Sprint(got) != fmt.Sprint(mem) {
		t.Errorf("in memory %v; want %v", got, mem)
	}
	s.Probe()
	if got, want := seqsOf(t, s), append(disk, mem...); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("disk queue after the return = %v; want %v", got, want)
	}
}

// A state filesystem mounted read-only (the SD card's driver does that
// after errors, before the tracker starts): the tracker starts in memory
// and moves to disk once it is read-write. Needs root to mount a tmpfs.
func TestReadOnlyFilesystem(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs read-only")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m,ro", "statequeue-test", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	s := Open(filepath.Join(mnt, "state", "queue.db"), Options{Now: faketime.NewClock(t0).Now})
	defer s.Close()
	f := s.Fallback()
	if f == nil || !strings.Contains(f.Reason, "read-only") {
		t.Fatalf("Fallback on a read-only filesystem = %+v; want memory, saying read-only", f)
	}
	mem := appendN(t, s, 2)
	if out, err := exec.Command("mount", "-o", "remount,rw", mnt).CombinedOutput(); err != nil {
		t.Fatalf("remount rw: %v: %s", err, out)
	}
	s.Probe()
	if s.Fallback() != nil {
		t.Fatal("still in memory after the remount read-write")
	}
	if got := seqsOf(t, s); fmt.Sprint(got) != fmt.Sprint(mem) {
		t.Errorf("disk queue = %v; want %v", got, mem)
	}
}
