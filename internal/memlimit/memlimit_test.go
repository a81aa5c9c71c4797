package memlimit

import (
	"errors"
	"log/slog"
	"math"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/reefer/tracker/internal/syncbuf"
)

func TestParse(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "1234": 1234, "512B": 512, "4KiB": 4 << 10, "900MiB": 900 << 20, " 1GiB ": 1 << 30, "2TiB": 2 << 40,
	} {
		got, err := Parse(in)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "1.5GiB", "1GB", "1 G", "-1MiB", "9000000TiB", "off"} {
		if got, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) = %d, want an error", in, got)
		}
	}
}

func TestBytesFlagRoundTrips(t *testing.T) {
	for _, s := range []string{"0", "900MiB", "1GiB", "1536KiB", "1000B"} {
		var b Bytes
		if err := b.Set(s); err != nil {
			t.Fatal(err)
		}
		if b.String() != s {
			t.Errorf("Set(%q).String() = %q", s, b.String())
		}
	}
}

func TestApply(t *testing.T) {
	orig := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(orig) })
	var buf syncbuf.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))

	got, err := Apply(900<<20, log)
	if err != nil || got != 900<<20 || debug.SetMemoryLimit(-1) != 900<<20 {
		t.Fatalf("Apply(900MiB) = %d, %v; runtime limit %d", got, err, debug.SetMemoryLimit(-1))
	}
	if !strings.Contains(buf.String(), "soft memory limit 900MiB") {
		t.Errorf("log does not name the limit: %s", buf.String())
	}

	// Zero keeps what is in force.
	if got, err := Apply(0, log); err != nil || got != 900<<20 {
		t.Errorf("Apply(0) = %d, %v; want the limit in force", got, err)
	}

	debug.SetMemoryLimit(math.MaxInt64)
	if got, _ := Apply(0, log); got != math.MaxInt64 || !strings.Contains(buf.String(), "no soft memory limit") {
		t.Errorf("Apply(0) without a limit = %d, log %s", got, buf.String())
	}

	if _, err := Apply(1<<20, log); !errors.Is(err, ErrTooLow) {
		t.Errorf("Apply(1MiB) = %v, want ErrTooLow", err)
	}
	// "--memory-limit 900" is 900 bytes: the error says how to give a unit.
	if _, err := Apply(900, log); err == nil || !strings.Contains(err.Error(), "900B") || !strings.Contains(err.Error(), "e.g. 900MiB") {
		t.Errorf("Apply(900) = %v, want the bytes named and a unit suggested", err)
	}
	if debug.SetMemoryLimit(-1) != math.MaxInt64 {
		t.Error("a refused limit changed the runtime's")
	}
}
