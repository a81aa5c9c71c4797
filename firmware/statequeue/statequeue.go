// Package statequeue is the queue `tracker run` hands the agent: the
// on-disk queue (firmware/queue) while the state directory works, and an
// in-memory queue while it does not (a filesystem remounted read-only, a
// directory that vanished or lost its permissions), so the tracker keeps
// sampling and sending instead of exiting in a loop. The switch is loud:
// Fallback says since when and why, and the daemon puts it in a reported
// property, getStatus, doctor's FAIL and STATUS=.
//
// Every ProbeInterval the store checks the directory. While in memory it
// tries to open the disk queue again; once that works the in-memory
// backlog is moved into it with its own sequence numbers (queue.Import)
// and the disk is used again. While on disk it checks that the database
// is still the file at its path: a deleted directory leaves bbolt writing
// to a file nobody will find at the next start, so that counts as a
// failure too.
//
// Numbers in memory: a reading's sequence number must never repeat, and
// without the disk its floor is unknown, so the in-memory queue numbers
// from the wall clock in milliseconds (above any number a disk queue
// issues at a reading per second or slower) or the last number plus one,
// whichever is larger. The agent dates nothing before the clock is set, so
// this clock is plausible. Gaps are harmless; the cloud only de-duplicates.
package statequeue

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/reefer/tracker/firmware/queue"
)

// Defaults.
const (
	DefaultProbeInterval = 30 * time.Second
	// DefaultMemoryBytes caps the in-memory queue below the disk queue's
	// bytes: a Pi has far less RAM than SD card.
	DefaultMemoryBytes = 8 << 20
)

// Options configure a Store. Zero values take the defaults.
type Options struct {
	Queue         queue.Options // the disk queue's (Logger, Now, Recover, bounds)
	ProbeInterval time.Duration
	// MemoryBytes bounds the in-memory queue (MaxCount is the disk's).
	MemoryBytes int64
	Now         func() time.Time
	Logger      *slog.Logger
	// OnChange is called after every switch between disk and memory.
	OnChange func()
}

// Fallback says that readings are kept in memory and why. The JSON form is
// the reported property and getStatus member.
type Fallback struct {
	Since  time.Time `json:"since"`
	Reason string    `json:"reason"`
	Dir    string    `json:"stateDir"`
}

// Store is the agent's queue. Its methods are safe for concurrent use.
type Store struct {
	path string
	o    Options
	log  *slog.Logger

	mu        sync.Mutex
	disk      *queue.Queue // nil while in memory
	diskInfo  os.FileInfo  // the database file when opened
	mem       *memQueue    // nil while on disk
	fallback  *Fallback
	recovered *queue.Recovery
	lastSeq   uint64
	dropped   uint64 // drops before the current queue took over
}

// Open opens the disk queue at path, making its directory, or starts in
// memory when that fails. It does not fail.
func Open(path string, o Options) *Store {
	if o.ProbeInterval <= 0 {
		o.ProbeInterval = DefaultProbeInterval
	}
	if o.MemoryBytes <= 0 {
		o.MemoryBytes = DefaultMemoryBytes
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{path: path, o: o, log: o.Logger}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.openDisk(); err != nil {
		s.toMemory(err)
	}
	return s
}

// openDisk opens the disk queue and moves the in-memory backlog into it.
// mu held.
func (s *Store) openDisk() error {
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	q, err := queue.Open(s.path, s.o.Queue)
	if err != nil {
		return err
	}
	fi, err := os.Stat(s.path)
	if err != nil {
		q.Close()
		return fmt.Errorf("state directory: %w", err)
	}
	if s.recovered == nil {
		s.recovered = q.Recovered()
	}
	if s.mem != nil {
		backlog, _ := s.mem.Peek(math.MaxInt)
		for _, m := range backlog {
			if _, err := q.Import(m); err != nil {
				q.Close()
				return fmt.Errorf("moving the in-memory backlog to disk: %w", err)
			}
		}
		s.dropped += s.mem.Dropped()
		s.log.Warn("state directory writable again: readings are on disk again", "dir", filepath.Dir(s.path),
			"moved", len(backlog), "in_memory_for", s.o.Now().Sub(s.fallback.Since).Round(time.Second))
		s.mem, s.fallback = nil, nil
		defer s.changed()
	}
	s.disk, s.diskInfo = q, fi
	return nil
}

// toMemory switches to the in-memory queue, taking along what the disk
// queue still lets it read. mu held.
func (s *Store) toMemory(why error) {
	s.mem = newMemQueue(s.o.Queue.MaxCount, s.o.MemoryBytes)
	if s.disk != nil {
		if backlog, err := s.disk.Peek(math.MaxInt); err == nil {
			for _, m := range backlog {
				s.mem.put(m)
			}
		}
		s.dropped += s.disk.Dropped()
		s.disk.Close()
		s.disk = nil
	}
	dir := filepath.Dir(s.path)
	s.fallback = &Fallback{Since: s.o.Now().UTC(), Reason: why.Error(), Dir: dir}
	n, _ := s.mem.Len()
	s.log.Error("state directory unusable: readings are kept IN MEMORY and are lost if the tracker restarts; "+
		"check the state filesystem (read-only? full of errors? removed?) and that no other tracker runs on it", "dir", dir, "err", why, "queued", n,
		"retry_every", s.o.ProbeInterval)
	s.changed()
}

func (s *Store) changed() {
	if s.o.OnChange != nil {
		go s.o.OnChange() // outside mu
	}
}

// Append stores a new reading; when the disk fails it goes to memory.
func (s *Store) Append(build func(seq uint64) (queue.Message, error)) (queue.Message, error) {
	var buildErr error
	b := func(seq uint64) (queue.Message, error) {
		m, err := build(seq)
		buildErr = err
		return m, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.disk != nil {
		m, err := s.disk.Append(b)
		switch {
		case err == nil:
			s.lastSeq = max(s.lastSeq, m.Seq)
			return m, nil
		case buildErr != nil, errors.Is(err, queue.ErrTooLarge), errors.Is(err, queue.ErrInvalid):
			return m, err // not the disk's fault
		}
		s.toMemory(err)
	}
	seq := max(s.lastSeq+1, uint64(s.o.Now().UnixMilli()))
	m, err := build(seq)
	if err != nil {
		return queue.Message{}, err
	}
	m.Seq = seq
	s.mem.put(m)
	s.lastSeq = seq
	return m, nil
}

// Peek returns up to n readings, oldest first.
func (s *Store) Peek(n int) ([]queue.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.disk != nil {
		return s.disk.Peek(n)
	}
	return s.mem.Peek(n)
}

// Ack removes readings the hub accepted.
func (s *Store) Ack(seqs ...uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.disk != nil {
		return s.disk.Ack(seqs...)
	}
	return s.mem.Ack(seqs...)
}

// Len is the number of readings queued and their bytes.
func (s *Store) Len() (int, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.disk != nil {
		return s.disk.Len()
	}
	return s.mem.Len()
}

// Dropped counts readings dropped for want of room, on disk and in memory.
func (s *Store) Dropped() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.disk != nil {
		return s.dropped + s.disk.Dropped()
	}
	return s.dropped + s.mem.Dropped()
}

// Recovered is the corrupt database the first open replaced, if any.
func (s *Store) Recovered() *queue.Recovery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.recovered
}

// Fallback says why readings are in memory; nil while they are on disk.
func (s *Store) Fallback() *Fallback {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fallback == nil {
		return nil
	}
	f := *s.fallback
	return &f
}

// Probe checks the state directory once: back to disk when it works again,
// to memory when the database vanished from under the disk queue.
func (s *Store) Probe() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.disk == nil {
		if err := s.openDisk(); err != nil {
			s.log.Debug("state directory still unusable", "err", err)
		}
		return
	}
	fi, err := os.Stat(s.path)
	switch {
	case err != nil:
		s.toMemory(fmt.Errorf("queue database vanished: %w", err))
	case !os.SameFile(fi, s.diskInfo):
		s.toMemory(fmt.Errorf("queue database %s was replaced under the running tracker", s.path))
	}
}

// ProbeInterval is how often the caller should call Probe.
func (s *Store) ProbeInterval() time.Duration { return s.o.ProbeInterval }

// Close closes the disk queue. What is in memory is lost, as the log said.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.disk != nil {
		return s.disk.Close() // it still answers Len and Dropped
	}
	if n, _ := s.mem.Len(); n > 0 {
		s.log.Error("stopping with readings only in memory: they are lost", "lost", n, "dir", filepath.Dir(s.path))
	}
	return nil
}

// memQueue is a bounded FIFO in memory: the oldest go when it is full.
type memQueue struct {
	maxCount int
	maxBytes int64
	msgs     []queue.Message
	bytes    int64
	dropped  uint64
}

func newMemQueue(maxCount int, maxBytes int64) *memQueue {
	if maxCount <= 0 {
		maxCount = queue.DefaultMaxCount
	}
	return &memQueue{maxCount: maxCount, maxBytes: maxBytes}
}

func size(m queue.Message) int64 { return int64(len(m.Body) + len(m.ID) + 64) }

func (q *memQueue) put(m queue.Message) {
	q.msgs = append(q.msgs, m)
	q.bytes += size(m)
	for len(q.msgs) > 1 && (len(q.msgs) > q.maxCount || q.bytes > q.maxBytes) {
		q.bytes -= size(q.msgs[0])
		q.msgs[0] = queue.Message{}
		q.msgs = q.msgs[1:]
		q.dropped++
	}
}

func (q *memQueue) Peek(n int) ([]queue.Message, error) {
	n = max(0, min(n, len(q.msgs)))
	return slices.Clone(q.msgs[:n]), nil
}

func (q *memQueue) Ack(seqs ...uint64) error {
	q.msgs = slices.DeleteFunc(q.msgs, func(m queue.Message) bool {
		if slices.Contains(seqs, m.Seq) {
			q.bytes -= size(m)
			return true
		}
		return false
	})
	return nil
}

func (q *memQueue) Len() (int, int64) { return len(q.msgs), q.bytes }
func (q *memQueue) Dropped() uint64   { return q.dropped }
