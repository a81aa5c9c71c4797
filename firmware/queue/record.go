package queue

import (
	"bytes"
	"encoding/binary"
	"errors"
	"sort"
	"time"
)

// Record format, version 1: the version byte, then uvarint Seq, varint
// Created (Unix ns, 0 for the zero time), then length-prefixed ID, Body and
// a count of length-prefixed key/value pairs sorted by key. The record is
// stored under its Seq (8 bytes, big-endian); a record whose Seq differs
// from its key is corrupt. Databases written before the key was the Seq
// are converted by Open (see migrate).
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
