package gps

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// readAllLines drains a lineReader, returning lines and line errors.
func readAllLines(t testing.TB, in []byte, max int) (lines []string, errs []error) {
	t.Helper()
	lr := newLineReader(bytes.NewReader(in), max)
	for i := 0; ; i++ {
		if i > len(in)+1 {
			t.Fatalf("lineReader did not stop on %q", in)
		}
		l, err := lr.next()
		switch {
		case errors.Is(err, io.EOF):
			return lines, errs
		case err != nil:
			errs = append(errs, err)
		default:
			lines = append(lines, l)
		}
	}
}

func TestLineReader(t *testing.T) {
	t.Parallel()
	rmc := sentence(rmcValid)
	gga := sentence(ggaValid)
	long := "$GPTXT," + strings.Repeat("x", MaxLineLen)
	tests := []struct {
		name      string
		in        string
		wantLines []string
		wantErrs  []error
	}{
		{"crlf", rmc + "\r\n" + gga + "\r\n", []string{rmc, gga}, nil},
		{"lf only", rmc + "\n" + gga + "\n", []string{rmc, gga}, nil},
		{"leading garbage", "\x00\xff junk" + rmc + "\r\n", []string{rmc}, nil},
		{"partial then resync", rmc[:20] + gga + "\r\n", []string{gga}, []error{ErrLineCut}},
		{"over-long then resync", long + "tail\r\n" + rmc + "\r\n", []string{rmc}, []error{ErrLineTooLong}},
		{"over-long tail holds no $", long + "," + long[1:] + "\r\n" + gga + "\r\n", []string{gga}, []error{ErrLineTooLong}},
		{"binary inside line", rmc[:10] + "\x01\x02" + rmc[10:] + "\r\n" + gga + "\r\n", []string{gga}, []error{ErrLineGarbled}},
		{"unterminated at EOF dropped", rmc + "\r\n" + gga, []string{rmc}, nil},
		{"blank lines", "\r\n\r\n" + rmc + "\r\n\r\n", []string{rmc}, nil},
		{"exactly max", "$" + strings.Repeat("A", MaxLineLen-1) + "\r\n", []string{"$" + strings.Repeat("A", MaxLineLen-1)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			lines, errs := readAllLines(t, []byte(tt.in), MaxLineLen)
			if strings.Join(lines, "|") != strings.Join(tt.wantLines, "|") {
				t.Errorf("lines(%q) = %q; want %q", tt.in, lines, tt.wantLines)
			}
			if len(errs) != len(tt.wantErrs) {
				t.Fatalf("errors(%q) = %v; want %v", tt.in, errs, tt.wantErrs)
			}
			for i := range errs {
				if !errors.Is(errs[i], tt.wantErrs[i]) {
					t.Errorf("error %d = %v; want %v", i, errs[i], tt.wantErrs[i])
				}
			}
		})
	}
}

// FuzzLines feeds arbitrary bytes through the line reader and decoder.
// Whatever comes before, a good sentence that follows must come out
// intact, every line must be bounded and clean, and nothing may panic.
func FuzzLines(f *testing.F) {
	for _, seed := range []string{
		"",
		"$",
		"$$$$\r\n",
		sentence(rmcValid) + "\r\n",
		sentence(rmcValid)[:30],
		"\xb5\x62\x01\x07$GP\x00RMC",
		"$GPTXT," + strings.Repeat("y", 300),
		sentence(rmcVoid) + "\r\n" + sentence(ggaNoFix) + "\n",
		sentence("GPGGA,,,,,,1,08,0.9,,,,,,") + "\r\n",
		"$GPRMC,1,A,,,,,,,,,,*00\r\n",
	} {
		f.Add([]byte(seed))
	}
	good := sentence(ggaValid)
	f.Fuzz(func(t *testing.T, in []byte) {
		lines, _ := readAllLines(t, append(append([]byte{}, in...), good+"\r\n"...), MaxLineLen)
		if len(lines) == 0 || lines[len(lines)-1] != good {
			t.Fatalf("after %q the good sentence was lost: %q", in, lines)
		}
		var d decoder
		for _, l := range lines {
			if len(l) > MaxLineLen || l[0] != '$' || strings.ContainsAny(l[1:], "$\r\n") {
				t.Fatalf("bad line %q from %q", l, in)
			}
			for _, b := range []byte(l) {
				if b < 0x20 || b > 0x7e {
					t.Fatalf("line %q holds byte %#x", l, b)
				}
			}
			_ = d.feed(l, t0)
			if f, ok := d.fix(t0, time.Minute, "x"); ok && f.Latitude == 0 && f.Longitude == 0 {
				t.Fatalf("null island fix from %q", l)
			}
		}
	})
}
