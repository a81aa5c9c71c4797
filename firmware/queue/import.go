package queue

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Import stores a message numbered elsewhere under its own Seq, which must
// be above every number this queue issued: the backlog of an in-memory
// queue that stood in while the state directory was unusable, moved back
// when it is writable again. The next Append continues above m.Seq, and
// the sequence floor covers it, so ids stay unique. Like Append it drops
// the oldest messages when the queue is full.
func (q *Queue) Import(m Message) (Message, error) {
	if q.closed.Load() {
		return Message{}, ErrClosed
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	err := q.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if cur := getUint(meta, keySeq); cur >= m.Seq {
			return fmt.Errorf("%w: import seq %d not above the last issued %d", ErrInvalid, m.Seq, cur)
		}
		// Raising the counter alone costs at most a gap if the store below
		// then fails; gaps are harmless (see seqfile.go).
		return putUint(meta, keySeq, m.Seq-1)
	})
	if err != nil {
		return Message{}, q.wrap("import "+m.ID, err)
	}
	return q.appendLocked(func(uint64) (Message, error) { return m, nil }, q.space.limit(q.opts.MaxBytes))
}
