package gps

import (
	"bufio"
	"errors"
	"io"
)

// MaxLineLen bounds one sentence, '$' to checksum. NMEA 0183 allows 82
// characters including CR LF; some receivers run longer proprietary
// sentences, so we allow some slack but never an unbounded buffer.
const MaxLineLen = 128

// Non-fatal line errors: the line was dropped, reading can go on.
var (
	// ErrLineTooLong means a line passed MaxLineLen; the reader skips to
	// the next '$'.
	ErrLineTooLong = errors.New("nmea line too long")
	// ErrLineCut means a '$' arrived before the previous line ended, as
	// after a dropped byte or a receiver reset mid-sentence.
	ErrLineCut = errors.New("nmea line cut short")
	// ErrLineGarbled means a line held a byte that NMEA never sends (not
	// printable ASCII), e.g. line noise or binary UBX frames.
	ErrLineGarbled = errors.New("nmea line garbled")
)

// lineReader splits a serial byte stream into candidate sentences: each
// starts at '$' and ends before CR or LF. Bytes between sentences are
// skipped, so it resynchronises at the next '$' after any damage.
type lineReader struct {
	r      *bufio.Reader
	line   []byte
	inLine bool
	max    int
}

func newLineReader(r io.Reader, max int) *lineReader {
	if max <= 1 {
		max = MaxLineLen
	}
	return &lineReader{r: bufio.NewReaderSize(r, 256), line: make([]byte, 0, max), max: max}
}

// next returns the next line, one of the Err* line errors above (the
// caller counts it and calls next again) or the reader's error. A partial
// line pending at a read error is dropped.
func (l *lineReader) next() (string, error) {
	for {
		b, err := l.r.ReadByte()
		if err != nil {
			l.inLine = false
			l.line = l.line[:0]
			return "", err
		}
		switch {
		case b == '$':
			cut := l.inLine
			l.inLine = true
			l.line = append(l.line[:0], b)
			if cut {
				return "", ErrLineCut
			}
		case !l.inLine:
			// Noise between sentences.
		case b == '\r' || b == '\n':
			l.inLine = false
			return string(l.line), nil
		case b < 0x20 || b > 0x7e:
			l.inLine = false
			return "", ErrLineGarbled
		case len(l.line) >= l.max:
			l.inLine = false
			return "", ErrLineTooLong
		default:
			l.line = append(l.line, b)
		}
	}
}
