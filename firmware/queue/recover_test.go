package queue

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fillQueue makes a real database at path holding n messages and having
// issued n sequence numbers, and returns the highest one.
func fillQueue(t *testing.T, path string, n int, opts Options) uint64 {
	t.Helper()
	q, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open(%q) = %v", path, err)
	}
	var last uint64
	for i := range n {
		m := msg(i)
		m.Body = bytes.Repeat([]byte("x"), 300) // spread over several pages
		last = add(t, q, m).Seq
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	return last
}

// nextSeq appends a message and returns the number it got, for the tests
// that watch the numbering.
func nextSeq(q *Queue) (uint64, error) {
	m, err := q.Append(func(seq uint64) (Message, error) { return Message{ID: fmt.Sprint("n", seq)}, nil })
	return m.Seq, err
}

func TestSeqRestartHasNoGap(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "queue.db")
	last := fillQueue(t, path, 3, Options{SeqBlock: 10})
	q := open(t, path, Options{SeqBlock: 10})
	if got, err := nextSeq(q); err != nil || got != last+1 {
		t.Fatalf("NextSeq() after restart = %d, %v; want %d", got, err, last+1)
	}
}

func TestSeqFloorSurvivesLostDatabase(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 9, 10, 11, 25} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "queue.db")
			last := fillQueue(t, path, n, Options{SeqBlock: 10})
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			q := open(t, path, Options{SeqBlock: 10})
			got, err := nextSeq(q)
			if err != nil || got <= last {
				t.Fatalf("NextSeq() after losing the database = %d, %v; want > %d", got, err, last)
			}
			if got > last+10 {
				t.Errorf("NextSeq() = %d; gap larger than one block after %d", got, last)
			}
		})
	}
}

func TestSeqFloorWrittenForExistingDatabase(t *testing.T) {
	t.Parallel()
	// A database from before the floor file existed: its counter is
	// honoured and the first NextSeq reserves above it.
	path := filepath.Join(t.TempDir(), "queue.db")
	last := fillQueue(t, path, 4, Options{SeqBlock: 100})
	if err := os.Remove(path + SeqSuffix); err != nil {
		t.Fatal(err)
	}
	q := open(t, path, Options{SeqBlock: 100})
	if got, err := nextSeq(q); err != nil || got != last+1 {
		t.Fatalf("NextSeq() = %d, %v; want %d", got, err, last+1)
	}
	floor, err := readSeqFloor(path + SeqSuffix)
	if err != nil || floor < last+1 {
		t.Fatalf("readSeqFloor = %d, %v; want >= %d", floor, err, last+1)
	}
}

func TestSeqFloorFileCorrupt(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "queue.db")
	last := fillQueue(t, path, 2, Options{SeqBlock: 10})
	if err := os.WriteFile(path+SeqSuffix, []byte("queue-seq-v1 99999 00000000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readSeqFloor(path + SeqSuffix); !errors.Is(err, errSeqFileCorrupt) {
		t.Fatalf("readSeqFloor(bad crc) = %v; want errSeqFileCorrupt", err)
	}
	q := open(t, path, Options{SeqBlock: 10})
	if got, err := nextSeq(q); err != nil || got != last+1 {
		t.Fatalf("NextSeq() = %d, %v; want %d", got, err, last+1)
	}
	if floor, err := readSeqFloor(path + SeqSuffix); err != nil || floor <= last {
		t.Fatalf("floor rewritten = %d, %v; want > %d", floor, err, last)
	}
}

func TestRecoverCorruptDatabase(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		damage func(t *testing.T, path string)
	}{
		{"truncated to 100 bytes", func(t *testing.T, path string) { truncate(t, path, 100) }},
		{"truncated to half", func(t *testing.T, path string) {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			truncate(t, path, fi.Size()/2)
		}},
		{"garbage bytes", func(t *testing.T, path string) {
			b := make([]byte, 64<<10)
			r := rand.New(rand.NewPCG(1, 2))
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"meta pages zeroed", func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt(make([]byte, 2*4096), 0); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "queue.db")
			last := fillQueue(t, path, 200, Options{SeqBlock: 50})
			tc.damage(t, path)
			damaged, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}

			// Without Recover (doctor): ErrCorrupt, the file untouched. On
			// a copy: a bbolt panic inside bolt.Open leaks its file lock
			// in this process (see openChecked).
			inspect := path + ".copy"
			if err := os.WriteFile(inspect, damaged, 0o600); err != nil {
				t.Fatal(err)
			}
			if q, err := Open(inspect, Options{}); !errors.Is(err, ErrCorrupt) {
				if q != nil {
					q.Close()
				}
				t.Fatalf("Open(damaged) = %v; want ErrCorrupt", err)
			}
			if now, _ := os.ReadFile(inspect); !bytes.Equal(now, damaged) {
				t.Fatalf("Open without Recover changed the damaged file")
			}

			var logs bytes.Buffer
			at := time.Date(2026, 11, 28, 15, 4, 5, 0, time.FixedZone("X", 3600))
			q := open(t, path, Options{Recover: true, SeqBlock: 50, Now: func() time.Time { return at },
				Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			rec := q.Recovered()
			wantAside := path + ".corrupt-20261128T140405Z"
			if rec == nil || rec.Aside != wantAside || !rec.At.Equal(at) || rec.Cause == "" {
				t.Fatalf("Recovered() = %+v; want aside %s", rec, wantAside)
			}
			if moved, err := os.ReadFile(wantAside); err != nil || !bytes.Equal(moved, damaged) {
				t.Fatalf("moved-aside file = %d bytes, %v; want the damaged file", len(moved), err)
			}
			if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), wantAside) {
				t.Errorf("log = %q; want an ERROR naming %s", logs.String(), wantAside)
			}
			if n, b := q.Len(); n != 0 || b != 0 {
				t.Errorf("Len() = %d, %d; want an empty queue", n, b)
			}
			seq, err := nextSeq(q)
			if err != nil || seq <= last {
				t.Fatalf("NextSeq() after recovery = %d, %v; want > %d", seq, err, last)
			}
			if _, err := q.Append(func(uint64) (Message, error) { return Message{ID: "after"}, nil }); err != nil {
				t.Fatalf("Append after recovery = %v", err)
			}
		})
	}
}

func truncate(t *testing.T, path string, size int64) {
	t.Helper()
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

func TestLockedIsNotCorrupt(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "queue.db")
	fillQueue(t, path, 5, Options{})
	first := open(t, path, Options{Recover: true})
	_, err := Open(path, Options{Recover: true, LockTimeout: 50 * time.Millisecond})
	if err == nil || errors.Is(err, ErrCorrupt) {
		t.Fatalf("second Open = %v; want a lock error, not ErrCorrupt", err)
	}
	if aside, _ := CorruptFiles(path); len(aside) != 0 {
		t.Fatalf("CorruptFiles = %v; a held lock must not move the database", aside)
	}
	if n, _ := first.Len(); n != 5 {
		t.Fatalf("first.Len() = %d; want 5", n)
	}
	if first.Recovered() != nil {
		t.Errorf("Recovered() = %+v; want nil", first.Recovered())
	}
}

func TestRecoverKeepsFewCorruptCopies(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "queue.db")
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var seqs []uint64
	for i := range MaxCorruptKept + 2 {
		if err := os.WriteFile(path, []byte("not a database, long enough to be read as one? no"), 0o600); err != nil {
			t.Fatal(err)
		}
		now := at.Add(time.Duration(i) * time.Hour)
		q, err := Open(path, Options{Recover: true, SeqBlock: 10, Now: func() time.Time { return now }})
		if err != nil {
			t.Fatalf("Open #%d = %v", i, err)
		}
		seq, err := nextSeq(q)
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
		q.Close()
	}
	files, err := CorruptFiles(path)
	if err != nil || len(files) != MaxCorruptKept {
		t.Fatalf("CorruptFiles = %v, %v; want %d files", files, err, MaxCorruptKept)
	}
	if want := path + ".corrupt-20260102T070405Z"; files[len(files)-1] != want {
		t.Errorf("newest = %s; want %s", files[len(files)-1], want)
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Errorf("seqs = %v; want strictly increasing across recoveries", seqs)
		}
	}
}
