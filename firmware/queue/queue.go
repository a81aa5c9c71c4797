// Package queue is the tracker's on-disk store-and-forward queue.
//
// Every reading is written to the queue before it is sent, and removed only
// after the hub acknowledged it (the QoS 1 PUBACK, spec B.2/B.3), so a
// tracker that loses its uplink at sea, or its power, keeps what it measured.
// The queue is a bbolt database in the state directory: each Put, Ack and
// NextSeq is one fsync'ed transaction, so an operation that returned survives
// a crash or power cut, and one that did not return is either wholly there
// or wholly absent.
//
// The queue is bounded by message count and by bytes. When a new message
// does not fit, the oldest are dropped (old readings are worth less than new
// ones) and a persisted drop counter records how many were lost.
//
// The same database holds the device's message sequence number (NextSeq),
// which must only ever increase, across restarts too, and a small side
// file (path+".seq") holds a reserved floor so it keeps increasing even
// when the database is lost. A database that is damaged beyond use (SD
// card corruption) is moved aside by Open with Options.Recover and
// replaced by an empty one, so the tracker comes back instead of failing
// at every start.
package queue

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
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
	// ErrDuplicate is returned by Put for an ID that is already queued.
	ErrDuplicate = errors.New("queue: duplicate message id")
	// ErrTooLarge is returned by Put for a message that alone exceeds MaxBytes.
	ErrTooLarge = errors.New("queue: message larger than the queue")
	// ErrInvalid is returned by Put for a message without an ID.
	ErrInvalid = errors.New("queue: invalid message")
)

// Defaults used when Options leaves a bound at zero: about 11 days of
// readings at the default 10 s interval, in well under the space an SD card
// can spare.
const (
	DefaultMaxCount    = 100_000
	DefaultMaxBytes    = 64 << 20
	DefaultLockTimeout = 5 * time.Second
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
	// Now names the moved-aside file; nil is time.Now.
	Now func() time.Time
}

// Message is one queued reading.
type Message struct {
	ID      string            // message id ($.mid), unique within the queue
	Seq     uint64            // device sequence number, from NextSeq
	Body    []byte            // payload as sent
	Props   map[string]string // MQTT property bag, application and system
	Created time.Time         // when the reading was taken
}

// Queue is a persistent FIFO of Messages. It is safe for concurrent use: the
// sampler Puts while the sender Peeks and Acks.
type Queue struct {
	db   *bolt.DB
	log  *slog.Logger
	opts Options

	closed atomic.Bool

	mu       sync.Mutex // serialises writes with the counters below
	count    int
	bytes    int64
	dropped  uint64
	reserved uint64 // sequence numbers up to this are reserved in the floor file
	seqPath  string

	recovery *Recovery // set once by Open
}

var (
	bucketMsgs = []byte("msgs") // 8-byte big-endian insertion key -> record
	bucketIDs  = []byte("ids")  // message id -> insertion key
	bucketMeta = []byte("meta")
	keySeq     = []byte("seq")
	keyDropped = []byte("dropped")
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
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
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
		// well would restart the numbers. NextSeq rewrites the file.
		log.Error("queue sequence floor unreadable; continuing from the database's counter", "path", seqPath, "err", ferr)
	}
	db, err := openChecked(path, opts.LockTimeout)
	if err != nil {
		return nil, fmt.Errorf("queue open %s: %w", path, err)
	}
	q := &Queue{db: db, log: log, opts: opts, seqPath: seqPath, reserved: floor}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMsgs, bucketIDs, bucketMeta} {
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
		// Count what is queued, and drop records that no longer decode (a
		// flipped bit on an SD card) so they cannot block the sender forever.
		var corrupt [][]byte
		err := tx.Bucket(bucketMsgs).ForEach(func(k, v []byte) error {
			if _, err := decode(v); err != nil {
				corrupt = append(corrupt, bytes.Clone(k))
				return nil
			}
			q.count++
			q.bytes += int64(len(v))
			return nil
		})
		if err != nil || len(corrupt) == 0 {
			return err
		}
		if err := dropKeys(tx, corrupt); err != nil {
			return err
		}
		q.dropped += uint64(len(corrupt))
		log.Error("queue dropped corrupt records", "path", path, "dropped", len(corrupt), "total_dropped", q.dropped)
		return putUint(meta, keyDropped, q.dropped)
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("queue open %s: %w", path, err)
	}
	return q, nil
}

// Close closes the database. Further calls return ErrClosed.
func (q *Queue) Close() error {
	if q.closed.Swap(true) {
		return nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if err := q.db.Close(); err != nil {
		return fmt.Errorf("queue close: %w", err)
	}
	return nil
}

// Put stores msg durably. When the queue is full the oldest messages are
// dropped to make room, in the same transaction.
func (q *Queue) Put(msg Message) error {
	if msg.ID == "" {
		return fmt.Errorf("queue put: %w: empty id", ErrInvalid)
	}
	rec := encode(msg)
	size := int64(len(rec))
	if size > q.opts.MaxBytes {
		return fmt.Errorf("queue put %s: %w: %d > %d bytes", msg.ID, ErrTooLarge, size, q.opts.MaxBytes)
	}
	if q.closed.Load() {
		return ErrClosed
	}
	q.mu.Lock()
	defer q.mu.Unlock()

	count, total := q.count, q.bytes
	var droppedIDs []string
	err := q.db.Update(func(tx *bolt.Tx) error {
		droppedIDs = droppedIDs[:0]
		var corrupt [][]byte
		msgs, ids := tx.Bucket(bucketMsgs), tx.Bucket(bucketIDs)
		if ids.Get([]byte(msg.ID)) != nil {
			return ErrDuplicate
		}
		c := msgs.Cursor()
		for count+1 > q.opts.MaxCount || total+size > q.opts.MaxBytes {
			k, v := c.First()
			if k == nil {
				break // cannot happen: size <= MaxBytes and MaxCount >= 1
			}
			id, err := decodeID(v)
			if err != nil {
				// Corrupted since Open: drop it all the same, and its ids
				// entry below.
				corrupt = append(corrupt, bytes.Clone(k))
				id = fmt.Sprintf("(corrupt record %x)", k)
			}
			total -= int64(len(v))
			count--
			droppedIDs = append(droppedIDs, id)
			if err := c.Delete(); err != nil {
				return err
			}
			if err := ids.Delete([]byte(id)); err != nil {
				return err
			}
		}
		if len(corrupt) > 0 {
			if err := dropKeys(tx, corrupt); err != nil {
				return err
			}
		}
		if len(droppedIDs) > 0 {
			if err := putUint(tx.Bucket(bucketMeta), keyDropped, q.dropped+uint64(len(droppedIDs))); err != nil {
				return err
			}
		}
		n, err := msgs.NextSequence()
		if err != nil {
			return err
		}
		key := binary.BigEndian.AppendUint64(nil, n)
		if err := msgs.Put(key, rec); err != nil {
			return err
		}
		return ids.Put([]byte(msg.ID), key)
	})
	if err != nil {
		return q.wrap("put "+msg.ID, err)
	}
	q.count, q.bytes = count+1, total+size
	if len(droppedIDs) > 0 {
		q.dropped += uint64(len(droppedIDs))
		q.log.Warn("queue full, dropped oldest messages",
			"dropped", len(droppedIDs), "first", droppedIDs[0], "last", droppedIDs[len(droppedIDs)-1],
			"total_dropped", q.dropped, "count", q.count, "bytes", q.bytes)
	}
	return nil
}

// Peek returns up to n messages, oldest first, without removing them.
// n <= 0 returns none. Records that no longer decode are skipped (logged).
func (q *Queue) Peek(n int) ([]Message, error) {
	if n <= 0 {
		return nil, nil
	}
	if q.closed.Load() {
		return nil, ErrClosed
	}
	var out []Message
	err := q.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketMsgs).Cursor()
		for k, v := c.First(); k != nil && len(out) < n; k, v = c.Next() {
			m, err := decode(v)
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

// Ack removes messages the hub acknowledged. IDs no longer queued (dropped
// while in flight) are ignored.
func (q *Queue) Ack(ids ...string) error {
	_, err := q.remove("ack", ids)
	return err
}

// Remove removes messages that will never be delivered (the hub refuses
// them) and counts them as dropped. Unknown IDs are ignored.
func (q *Queue) Remove(ids ...string) error {
	n, err := q.remove("remove", ids)
	if err == nil && n > 0 {
		q.log.Warn("queue removed undeliverable messages", "removed", n, "ids", ids, "total_dropped", q.Dropped())
	}
	return err
}

func (q *Queue) remove(op string, idList []string) (int, error) {
	if len(idList) == 0 {
		return 0, nil
	}
	if q.closed.Load() {
		return 0, ErrClosed
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	removed, freed := 0, int64(0)
	drop := op == "remove"
	err := q.db.Update(func(tx *bolt.Tx) error {
		msgs, ids := tx.Bucket(bucketMsgs), tx.Bucket(bucketIDs)
		for _, id := range idList {
			key := ids.Get([]byte(id))
			if key == nil {
				continue
			}
			freed += int64(len(msgs.Get(key)))
			if err := msgs.Delete(key); err != nil {
				return err
			}
			if err := ids.Delete([]byte(id)); err != nil {
				return err
			}
			removed++
		}
		if drop && removed > 0 {
			return putUint(tx.Bucket(bucketMeta), keyDropped, q.dropped+uint64(removed))
		}
		return nil
	})
	if err != nil {
		return 0, q.wrap(op, err)
	}
	q.count -= removed
	q.bytes -= freed
	if drop {
		q.dropped += uint64(removed)
	}
	return removed, nil
}

// Len reports how many messages are queued and their stored size in bytes.
func (q *Queue) Len() (count int, bytes int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.count, q.bytes
}

// Dropped reports how many messages were ever dropped because the queue was
// full or they were Removed. It survives restarts.
func (q *Queue) Dropped() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.dropped
}

// NextSeq returns the next device sequence number: 1 for a new queue,
// then one more on every call, durably. Numbers never repeat, even when
// the database is lost: a new database starts above the block reserved in
// the floor file (see SeqSuffix). A crash between NextSeq and Put, or a
// lost database, leaves a gap, never a repeat.
func (q *Queue) NextSeq() (uint64, error) {
	if q.closed.Load() {
		return 0, ErrClosed
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	var seq, reserved uint64
	err := q.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMeta)
		seq = getUint(b, keySeq) + 1
		reserved = q.reserved
		if seq > reserved {
			// Reserve before issuing: the floor must cover every number
			// that may be in use. The file is written inside the
			// transaction so a failure issues nothing.
			reserved = seq - 1 + q.opts.SeqBlock
			if err := writeSeqFloor(q.seqPath, reserved); err != nil {
				return err
			}
		}
		return putUint(b, keySeq, seq)
	})
	if err != nil {
		return 0, q.wrap("next seq", err)
	}
	q.reserved = reserved
	return seq, nil
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

func (q *Queue) wrap(op string, err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		err = ErrClosed
	}
	return fmt.Errorf("queue %s: %w", op, err)
}

// dropKeys deletes records by insertion key, and any ids entries pointing
// at them.
func dropKeys(tx *bolt.Tx, keys [][]byte) error {
	msgs, ids := tx.Bucket(bucketMsgs), tx.Bucket(bucketIDs)
	for _, k := range keys {
		if err := msgs.Delete(k); err != nil {
			return err
		}
	}
	var stale [][]byte
	err := ids.ForEach(func(id, k []byte) error {
		if slices.ContainsFunc(keys, func(d []byte) bool { return bytes.Equal(d, k) }) {
			stale = append(stale, bytes.Clone(id))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, id := range stale {
		if err := ids.Delete(id); err != nil {
			return err
		}
	}
	return nil
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

// Record format, version 1: the version byte, then uvarint Seq, varint
// Created (Unix ns, 0 for the zero time), then length-prefixed ID, Body and
// a count of length-prefixed key/value pairs sorted by key. The ID comes
// early so dropping the oldest need not decode the body.
const recordV1 = 1

var errCorrupt = errors.New("corrupt record")

func encode(m Message) []byte {
	b := make([]byte, 0, 32+len(m.ID)+len(m.Body)+16*len(m.Props))
	b = append(b, recordV1)
	b = binary.AppendUvarint(b, m.Seq)
	var created int64
	if !m.Created.IsZero() {
		created = m.Created.UnixNano()
	}
	b = binary.AppendVarint(b, created)
	b = appendBytes(b, []byte(m.ID))
	b = appendBytes(b, m.Body)
	keys := make([]string, 0, len(m.Props))
	for k := range m.Props {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = appendBytes(b, []byte(k))
		b = appendBytes(b, []byte(m.Props[k]))
	}
	return b
}

func appendBytes(b, s []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// reader decodes a record; the first error sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errCorrupt
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errCorrupt
		return 0
	}
	r.b = r.b[n:]
	return v
}

// bytes returns a copy: bbolt's slices are only valid inside the transaction.
func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = errCorrupt
		return nil
	}
	out := bytes.Clone(r.b[:n])
	r.b = r.b[n:]
	return out
}

func header(v []byte) (*reader, error) {
	if len(v) == 0 || v[0] != recordV1 {
		return nil, errCorrupt
	}
	return &reader{b: v[1:]}, nil
}

func decodeID(v []byte) (string, error) {
	r, err := header(v)
	if err != nil {
		return "", err
	}
	r.uvarint()
	r.varint()
	id := r.bytes()
	return string(id), r.err
}

func decode(v []byte) (Message, error) {
	r, err := header(v)
	if err != nil {
		return Message{}, err
	}
	var m Message
	m.Seq = r.uvarint()
	if ns := r.varint(); ns != 0 {
		m.Created = time.Unix(0, ns)
	}
	m.ID = string(r.bytes())
	m.Body = r.bytes()
	if n := r.uvarint(); n > 0 && r.err == nil {
		if n > uint64(len(r.b)) {
			return Message{}, errCorrupt
		}
		m.Props = make(map[string]string, n)
		for range n {
			k := r.bytes()
			m.Props[string(k)] = string(r.bytes())
		}
	}
	if r.err != nil {
		return Message{}, r.err
	}
	if len(r.b) != 0 {
		return Message{}, errCorrupt
	}
	return m, nil
}
