package queue

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A full state filesystem. bbolt writes copy-on-write: even a delete
// writes new pages, so a database on a full filesystem can neither take a
// new reading nor delete the ones the hub acknowledged, and the sender
// would resend the same batch for ever. The queue instead:
//
//   - keeps a reserve: a file of ReserveBytes next to the database,
//     allocated at Open. The first deletion that fails for want of space
//     gives it up, so the deletions have room to commit.
//   - on a failed Append, deletes the acknowledged records and drops the
//     oldest readings in a transaction of its own (pages a commit frees are
//     reused by the next one, not by itself), then appends again, dropping
//     twice as much each time it still does not fit. Dropped readings are
//     counted in Dropped like any other.
//   - caps the queue's bytes at what fitted, so the next Appends drop the
//     oldest within their own transaction instead of failing first.
//   - every SpaceProbe, at an Append, tries to take the reserve back and to
//     allocate a little more; when that works the cap is lifted and the
//     queue grows again up to MaxBytes.
//
// Ack never needs space: acknowledgements wait in memory (hidden from
// Peek) until a write succeeds.

// ReserveSuffix names the reserve file next to the database.
const ReserveSuffix = ".reserve"

// DefaultReserveBytes is enough for the deletions after a full disk (a
// few dozen pages) and small beside any state filesystem.
const DefaultReserveBytes = 64 << 10

// DefaultSpaceProbe is how often a capped queue looks for space again.
const DefaultSpaceProbe = time.Minute

// space is the queue's full-filesystem state, guarded by Queue.mu.
type space struct {
	q        *Queue
	capBytes int64 // 0: no cap
	held     bool  // the reserve file is allocated
	lastTry  time.Time
}

func (s *space) init(q *Queue) {
	s.q = q
	if q.opts.ReserveBytes < 0 {
		return
	}
	if err := allocate(s.reservePath(), q.opts.ReserveBytes); err != nil {
		q.log.Warn("queue cannot allocate its disk reserve; a full disk may stall deletions", "path", s.reservePath(), "err", err)
		s.lastTry = q.opts.Now()
		return
	}
	s.held = true
}

func (s *space) reservePath() string { return s.q.path + ReserveSuffix }

// limit is the byte bound in force: MaxBytes, or the cap a full filesystem
// set.
func (s *space) limit(max int64) int64 {
	if s.capBytes > 0 && s.capBytes < max {
		return s.capBytes
	}
	return max
}

// release gives up the reserve; false when there was none to give.
func (s *space) release() bool {
	if !s.held {
		return false
	}
	s.held = false
	s.lastTry = s.q.opts.Now()
	if err := os.Remove(s.reservePath()); err != nil {
		s.q.log.Error("queue cannot remove its disk reserve", "path", s.reservePath(), "err", err)
		return false
	}
	s.q.log.Warn("state filesystem full: queue gave up its disk reserve to keep going", "path", s.reservePath(),
		"reserve_bytes", s.q.opts.ReserveBytes)
	return true
}

// probe, after a successful Append, looks for space again once per
// SpaceProbe while the reserve is gone or a cap is set.
func (s *space) probe() {
	if s.held && s.capBytes == 0 {
		return
	}
	now := s.q.opts.Now()
	if now.Sub(s.lastTry) < s.q.opts.SpaceProbe {
		return
	}
	s.lastTry = now
	if !s.held && s.q.opts.ReserveBytes >= 0 {
		if err := allocate(s.reservePath(), s.q.opts.ReserveBytes); err != nil {
			return
		}
		s.held = true
		s.q.log.Info("queue took its disk reserve back", "path", s.reservePath())
	}
	if s.capBytes == 0 {
		return
	}
	// Room for the queue to grow a little: worth lifting the cap. If it
	// is only a little, the next full disk caps it again.
	probe := s.q.path + ".probe"
	err := allocate(probe, max(s.q.opts.ReserveBytes, DefaultReserveBytes))
	os.Remove(probe)
	if err != nil {
		return
	}
	s.q.log.Info("state filesystem has space again: queue cap lifted", "cap_was", s.capBytes, "max_bytes", s.q.opts.MaxBytes)
	s.capBytes = 0
}

// appendNoSpace is Append after its transaction failed for want of space
// (see the comment at the top of this file).
func (q *Queue) appendNoSpace(build func(seq uint64) (Message, error), cause error) (Message, error) {
	need := q.lastSize
	if need <= 0 {
		need = 512
	}
	for drop := need; ; drop *= 2 {
		live := q.bytes - q.ackedBytes
		target := max(live-drop, 0)
		n, err := q.trimLocked(target)
		if isNoSpace(err) && q.space.release() {
			n, err = q.trimLocked(target)
		}
		if err != nil && !isNoSpace(err) {
			return Message{}, err
		}
		q.space.capBytes = target + need
		q.space.lastTry = q.opts.Now()
		m, err := q.appendLocked(build, q.space.limit(q.opts.MaxBytes))
		if err == nil {
			q.log.Warn("state filesystem full: dropped the oldest readings to keep recording; queue capped until space returns",
				"cause", cause, "dropped_now", n, "total_dropped", q.dropped, "cap_bytes", q.space.capBytes,
				"count", q.count, "retry_every", q.opts.SpaceProbe)
			return m, nil
		}
		if !isNoSpace(err) || live == 0 {
			return Message{}, err
		}
		// Dropping frees pages inside the database, not on the
		// filesystem: a write outside it (the sequence floor) needs the
		// reserve.
		q.space.release()
	}
}

// trimLocked deletes the acknowledged records and drops the oldest until
// at most target bytes are queued, in one transaction of its own.
func (q *Queue) trimLocked(target int64) (int, error) {
	var d drops
	err := q.db.Update(func(tx *bolt.Tx) error {
		var err error
		d, err = q.dropOldest(tx, func(_ int, total int64) bool { return total > target })
		if err != nil {
			return err
		}
		return q.injected(tx)
	})
	if err != nil {
		return 0, q.wrap("make room", err)
	}
	q.dropsApplied(d, 0, 0, target)
	return d.n, nil
}

// isNoSpace tells a full filesystem (or quota) from other write errors.
// bbolt flattens the error when growing the file, hence the text match.
func isNoSpace(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, syscall.ENOSPC.Error()) || strings.Contains(msg, syscall.EDQUOT.Error())
}

// allocate makes path a file of n bytes with its blocks allocated, so
// they are there to give back later; filesystems without fallocate get
// zeros written.
func allocate(path string, n int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	err = syscall.Fallocate(int(f.Fd()), 0, 0, n)
	if errors.Is(err, syscall.EOPNOTSUPP) {
		_, err = f.WriteAt(make([]byte, n), 0)
		if err == nil {
			err = f.Sync()
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("allocate %s: %w", path, err)
	}
	return nil
}
