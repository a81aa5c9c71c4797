package queue

import (
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

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

func TestPutPeekAckFIFO(t *testing.T) {
	t.Parallel()
	q := open(t, filepath.Join(t.TempDir(), "q.db"), Options{})
	var want []Message
	for i := range 5 {
		m := msg(i)
		if err := q.Put(m); err != nil {
			t.Fatalf("Put(%s) = %v", m.ID, err)
		}
		want = append(want, m)
	}
	// A message without Props or Created round-trips as such.
	bare := Message{ID: "bare", Body: []byte{}}
	if err := q.Put(bare); err != nil {
		t.Fatal(err)
	}
	want = append(want, bare)

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

	if err := q.Ack("m0001", "m0003", "nope"); err != nil {
		t.Fatalf("Ack = %v", err)
	}
	got, _ = q.Peek(10)
	if w := []string{"m0000", "m0002", "m0004", "bare"}; !reflect.DeepEqual(ids(got), w) {
		t.Errorf("after Ack, Peek = %v; want %v", ids(got), w)
	}
	if n, _ := q.Len(); n != 4 {
		t.Errorf("Len() count = %d; want 4", n)
	}
	if err := q.Ack(ids(got)...); err != nil {
		t.Fatal(err)
	}
	if n, b := q.Len(); n != 0 || b != 0 {
		t.Errorf("Len() after acking all = %d, %d; want 0, 0", n, b)
	}
	if d := q.Dropped(); d != 0 {
		t.Errorf("Dropped() = %d after acks; want 0", d)
	}
}

func TestPutErrors(t *testing.T) {
	t.Parallel()
	q := open(t, filepath.Join(t.TempDir(), "q.db"), Options{MaxBytes: 200})
	if err := q.Put(msg(1)); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		m    Message
		want error
	}{
		{"empty id", Message{Body: []byte("x")}, ErrInvalid},
		{"duplicate", msg(1), ErrDuplicate},
		{"too large", Message{ID: "big", Body: make([]byte, 300)}, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := q.Put(tt.m); !errors.Is(err, tt.want) {
				t.Errorf("Put(%q) = %v; want %v", tt.m.ID, err, tt.want)
			}
		})
	}
	if n, _ := q.Len(); n != 1 {
		t.Errorf("Len() = %d after failed Puts; want 1", n)
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
		"Put":    q.Put(msg(1)),
		"Ack":    q.Ack("x"),
		"Remove": q.Remove("x"),
	}
	_, calls["Peek"] = q.Peek(1)
	_, calls["NextSeq"] = q.NextSeq()
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
		if err := q.Put(msg(i)); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := q.Peek(10)
	if w := []string{"m0002", "m0003", "m0004"}; !reflect.DeepEqual(ids(got), w) {
		t.Errorf("Peek = %v; want %v", ids(got), w)
	}
	if d := q.Dropped(); d != 2 {
		t.Errorf("Dropped() = %d; want 2", d)
	}
	// The dropped ids are free again: a late duplicate is not confused with them.
	if err := q.Put(msg(0)); err != nil {
		t.Errorf("Put(dropped id) = %v; want nil", err)
	}
	q.Close()

	q = open(t, path, Options{MaxCount: 3})
	if d := q.Dropped(); d != 3 {
		t.Errorf("Dropped() after reopen = %d; want 3", d)
	}
	if n, _ := q.Len(); n != 3 {
		t.Errorf("Len() after reopen = %d; want 3", n)
	}
}

func TestBoundByBytesDropsOldest(t *testing.T) {
	t.Parallel()
	size := int64(len(encode(msg(0))))
	q := open(t, filepath.Join(t.TempDir(), "q.db"), Options{MaxBytes: 2*size + size/2})
	for i := range 4 {
		if err := q.Put(msg(i)); err != nil {
			t.Fatal(err)
		}
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
	big := Message{ID: "big", Body: make([]byte, 2*size)}
	if err := q.Put(big); err != nil {
		t.Fatal(err)
	}
	got, _ = q.Peek(10)
	if w := []string{"big"}; !reflect.DeepEqual(ids(got), w) {
		t.Errorf("Peek = %v; want %v", ids(got), w)
	}
	if d := q.Dropped(); d != 4 {
		t.Errorf("Dropped() = %d; want 4", d)
	}
}

func TestRemoveCountsAsDropped(t *testing.T) {
	t.Parallel()
	q := open(t, filepath.Join(t.TempDir(), "q.db"), Options{})
	for i := range 3 {
		if err := q.Put(msg(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Remove("m0001", "unknown"); err != nil {
		t.Fatal(err)
	}
	if d := q.Dropped(); d != 1 {
		t.Errorf("Dropped() = %d; want 1", d)
	}
	got, _ := q.Peek(10)
	if w := []string{"m0000", "m0002"}; !reflect.DeepEqual(ids(got), w) {
		t.Errorf("Peek = %v; want %v", ids(got), w)
	}
}

func TestReopenKeepsMessagesAndSeq(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "q.db")
	q := open(t, path, Options{})
	for want := uint64(1); want <= 3; want++ {
		if got, err := q.NextSeq(); got != want || err != nil {
			t.Fatalf("NextSeq() = %d, %v; want %d", got, err, want)
		}
	}
	for i := range 3 {
		if err := q.Put(msg(i)); err != nil {
			t.Fatal(err)
		}
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
		if !sameMessage(got[i], msg(i)) {
			t.Errorf("Peek()[%d] after reopen = %+v; want %+v", i, got[i], msg(i))
		}
	}
	if got, err := q.NextSeq(); got != 4 || err != nil {
		t.Errorf("NextSeq() after reopen = %d, %v; want 4", got, err)
	}
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
			seq, err := q.NextSeq()
			if err != nil {
				errc <- err
				return
			}
			m := msg(i)
			m.Seq = seq
			if err := q.Put(m); err != nil {
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
			if err := q.Ack(ids(batch)...); err != nil {
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
	if id, err := decodeID(rec); id != "m0003" || err != nil {
		t.Errorf("decodeID = %q, %v; want m0003", id, err)
	}
}

// BenchmarkPutAck measures one reading's full life: a durable Put and,
// once delivered, a durable Ack (two fsync'ed transactions).
func BenchmarkPutAck(b *testing.B) {
	q := open(b, filepath.Join(b.TempDir(), "q.db"), Options{})
	m := msg(1)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		m.ID = fmt.Sprintf("m%d", i)
		if err := q.Put(m); err != nil {
			b.Fatal(err)
		}
		if err := q.Ack(m.ID); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPutBacklogAckBatch measures the sender draining a backlog after a
// reconnect: Put while 1000 messages wait, Peek 10, Ack 10.
func BenchmarkPutBacklogAckBatch(b *testing.B) {
	q := open(b, filepath.Join(b.TempDir(), "q.db"), Options{})
	m := msg(1)
	n := 0
	put := func() {
		m.ID = fmt.Sprintf("m%d", n)
		n++
		if err := q.Put(m); err != nil {
			b.Fatal(err)
		}
	}
	for range 1000 {
		put()
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		put()
		if i%10 == 9 {
			batch, err := q.Peek(10)
			if err != nil {
				b.Fatal(err)
			}
			if err := q.Ack(ids(batch)...); err != nil {
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
		if err := q.Put(msg(i)); err != nil {
			t.Fatal(err)
		}
	}
	q.Close()

	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		key := tx.Bucket(bucketIDs).Get([]byte("m0001"))
		rec := tx.Bucket(bucketMsgs).Get(key)
		return tx.Bucket(bucketMsgs).Put(key, rec[:len(rec)-3])
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
	if err := q.Put(msg(1)); err != nil {
		t.Errorf("Put(id of the corrupt record) = %v; want nil", err)
	}
}
