package fdlimit

import (
	"log/slog"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/reefer/tracker/internal/syncbuf"
)

func TestRaiseLiftsTheSoftLimit(t *testing.T) {
	var orig syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
		t.Fatal(err)
	}
	if orig.Max < 64 {
		t.Skipf("hard open-file limit %d is too low to lower the soft one", orig.Max)
	}
	t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig) })
	low := orig.Max / 2
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: low, Max: orig.Max}); err != nil {
		t.Fatal(err)
	}
	var buf syncbuf.Buffer
	got := Raise(slog.New(slog.NewTextHandler(&buf, nil)))
	var now syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &now); err != nil {
		t.Fatal(err)
	}
	if got < orig.Max || now.Cur != got {
		t.Errorf("Raise = %d, soft limit now %d; want at least the hard limit %d", got, now.Cur, orig.Max)
	}
	if want := "raised open-file limit from " + itoa(low) + " to " + itoa(got); !strings.Contains(buf.String(), want) {
		t.Errorf("log = %q; want %q", buf.String(), want)
	}

	// Nothing left to raise: the log says what the limit is.
	var buf2 syncbuf.Buffer
	if again := Raise(slog.New(slog.NewTextHandler(&buf2, nil))); again != got || !strings.Contains(buf2.String(), "open-file limit "+itoa(got)+" is the most") {
		t.Errorf("second Raise = %d, log %q; want %d and the limit named", again, buf2.String(), got)
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }
