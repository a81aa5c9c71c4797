// Package queue is the tracker's on-disk store-and-forward queue.
//
// Every reading is written to the queue before it is sent, and removed only
// after the hub acknowledged it (the QoS 1 PUBACK, docs/protocol.md B.2/B.3), so a
// tracker that loses its uplink at sea, or its power, keeps what it measured.
// The queue is a bbolt database in the state directory.
//
// # One synced write per reading
//
// A tracker lives on an SD card, and synced page writes are what wears one
// out. So the steady state costs one bbolt write transaction per reading:
//
//   - Append takes the device sequence number and stores the reading built
//     for it in the same transaction. A crash can neither burn a number nor
//     issue one twice; the reading is keyed by it.
//   - Ack only marks messages as delivered, in memory: Peek and Len stop
//     showing them at once. The deletions are written lazily, in the next
//     Append's transaction (at one reading a second that is the next
//     second), or on their own when AckBatch of them have piled up (the
//     drain after an outage), when the queue has just drained a backlog,
//     after AckDelay without an Append, and on Close. An acknowledgement
//     lost to a crash or a power cut means the message is sent again after
//     the restart with the same message id and seq, which the cloud
//     de-duplicates; nothing is ever lost, at most resent.
//
// bbolt itself syncs twice per commit (the pages, then the meta page that
// makes them current: bbolt checksums only the meta page, so the order is
// what makes a power cut safe), and rewrites the touched B+tree pages
// whole. The database runs with NoFreelistSync so a commit does not also
// write the free list (it is rebuilt at Open). bench/sdwrites measured
// what this costs the device, journal included: 2.4 flushes and 10.6 KB
// per reading, against 1.3 and 6.7 KB for an append-only log into
// preallocated blocks, the best a log-structured queue could do (one that
// grows its file costs more bytes than bbolt); bench/README.md has the
// figures and why the two syncs stay for now.
//
// # Bounds and a full disk
//
// The queue is bounded by message count and by bytes. When a new message
// does not fit, the oldest are dropped (old readings are worth less than new
// ones) and a persisted drop counter records how many were lost.
//
// The state filesystem may fill up before those bounds: see space.go. The
// queue then drops the oldest readings to make room, keeps recording new
// ones, caps itself at what fits, and lifts the cap once space returns. A
// small reserve file next to the database guarantees that deleting (which
// bbolt also does by writing pages) can proceed on a full disk.
//
// # Sequence numbers
//
// The sequence number must only ever increase, across restarts too, and a
// small side file (path+".seq") holds a reserved floor so it keeps
// increasing even when the database is lost. A database that is damaged
// beyond use (SD card corruption) is moved aside by Open with
// Options.Recover and replaced by an empty one, so the tracker comes back
// instead of failing at every start.
//
// The agent uses Append, Peek, Ack, Len and Dropped (agent.Queue); anything
// with those five, such as an in-memory queue, can stand in for this one.
package queue

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Sentinel errors callers act on.
var (
	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("queue: closed")
	// ErrTooLarge is returned by Append for a message that alone exceeds MaxBytes.
	ErrTooLarge = errors.New("queue: message larger than the queue")
	// ErrInvalid is returned by Append for a message without an ID.
	ErrInvalid = errors.New("queue: invalid message")
)

// Defaults used when Options leaves a setting at zero: about 11 days of
// readings at the default 10 s interval, in well under the space an SD card
// can spare.
const (
	DefaultMaxCount    = 100_000
	DefaultMaxBytes    = 64 << 20
	DefaultLockTimeout = 5 * time.Second
	// DefaultAckBatch acknowledgements are written in one transaction
	// while a backlog drains: 80 transactions for 20,000 readings, and at
	// most this many resent after a crash mid-drain.
	DefaultAckBatch = 256
	// DefaultAckDelay is longer than the default telemetry interval, so at
	// any interval up to it an acknowledgement rides on the next Append.
	DefaultAckDelay = 15 * time.Second
)

// Options bound the queue. Zero values take the defaults above.
type Options struct {
	MaxCount int   // most messages kept
	MaxBytes int64 // most bytes kept, counted as the stored record size
	// LockTimeout is how long Open waits for the database's file lock, held
	// by another process (a second tracker) or not yet released.
	LockTimeout time.Duration
	Logger      *slog.Logger // nil discards
	// Recover lets Open replace a corrupt database (ErrCorrupt) with a
	// fresh one after moving it aside; see Queue.Recovered. The tracker
	// sets it; a read-only inspector (doctor) must not.
	Recover bool
	// SeqBlock is how many sequence numbers one write of the floor file
	// reserves; 0 is DefaultSeqBlock.
	SeqBlock uint64
	// AckBatch is how many acknowledgements wait in memory before they are
	// written on their own; 0 is DefaultAckBatch.
	AckBatch int
	// AckDelay is the longest an acknowledgement waits in memory for an
	// Append to ride on; 0 is DefaultAckDelay.
	AckDelay time.Duration
	// ReserveBytes is the size of the reserve file (path+ReserveSuffix)
	// given up when the filesystem is full; 0 is DefaultReserveBytes,
	// negative keeps none.
	ReserveBytes int64
	// SpaceProbe is how often a queue capped by a full filesystem looks
	// for space again; 0 is DefaultSpaceProbe.
	SpaceProbe time.Duration
	// Now names the moved-aside file and times the space probe; nil is
	// time.Now.
	Now func() time.Time
	// NoSync skips the fsync of every commit: for tools that bulk-load a
	// queue the tracker is not running on (bench/faults), where a power
	// loss does not matter. The tracker never sets it.
	NoSync bool
}

// Message is one queued reading.
type Message struct {
	ID      string            // message id ($.mid), unique within the queue
	Seq     uint64            // device sequence number, set by Append
	Body    []byte            // payload as sent
	Props   map[string]string // MQTT property bag, application and system
	Created time.Time         // when the reading was taken
}

// Queue is a persistent FIFO of Messages. It is safe for concurrent use: the
// sampler Appends while the sender Peeks and Acks.
type Queue struct {
	db   *bolt.DB
	log  *slog.Logger
	opts Options
	path string

	closed atomic.Bool

	mu       sync.Mutex // serialises writes with the fields below
	count    int        // records on disk, acknowledged ones included
	bytes    int64
	dropped  uint64
	reserved uint64 // sequence numbers up to this are reserved in the floor file
	seqPath  string

	// acked holds acknowledged records not yet deleted on disk, by seq,
	// with their size.
	acked      map[uint64]int64
	ackedBytes int64
	ackTimer   *time.Timer
	ackArmed   bool  // ackTimer runs
	lastSize   int64 // size of the last record appended
	dropStreak int   // consecutive Appends that dropped, for the log

	space space // full-filesystem state, see space.go

	// failWrite, when set (tests), is called at the end of every write
	// transaction; an error it returns fails the transaction.
	failWrite func(tx *bolt.Tx) error

	recovery *Recovery // set once by Open
}

var (
	bucketMsgs = []byte("msgs") // 8-byte big-endian seq -> record
	bucketMeta = []byte("meta")
	keySeq     = []byte("seq")
	keyDropped = []byte("dropped")
	// bucketOldIDs (message id -> insertion key) and insertion keys other
	// than the seq are the layout before the seq became the key; Open
	// converts it.
	bucketOldIDs = []byte("ids")
)

// Open opens or creates the queue database at path, and its sequence
// floor file path+SeqSuffix. A database that is not usable yields an
// error wrapping ErrCorrupt, or, with opts.Recover, is moved aside and
// replaced by an empty one (Recovered reports it). A database locked by
// another process is an error after opts.LockTimeout, never a recovery.
func Open(path string, opts Options) (*Queue, error) {
	if opts.MaxCount <= 0 {
		opts.MaxCount = DefaultMaxCount
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = DefaultLockTimeout
	}
	if opts.SeqBlock == 0 {
		opts.SeqBlock = DefaultSeqBlock
	}
	if opts.AckBatch <= 0 {
		opts.AckBatch = DefaultAckBatch
	}
	if opts.AckDelay <= 0 {
		opts.AckDelay = DefaultAckDelay
	}
	if opts.ReserveBytes == 0 {
		opts.ReserveBytes = DefaultReserveBytes
	}
	if opts.SpaceProbe <= 0 {
		opts.SpaceProbe = DefaultSpaceProbe
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	q, err := openQueue(path, opts, log)
	if err == nil || !errors.Is(err, ErrCorrupt) || !opts.Recover {
		return q, err
	}
	at := opts.Now()
	aside, merr := moveAside(path, at)
	if merr != nil && aside == "" {
		return nil, fmt.Errorf("%w; moving it aside: %w", err, merr)
	}
	log.Error("queue database corrupt: moved aside, starting an empty queue; the readings queued in it are lost",
		"path", path, "aside", aside, "err", err)
	q, err2 := openQueue(path, opts, log)
	if err2 != nil {
		return nil, err2
	}
	q.recovery = &Recovery{Aside: aside, At: at, Cause: err.Error()}
	return q, nil
}

func openQueue(path string, opts Options, log *slog.Logger) (*Queue, error) {
	seqPath := path + SeqSuffix
	floor, ferr := readSeqFloor(seqPath)
	if ferr != nil {
		// The database's own counter still holds; only a database lost as
		// well would restart the numbers. Append rewrites the file.
		log.Error("queue sequence floor unreadable; continuing from the database's counter", "path", seqPath, "err", ferr)
	}
	db, err := openChecked(path, opts.LockTimeout)
	if err != nil {
		return nil, fmt.Errorf("queue open %s: %w", path, err)
	}
	db.NoSync = opts.NoSync
	q := &Queue{db: db, log: log, opts: opts, path: path, seqPath: seqPath, reserved: floor,
		acked: map[uint64]int64{}}
	err = db.Update(func(tx *bolt.Tx) error {
		q.count, q.bytes = 0, 0
		for _, name := range [][]byte{bucketMsgs, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		// A database without a counter is new: it continues above every
		// number ever reserved, which covers every number ever issued. An
		// existing counter is exact and at most the floor, so restarts
		// leave no gap.
		if meta.Get(keySeq) == nil && floor > 0 {
			if err := putUint(meta, keySeq, floor); err != nil {
				return err
			}
		}
		q.dropped = getUint(meta, keyDropped)
		bad, err := migrate(tx)
		if err != nil {
			return err
		}
		// Count what is queued, and drop records that no longer decode (a
		// flipped bit on an SD card) so they cannot block the sender forever.
		var corrupt [][]byte
		err = tx.Bucket(bucketMsgs).ForEach(func(k, v []byte) error {
			if _, err := decodeAt(k, v); err != nil {
				corrupt = append(corrupt, bytes.Clone(k))
				return nil
			}
			q.count++
			q.bytes += int64(len(v))
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range corrupt {
			if err := tx.Bucket(bucketMsgs).Delete(k); err != nil {
				return err
			}
		}
		if n := bad + len(corrupt); n > 0 {
			q.dropped += uint64(n)
			log.Error("queue dropped corrupt records", "path", path, "dropped", n, "total_dropped", q.dropped)
			return putUint(meta, keyDropped, q.dropped)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("queue open %s: %w", path, err)
	}
	q.space.init(q)
	return q, nil
}

// migrate converts the layout before the seq became the key (records under
// an insertion counter, an ids bucket) in place, and returns how many
// records it could not keep (undecodable, or a seq already taken).
func migrate(tx *bolt.Tx) (bad int, err error) {
	if tx.Bucket(bucketOldIDs) == nil {
		return 0, nil
	}
	old := tx.Bucket(bucketMsgs)
	var recs [][2][]byte
	err = old.ForEach(func(k, v []byte) error {
		recs = append(recs, [2][]byte{bytes.Clone(k), bytes.Clone(v)})
		return nil
	})
	if err != nil {
		return 0, err
	}
	if err := tx.DeleteBucket(bucketMsgs); err != nil {
		return 0, err
	}
	if err := tx.DeleteBucket(bucketOldIDs); err != nil {
		return 0, err
	}
	msgs, err := tx.CreateBucket(bucketMsgs)
	if err != nil {
		return 0, err
	}
	for _, r := range recs {
		m, err := decode(r[1])
		if err != nil || m.Seq == 0 || msgs.Get(seqKey(m.Seq)) != nil {
			bad++
			continue
		}
		if err := msgs.Put(seqKey(m.Seq), r[1]); err != nil {
			return 0, err
		}
	}
	return bad, nil
}

// Close writes pending acknowledgements and closes the database. Further
// calls return ErrClosed.
func (q *Queue) Close() error {
	if q.closed.Swap(true) {
		return nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.ackArmed {
		q.ackTimer.Stop()
	}
	ferr := q.flushLocked()
	if err := q.db.Close(); err != nil {
		return fmt.Errorf("queue close: %w", err)
	}
	if ferr != nil {
		// Not lost: the messages are sent again after the next start.
		return fmt.Errorf("queue close: writing acknowledgements: %w", ferr)
	}
	return nil
}

// Append stores a new message under the next sequence number: build gets
// the number and returns the message (its Seq is set to the number), and
// the number and the message are written in one synced transaction, which
// also applies the acknowledgements pending in memory. A build error
// aborts with nothing written and no number used. When the queue is full
// the oldest messages are dropped to make room, in the same transaction;
// on a full filesystem see space.go. Append returns the stored message.
func (q *Queue) Append(build func(seq uint64) (Message, error)) (Message, error) {
	if q.closed.Load() {
		return Message{}, ErrClosed
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	m, err := q.appendLocked(build, q.space.limit(q.opts.MaxBytes))
	if isNoSpace(err) {
		m, err = q.appendNoSpace(build, err)
	} else if err == nil {
		q.space.probe()
	}
	if err != nil {
		return Message{}, err
	}
	return m, nil
}

// appendLocked is one Append transaction keeping the queue within
// maxBytes. It deletes acknowledged records first (not counted as
// dropped), then drops the oldest while the new one does not fit.
func (q *Queue) appendLocked(build func(seq uint64) (Message, error), maxBytes int64) (Message, error) {
	var (
		m        Message
		size     int64
		d        drops
		reserved uint64
		buildErr error
	)
	err := q.db.Update(func(tx *bolt.Tx) error {
		reserved, buildErr = q.reserved, nil
		msgs, meta := tx.Bucket(bucketMsgs), tx.Bucket(bucketMeta)
		seq := getUint(meta, keySeq) + 1
		var err error
		if m, err = build(seq); err != nil {
			buildErr = err
			return err
		}
		m.Seq = seq
		if m.ID == "" {
			return fmt.Errorf("%w: empty id", ErrInvalid)
		}
		rec := encode(m)
		size = int64(len(rec))
		if size > q.opts.MaxBytes {
			return fmt.Errorf("%s: %w: %d > %d bytes", m.ID, ErrTooLarge, size, q.opts.MaxBytes)
		}
		d, err = q.dropOldest(tx, func(count int, total int64) bool {
			return count+1 > q.opts.MaxCount || total+size > maxBytes
		})
		if err != nil {
			return err
		}
		if seq > reserved {
			// Reserve before issuing: the floor must cover every number
			// that may be in use. A failed transaction after this only
			// leaves a larger gap after a lost database.
			reserved = seq - 1 + q.opts.SeqBlock
			if err := writeSeqFloor(q.seqPath, reserved); err != nil {
				return err
			}
		}
		if err := putUint(meta, keySeq, seq); err != nil {
			return err
		}
		if err := msgs.Put(seqKey(seq), rec); err != nil {
			return err
		}
		return q.injected(tx)
	})
	if buildErr != nil {
		return Message{}, buildErr
	}
	if err != nil {
		op := "append"
		if m.ID != "" {
			op += " " + m.ID
		}
		return Message{}, q.wrap(op, err)
	}
	q.reserved = reserved
	q.lastSize = size
	q.dropsApplied(d, 1, size, maxBytes)
	return m, nil
}

// drops is what one transaction's dropOldest did.
type drops struct {
	n           int
	first, last uint64 // seqs
	count       int    // the queue after it, acknowledged records gone
	bytes       int64
}

// dropOldest deletes the acknowledged records, then the oldest while
// over says the queue is too big. It runs inside a write transaction;
// dropsApplied accounts for it once the transaction committed.
func (q *Queue) dropOldest(tx *bolt.Tx, over func(count int, total int64) bool) (drops, error) {
	msgs := tx.Bucket(bucketMsgs)
	if err := q.deleteAcked(msgs); err != nil {
		return drops{}, err
	}
	d := drops{count: q.count - len(q.acked), bytes: q.bytes - q.ackedBytes}
	c := msgs.Cursor()
	for over(d.count, d.bytes) {
		k, v := c.First()
		if k == nil {
			break
		}
		if d.n == 0 {
			d.first = binary.BigEndian.Uint64(k)
		}
		d.last = binary.BigEndian.Uint64(k)
		d.bytes -= int64(len(v))
		d.count--
		d.n++
		if err := c.Delete(); err != nil {
			return drops{}, err
		}
	}
	if d.n > 0 {
		if err := putUint(tx.Bucket(bucketMeta), keyDropped, q.dropped+uint64(d.n)); err != nil {
			return drops{}, err
		}
	}
	return d, nil
}

// dropsApplied accounts for a committed transaction that ran dropOldest
// and then added n records of size bytes.
func (q *Queue) dropsApplied(d drops, n int, size, maxBytes int64) {
	q.ackedApplied()
	q.count, q.bytes = d.count+n, d.bytes+size
	if d.n == 0 {
		q.dropStreak = 0
		return
	}
	q.dropped += uint64(d.n)
	q.dropStreak++
	// A queue held at its bound drops at every reading: say so when it
	// starts and then every 100th time, not once a reading.
	level := slog.LevelDebug
	if q.dropStreak == 1 || q.dropStreak%100 == 0 {
		level = slog.LevelWarn
	}
	q.log.Log(context.Background(), level, "queue full, dropped oldest messages",
		"dropped", d.n, "first_seq", d.first, "last_seq", d.last, "total_dropped", q.dropped,
		"count", q.count, "bytes", q.bytes, "max_bytes", maxBytes, "max_count", q.opts.MaxCount)
}

// Peek returns up to n messages, oldest first, without removing them.
// Acknowledged messages are not returned, written yet or not. n <= 0
// returns none. Records that no longer decode are skipped (logged).
func (q *Queue) Peek(n int) ([]Message, error) {
	if n <= 0 {
		return nil, nil
	}
	if q.closed.Load() {
		return nil, ErrClosed
	}
	q.mu.Lock()
	skip := len(q.acked) > 0
	var acked map[uint64]int64
	if skip {
		acked = make(map[uint64]int64, len(q.acked))
		for k, v := range q.acked {
			acked[k] = v
		}
	}
	q.mu.Unlock()
	var out []Message
	err := q.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketMsgs).Cursor()
		for k, v := c.First(); k != nil && len(out) < n; k, v = c.Next() {
			if skip {
				if _, ok := acked[binary.BigEndian.Uint64(k)]; ok {
					continue
				}
			}
			m, err := decodeAt(k, v)
			if err != nil {
				// Skip rather than block the sender; the next Open or a
				// full queue drops it.
				q.log.Error("queue skipping corrupt record", "key", fmt.Sprintf("%x", k), "err", err)
				continue
			}
			out = append(out, m)
		}
		return nil
	})
	if err != nil {
		return nil, q.wrap("peek", err)
	}
	return out, nil
}

// Ack marks messages the hub acknowledged, by seq. They leave Peek and Len
// at once and the disk lazily (see the package comment); seqs no longer
// queued (dropped while in flight) are ignored. Ack does not fail for want
// of disk space: an acknowledgement that cannot be written yet stays in
// memory until it can. It fails only when the queue is closed or the
// database cannot be read.
func (q *Queue) Ack(seqs ...uint64) error {
	if len(seqs) == 0 {
		return nil
	}
	if q.closed.Load() {
		return ErrClosed
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	err := q.db.View(func(tx *bolt.Tx) error {
		msgs := tx.Bucket(bucketMsgs)
		for _, s := range seqs {
			if _, ok := q.acked[s]; ok {
				continue
			}
			if v := msgs.Get(seqKey(s)); v != nil {
				q.acked[s] = int64(len(v))
				q.ackedBytes += int64(len(v))
			}
		}
		return nil
	})
	if err != nil {
		return q.wrap("ack", err)
	}
	switch {
	case len(q.acked) == 0:
	case len(q.acked) >= q.opts.AckBatch,
		// A backlog has just drained: write it off now rather than resend
		// it all after a crash in the next AckDelay.
		len(q.acked) > 1 && len(q.acked) == q.count:
		if err := q.flushLocked(); err != nil {
			q.log.Warn("queue could not write acknowledgements yet; kept in memory", "pending", len(q.acked), "err", err)
		}
	case q.ackArmed:
	case q.ackTimer == nil:
		q.ackTimer, q.ackArmed = time.AfterFunc(q.opts.AckDelay, q.flushTimer), true
	default:
		q.ackTimer.Reset(q.opts.AckDelay)
		q.ackArmed = true
	}
	return nil
}

// Sync writes the acknowledgements pending in memory now.
func (q *Queue) Sync() error {
	if q.closed.Load() {
		return ErrClosed
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.flushLocked()
}

func (q *Queue) flushTimer() {
	if q.closed.Load() {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.ackArmed = false
	if err := q.flushLocked(); err != nil && !q.closed.Load() {
		q.log.Warn("queue could not write acknowledgements yet; kept in memory", "pending", len(q.acked), "err", err)
		q.ackTimer.Reset(q.opts.AckDelay)
		q.ackArmed = true
	}
}

// flushLocked deletes the acknowledged records in one transaction. On a
// full filesystem it gives up the reserve and tries again.
func (q *Queue) flushLocked() error {
	if len(q.acked) == 0 {
		return nil
	}
	update := func() error {
		return q.db.Update(func(tx *bolt.Tx) error {
			if err := q.deleteAcked(tx.Bucket(bucketMsgs)); err != nil {
				return err
			}
			return q.injected(tx)
		})
	}
	err := update()
	if isNoSpace(err) && q.space.release() {
		err = update()
	}
	if err != nil {
		return q.wrap("ack", err)
	}
	q.ackedApplied()
	return nil
}

func (q *Queue) deleteAcked(msgs *bolt.Bucket) error {
	for s := range q.acked {
		if err := msgs.Delete(seqKey(s)); err != nil {
			return err
		}
	}
	return nil
}

// ackedApplied accounts for a committed deleteAcked.
func (q *Queue) ackedApplied() {
	if len(q.acked) == 0 {
		return
	}
	q.count -= len(q.acked)
	q.bytes -= q.ackedBytes
	clear(q.acked)
	q.ackedBytes = 0
	if q.ackArmed {
		q.ackTimer.Stop()
		q.ackArmed = false
	}
}

// Len reports how many messages are queued, acknowledged ones excluded,
// and their stored size in bytes.
func (q *Queue) Len() (count int, bytes int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.count - len(q.acked), q.bytes - q.ackedBytes
}

// Dropped reports how many messages were ever dropped because the queue (or
// the filesystem) was full, or were found corrupt. It survives restarts.
func (q *Queue) Dropped() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.dropped
}

// Recovered reports the corrupt database Open replaced, nil when it did
// not: the readings queued in it are lost.
func (q *Queue) Recovered() *Recovery {
	if q.recovery == nil {
		return nil
	}
	r := *q.recovery
	return &r
}

func (q *Queue) injected(tx *bolt.Tx) error {
	if q.failWrite != nil {
		return q.failWrite(tx)
	}
	return nil
}

func (q *Queue) wrap(op string, err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		err = ErrClosed
	}
	return fmt.Errorf("queue %s: %w", op, err)
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// decodeAt decodes the record stored under key k.
func decodeAt(k, v []byte) (Message, error) {
	m, err := decode(v)
	if err != nil {
		return Message{}, err
	}
	if len(k) != 8 || binary.BigEndian.Uint64(k) != m.Seq {
		return Message{}, fmt.Errorf("%w: seq %d under key %x", errCorrupt, m.Seq, k)
	}
	return m, nil
}

func getUint(b *bolt.Bucket, key []byte) uint64 {
	v := b.Get(key)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func putUint(b *bolt.Bucket, key []byte, n uint64) error {
	return b.Put(key, binary.BigEndian.AppendUint64(nil, n))
}
