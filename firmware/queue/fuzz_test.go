package queue

import (
	"testing"
)

// FuzzDecodeRecord feeds arbitrary bytes to the record decoder, as a
// flipped bit on an SD card would: it must never panic nor over-allocate,
// and whatever it accepts must survive a round trip and be accepted under
// its own seq only. The seed corpus is in testdata/fuzz/FuzzDecodeRecord.
func FuzzDecodeRecord(f *testing.F) {
	for i := range 3 {
		m := msg(i)
		m.Seq = uint64(i + 1)
		f.Add(encode(m))
	}
	f.Add(encode(Message{ID: "bare"}))
	f.Add([]byte{})
	f.Add([]byte{recordV1})
	f.Fuzz(func(t *testing.T, rec []byte) {
		m, err := decode(rec)
		if err != nil {
			return
		}
		again, err := decode(encode(m))
		if err != nil {
			t.Fatalf("decode(encode(decoded)) = %v", err)
		}
		if !sameMessage(m, again) {
			t.Fatalf("round trip changed the message: %+v -> %+v", m, again)
		}
		if _, err := decodeAt(seqKey(m.Seq), rec); err != nil {
			t.Fatalf("decodeAt(its own seq) = %v", err)
		}
		if _, err := decodeAt(seqKey(m.Seq+1), rec); err == nil {
			t.Fatal("decodeAt(another seq) accepted the record")
		}
	})
}
