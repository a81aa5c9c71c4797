package queue

import (
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/reefer/tracker/internal/waitfor"
	bolt "go.etcd.io/bbolt"
)

func open(t testing.TB, path string, opts Options) *Queue {
	t.Helper()
	q, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open(%q) = %v", path, err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func msg(i int) Message {
	return Message{
		ID:      fmt.Sprintf("m%04d", i),
		Seq:     uint64(i),
		Body:    fmt.Appendf(nil, `{"temperature":%d.5}`, i),
		Props:   map[string]string{"temperatureAlert": "false", "$.ct": "application/json"},
		Created: time.Date(2026, 11, 28, 13, 0, i, 7, time.UTC),
	}
}

// add appends m (its Seq is assigned) and returns it as stored.
func add(t testing.TB, q *Queue, m Message) Message {
	t.Helper()
	got, err := q.Append(func(uint64) (Message, error) { return m, nil })
	if err != nil {
		t.Fatalf("Append(%s) = %v", m.ID, err)
	}
	return got
}

func seqs(ms []Message) []uint64 {
	var out []uint64
	for _, m := range ms {
		out = append(out, m.Seq)
	}
	return out
}

func ids(ms []Message) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.ID)
	}
	return out
}

func sameMessage(a, b Message) bool {
	return a.ID == b.ID && a.Seq == b.Seq && string(a.Body) == string(b.Body) &&
		reflect.DeepEqual(a.Props, b.Props) && a.Created.Equal(b.Created)
}

func TestAppendPeekAckFIFO(t *testing.T) {
	t.Parallel()
	q := open(t, filepath.Join(t.TempDir(), "q.db"), Options{})
	var want []Message
	for i := range 5 {
		m := add(t, q, msg(i))
		if m.Seq != uint64(i+1) {
			t.Fatalf("Append #%d got seq %d; want %d", i, m.Seq, i+1)
		}
		want = append(want, m)
	}
	// A message without Props or Created round-trips as such.
	want = append(want, add(t, q, Message{ID: "bare", Body: []byte{}}))

	got, err := q.Peek(100)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("Peek(100) = %v; want %v", ids(got), ids(want))
	}
	for i := range want {
		if !sameMessage(got[i], want[i]) {
			t.Errorf("Peek(100)[%d] = %+v; want %+v", i, got[i], want[i])
		}
	}
	if !got[5].Created.IsZero() || got[5].Props != nil {
		t.Errorf("bare message = %+v; want zero Created and nil Props", got[5])
	}
	if got, _ := q.Peek(2); !reflect.DeepEqual(ids(got), []string{"m0000", "m0001"}) {
		t.Errorf("Peek(2) = %v; want [m0000 m0001]", ids(got))
	}
	if got, _ := q.Peek(0); got != nil {
		t.Errorf("Peek(0) = %v; want nil", ids(got))
	}

	if err := q.Ack(2, 4, 99); err != nil {
		t.Fatalf("Ack = %v", err)
	}
	got, _ = q.Peek(10)
	if w := []string{"m0000", "m0002", "m0004", "bare"}; !reflect.DeepEqual(ids(got), w) {
		t.Errorf("after Ack, Peek = %v; want %v", ids(got), w)
	}
	if n, _ := q.Len(); n != 4 {
		t.Errorf("Len() count = %d; want 4", n)
	}
	if err := q.Ack(seqs(got)...); err != nil {
		t.Fatal(err)
	}
	if n, b := q.Len(); n != 0 || b != 0 {
		t.Errorf("Len() after acking all = %d, %d; want 0, 0", n, b)
	}
	if d := q.Dropped(); d != 0 {
		t.Errorf("Dropped() = %d after acks; want 0", d)
	}
}

func TestAppendErrors(t *testing.T) {
	t.Parallel()
	q := open(t, filepath.Join(t.TempDir(), "q.db"), Options{MaxBytes: 200})
	add(t, q, msg(1))
	errBuild := errors.New("no reading")
	tests := []struct {
		name  string
		build func(uint64) (Message, error)
		want  error
	}{
		{"empty id", func(uint64) (Message, error) { return Message{Body: []byte("x")}, nil }, ErrInvalid},
		{"too large", func(uint64) (Message, error) { return Message{ID: "big", Body: make([]byte, 300)}, nil }, ErrTooLarge},
		{"build fails", func(uint64) (Message, error) { return Message{}, errBuild }, errBuild},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := q.Append(tt.build); !errors.Is(err, tt.want) {
				t.Errorf("Append = %v; want %v", err, tt.want)
			}
		})
	}
	if n, _ := q.Len(); n != 1 {
		t.Errorf("Len() = %d after failed Appends; want 1", n)
	}
	// A failed Append uses no number.
	if m := add(t, q, msg(2)); m.Seq != 2 {
		t.Errorf("seq after failed Appends = %d; want 2", m.Seq)
	}
}

func TestClosed(t *testing.T) {
	t.Parallel()
	q, err := Open(filepath.Join(t.TempDir(), "q.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Errorf("second Close() = %v; want nil", err)
	}
	calls := map[string]error{
		"Ack":  q.Ack(1),
		"Sync": q.Sync(),
	}
	_, calls["Append"] = q.Append(func(uint64) (Message, error) { return msg(1), nil })
	_, calls["Peek"] = q.Peek(1)
	for name, err := range calls {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close = %v; want ErrClosed", name, err)
		}
	}
}

func TestBoundByCountDropsOldest(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "q.db")
	q := open(t, path, Options{MaxCount: 3})
	for i := range 5 {
		add(t, q, msg(i))
	}
	got, _ := q.Peek(10)
	if w := []string{"m0002", "m0003", "m0004"}; !reflect.DeepEqual(ids(got), w) {
		t.Errorf("Peek = %v; want %v", ids(got), w)
	}
	if d := q.Dropped(); d != 2 {
		t.Errorf("Dropped() = %d; want 2", d)
	}
	// An acknowledged message makes room without counting as dropped.
	if err := q.Ack(got[1].Seq); err != nil {
		t.Fatal(err)
	}
	add(t, q, msg(5))
	if d := q.Dropped(); d != 2 {
		t.Errorf("Dropped() after an ack made room = %d; want 2", d)
	}
	add(t, q, msg(6))
	q.Close()

	q = open(t, path, Options{MaxCount: 3})
	if d := q.Dropped(); d != 3 {
		t.Errorf("Dropped() after reopen = %d; want 3", d)
	}
	got, _ = q.Peek(10)
	if w := []string{"m0004", "m0005", "m0006"}; !reflect.DeepEqual(ids(got), w) {
		t.Errorf("Peek after reopen = %v; want %v", ids(got), w)
	}
}

func TestBoundByBytesDropsOldest(t *testing.T) {
	t.Parallel()
	m0 := msg(0)
	m0.Seq = 1
	size := int64(len(encode(m0)))
	q := open(t, filepath.Join(t.TempDir(), "q.db"), Options{MaxBytes: 2*size + size/2})
	for i := range 4 {
		add(t, q, msg(i))
	}
	got, _ := q.Peek(10)
	if w := []string{"m0002", "m0003"}; !reflect.DeepEqual(ids(got), w) {
		t.Errorf("Peek = %v; want %v", ids(got), w)
	}
	if n, b := q.Len(); n != 2 || b != 2*size {
		t.Errorf("Len() = %d, %d; want 2, %d", n, b, 2*size)
	}
	if d := q.Dropped(); d != 2 {
		t.Errorf("Dropped() = %d; want 2", d)
	}
	// One bigger message evicts as many as it needs.
	add(t, q, Message{ID: "big", Body: make([]byte, 2*size)})
	got, _ = q.Peek(10)
	if w := []string{"big"}; !reflect.DeepEqual(ids(got), w) {
		t.Errorf("Peek = %v; want %v", ids(got), w)
	}
	if d := q.Dropped(); d != 4 {
		t.Errorf("Dropped() = %d; want 4", d)
	}
}

func TestReopenKeepsMessagesAndSeq(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "q.db")
	q := open(t, path, Options{})
	var want []Message
	for i := range 3 {
		want = append(want, add(t, q, msg(i)))
	}
	wantLen, wantBytes := q.Len()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}

	q = open(t, path, Options{})
	if n, b := q.Len(); n != wantLen || b != wantBytes {
		t.Errorf("Len() after reopen = %d, %d; want %d, %d", n, b, wantLen, wantBytes)
	}
	got, _ := q.Peek(10)
	for i := range 3 {
		if !sameMessage(got[i], want[i]) {
			t.Errorf("Peek()[%d] after reopen = %+v; want %+v", i, got[i], want[i])
		}
	}
	if m := add(t, q, msg(3)); m.Seq != 4 {
		t.Errorf("seq after reopen = %d; want 4", m.Seq)
	}
}

// Acknowledgements wait in memory for the next Append, and are written
// with it: one transaction per reading. Close writes what is pending.
func TestAckIsLazyAndRidesOnAppend(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "q.db")
	q := open(t, path, Options{AckDelay: time.Hour})
	a := add(t, q, msg(0))
	b := add(t, q, msg(1))
	if err := q.Ack(a.Seq); err != nil {
		t.Fatal(err)
	}
	if onDisk(t, q) != 2 {
		t.Fatal("Ack wrote at once; want it kept in memory")
	}
	tx0 := writeTxs(q)
	add(t, q, msg(2))
	if n := writeTxs(q) - tx0; n > 1 {
		t.Errorf("Append with a pending ack took %d write transactions; want 1", n)
	}
	if got := onDisk(t, q); got != 2 {
		t.Errorf("records on disk after Append = %d; want 2 (the ack applied)", got)
	}
	if err := q.Ack(b.Seq); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = open(t, path, Options{})
	if got, _ := q.Peek(10); !reflect.DeepEqual(ids(got), []string{"m0002"}) {
		t.Errorf("after Close and reopen, Peek = %v; want [m0002]", ids(got))
	}
}

// Without an Append to ride on, acknowledgements are written after
// AckDelay, at once after AckBatch of them, or when a backlog drained.
func TestAckWrittenByDelayBatchOrDrain(t *testing.T) {
	t.Parallel()
	t.Run("delay", func(t *testing.T) {
		t.Parallel()
		q := open(t, filepath.Join(t.TempDir(), "q.db"), Options{AckDelay: 20 * time.Millisecond})
		add(t, q, msg(0))
		m := add(t, q, msg(1))
		if err := q.Ack(m.Seq); err != nil {
			t.Fatal(err)
		}
		waitfor.Until(t, "the ack written after AckDelay", 5*time.Second, 5*time.Millisecond, func() bool { return onDisk(t, q) == 1 })
	})
	t.Run("batch", func(t *testing.T) {
		t.Parallel()
		q := open(t, filepath.Join(t.TempDir(), "q.db"), Options{AckBatch: 3, AckDelay: time.Hour})
		for i := range 5 {
			add(t, q, msg(i))
		}
		if err := q.Ack(1, 2); err != nil {
			t.Fatal(err)
		}
		if got := onDisk(t, q); got != 5 {
			t.Fatalf("on disk after 2 acks = %d; want 5", got)
		}
		if err := q.Ack(3); err != nil {
			t.Fatal(err)
		}
		if got := onDisk(t, q); got != 2 {
			t.Errorf("on disk after AckBatch acks = %d; want 2", got)
		}
	})
	t.Run("drained", func(t *testing.T) {
		t.Parallel()
		q := open(t, filepath.Join(t.TempDir(), "q.db"), Options{AckDelay: time.Hour})
		for i := range 4 {
			add(t, q, msg(i))
		}
		if err := q.Ack(1, 2, 3, 4); err != nil {
			t.Fatal(err)
		}
		if got := onDisk(t, q); got != 0 {
			t.Errorf("on disk after the backlog drained = %d; want 0", got)
		}
	})
}

// writeTxs is the id of the last committed write transaction: each
// commit adds one.
func writeTxs(q *Queue) int {
	var id int
	_ = q.db.View(func(tx *bolt.Tx) error {
		id = tx.ID()
		return nil
	})
	return id
}

// onDisk counts the records in the database, acknowledged or not.
func onDisk(t testing.TB, q *Queue) int {
	t.Helper()
	n := 0
	err := q.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketMsgs).Stats().KeyN
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSecondOpenIsLocked(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "q.db")
	open(t, path, Options{})
	if q, err := Open(path, Options{LockTimeout: 20 * time.Millisecond}); err == nil {
		q.Close()
		t.Fatal("second Open succeeded while the first holds the lock")
	}
}

// The sampler Puts while the sender Peeks and Acks: every message is
// delivered exactly once and in order.
func TestConcurrentPutPeekAck(t *testing.T) {
	t.Parallel()
	q := open(t, filepath.Join(t.TempDir(), "q.db"), Options{})
	const n = 200
	var wg sync.WaitGroup
	wg.Add(2)
	errc := make(chan error, 2)
	go func() {
		defer wg.Done()
		for i := range n {
			if _, err := q.Append(func(uint64) (Message, error) { return msg(i), nil }); err != nil {
				errc <- err
				return
			}
		}
	}()
	var delivered []Message
	go func() {
		defer wg.Done()
		for len(delivered) < n {
			batch, err := q.Peek(7)
			if err != nil {
				errc <- err
				return
			}
			if len(batch) == 0 {
				time.Sleep(time.Millisecond)
				continue
			}
			delivered = append(delivered, batch...)
			if err := q.Ack(seqs(batch)...); err != nil {
				errc <- err
				return
			}
		}
	}()
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	for i, m := range delivered {
		if want := fmt.Sprintf("m%04d", i); m.ID != want || m.Seq != uint64(i+1) {
			t.Fatalf("delivered[%d] = %s seq %d; want %s seq %d", i, m.ID, m.Seq, want, i+1)
		}
	}
	if c, b := q.Len(); c != 0 || b != 0 {
		t.Errorf("Len() = %d, %d; want 0, 0", c, b)
	}
}

func TestDecodeRejectsTruncatedRecords(t *testing.T) {
	t.Parallel()
	rec := encode(msg(3))
	for i := range len(rec) {
		if _, err := decode(rec[:i]); err == nil {
			t.Errorf("decode(record[:%d]) = nil error; want corrupt", i)
		}
	}
	if _, err := decode(append(rec, 0)); err == nil {
		t.Error("decode(record + trailing byte) = nil error; want corrupt")
	}
	if m, err := decode(rec); err != nil || !sameMessage(m, msg(3)) {
		t.Errorf("decode(encode(m)) = %+v, %v; want %+v", m, err, msg(3))
	}
	if _, err := decodeAt(seqKey(4), rec); err == nil {
		t.Error("decodeAt(key of another seq) = nil error; want corrupt")
	}
}

// BenchmarkAppendAck measures one reading's life at the steady state: an
// Append and, once delivered, its Ack, which the next Append writes.
func BenchmarkAppendAck(b *testing.B) {
	q := open(b, filepath.Join(b.TempDir(), "q.db"), Options{AckDelay: time.Hour})
	m := msg(1)
	b.ReportAllocs()
	for b.Loop() {
		got := add(b, q, m)
		if err := q.Ack(got.Seq); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendBacklogAckBatch measures the sender draining a backlog
// after a reconnect: Append while 1000 messages wait, Peek 10, Ack 10.
func BenchmarkAppendBacklogAckBatch(b *testing.B) {
	q := open(b, filepath.Join(b.TempDir(), "q.db"), Options{})
	m := msg(1)
	for range 1000 {
		add(b, q, m)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		add(b, q, m)
		if i%10 == 9 {
			batch, err := q.Peek(10)
			if err != nil {
				b.Fatal(err)
			}
			if err := q.Ack(seqs(batch)...); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// A record that no longer decodes is dropped (and counted) at Open instead
// of failing every Peek.
func TestOpenDropsCorruptRecords(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "q.db")
	q := open(t, path, Options{})
	for i := range 3 {
		add(t, q, msg(i))
	}
	q.Close()

	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		rec := tx.Bucket(bucketMsgs).Get(seqKey(2))
		return tx.Bucket(bucketMsgs).Put(seqKey(2), rec[:len(rec)-3])
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	q = open(t, path, Options{})
	got, err := q.Peek(10)
	if err != nil {
		t.Fatalf("Peek after corruption = %v", err)
	}
	if w := []string{"m0000", "m0002"}; !reflect.DeepEqual(ids(got), w) {
		t.Errorf("Peek = %v; want %v", ids(got), w)
	}
	if n, _ := q.Len(); n != 2 {
		t.Errorf("Len() = %d; want 2", n)
	}
	if d := q.Dropped(); d != 1 {
		t.Errorf("Dropped() = %d; want 1", d)
	}
	if m := add(t, q, msg(3)); m.Seq != 4 {
		t.Errorf("seq after a corrupt record = %d; want 4", m.Seq)
	}
}

// A database written before the seq became the key (records under an
// insertion counter, an ids bucket) is converted at Open, nothing lost,
// and keeps numbering where it was.
func TestOpenMigratesOldLayout(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "q.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	var want []Message
	err = db.Update(func(tx *bolt.Tx) error {
		msgs, _ := tx.CreateBucket(bucketMsgs)
		oldIDs, _ := tx.CreateBucket(bucketOldIDs)
		meta, _ := tx.CreateBucket(bucketMeta)
		for i, seq := range []uint64{7, 8, 10} { // 9 was acked
			m := msg(i)
			m.Seq = seq
			want = append(want, m)
			key := seqKey(uint64(i + 1))
			if err := msgs.Put(key, encode(m)); err != nil {
				return err
			}
			if err := oldIDs.Put([]byte(m.ID), key); err != nil {
				return err
			}
		}
		// Unreadable records are dropped and counted.
		if err := msgs.Put(seqKey(4), []byte{recordV1, 0xff}); err != nil {
			return err
		}
		return putUint(meta, keySeq, 10)
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	q := open(t, path, Options{})
	got, _ := q.Peek(10)
	if len(got) != len(want) {
		t.Fatalf("Peek after migration = %v; want %v", ids(got), ids(want))
	}
	for i := range want {
		if !sameMessage(got[i], want[i]) {
			t.Errorf("Peek()[%d] = %+v; want %+v", i, got[i], want[i])
		}
	}
	if d := q.Dropped(); d != 1 {
		t.Errorf("Dropped() = %d; want 1 (the unreadable record)", d)
	}
	if m := add(t, q, msg(3)); m.Seq != 11 {
		t.Errorf("seq after migration = %d; want 11", m.Seq)
	}
	if err := q.Ack(8); err != nil {
		t.Fatal(err)
	}
	if err := q.Sync(); err != nil {
		t.Fatal(err)
	}
	got, _ = q.Peek(10)
	if w := []uint64{7, 10, 11}; !reflect.DeepEqual(seqs(got), w) {
		t.Errorf("after Ack(8), seqs = %v; want %v", seqs(got), w)
	}
}

// Import keeps a message's own number and the next Append continues above
// it; a number not above the last issued one is refused.
func TestImportKeepsSeq(t *testing.T) {
	t.Parallel()
	q, err := Open(filepath.Join(t.TempDir(), "q.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if _, err := q.Append(func(seq uint64) (Message, error) { return Message{ID: fmt.Sprint("d-", seq)}, nil }); err != nil {
		t.Fatal(err)
	}
	m, err := q.Import(Message{ID: "d-1764787200123", Seq: 1764787200123, Body: []byte("x")})
	if err != nil || m.Seq != 1764787200123 {
		t.Fatalf("Import = %+v, %v; want seq kept", m, err)
	}
	if _, err := q.Import(Message{ID: "d-5", Seq: 5}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Import below the last issued number = %v; want ErrInvalid", err)
	}
	next, err := q.Append(func(seq uint64) (Message, error) { return Message{ID: fmt.Sprint("d-", seq)}, nil })
	if err != nil || next.Seq != 1764787200124 {
		t.Errorf("Append after Import = seq %d, %v; want 1764787200124", next.Seq, err)
	}
	got, _ := q.Peek(10)
	if len(got) != 3 || got[1].ID != "d-1764787200123" || string(got[1].Body) != "x" {
		t.Errorf("Peek = %+v; want the imported message between the other two", got)
	}
}
