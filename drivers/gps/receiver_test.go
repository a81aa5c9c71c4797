package gps

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/reefer/tracker/drivers"
	"github.com/reefer/tracker/internal/ctxtime"
	"github.com/reefer/tracker/internal/syncbuf"
	"github.com/reefer/tracker/internal/waitfor"
)

// fakePTY is a pseudo-terminal: the receiver opens the slave path through
// go.bug.st/serial, the test plays the GPS module on the master end.
type fakePTY struct {
	master, slave *os.File
	path          string
}

func newPTY(t *testing.T) *fakePTY {
	t.Helper()
	m, s, err := pty.Open()
	if err != nil {
		t.Fatalf("pty.Open: %v", err)
	}
	p := &fakePTY{master: m, slave: s, path: s.Name()}
	t.Cleanup(p.unplug)
	return p
}

// send writes sentences (bodies get checksums) or raw strings as lines.
func (p *fakePTY) send(t *testing.T, lines ...string) {
	t.Helper()
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l)
		b.WriteString("\r\n")
	}
	if _, err := p.master.Write([]byte(b.String())); err != nil {
		t.Fatalf("write pty master: %v", err)
	}
}

// unplug closes both ends, as when a USB receiver is pulled out.
func (p *fakePTY) unplug() {
	p.master.Close()
	p.slave.Close()
}

// fakeClock is a settable Now.
type fakeClock struct{ ns atomic.Int64 }

func newClock(t time.Time) *fakeClock { c := &fakeClock{}; c.set(t); return c }
func (c *fakeClock) set(t time.Time)  { c.ns.Store(t.UnixNano()) }
func (c *fakeClock) now() time.Time   { return time.Unix(0, c.ns.Load()).UTC() }

// waitFor polls cond until it holds or fails the test after 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitfor.Until(t, what, 5*time.Second, 2*time.Millisecond, cond)
}

// startReceiver runs rx until the test ends and checks Run returns nil.
func startReceiver(t *testing.T, rx *Receiver) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rx.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run = %v; want nil after cancel", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
	})
}

// serialOpener opens p through go.bug.st/serial and signals each open.
func serialOpener(p *fakePTY, opened chan<- struct{}) func(context.Context) (io.ReadCloser, error) {
	return func(context.Context) (io.ReadCloser, error) {
		rc, err := OpenSerial(p.path, 9600)
		if err == nil {
			opened <- struct{}{}
		}
		return rc, err
	}
}

func TestReceiverPTY(t *testing.T) {
	t.Parallel()
	long := "$GPTXT,01,01,02," + strings.Repeat("Z", 200)
	good := sentence(rmcValid)
	tests := []struct {
		name      string
		lines     []string
		wantFix   bool
		wantGood  uint64
		wantBad   uint64
		wantLong  uint64
		afterwait time.Duration // clock advance before Latest
	}{
		{"valid fix", []string{sentence(rmcValid), sentence(ggaValid)}, true, 2, 0, 0, time.Second},
		{"no-fix sentences", []string{sentence(rmcVoid), sentence(ggaNoFix)}, false, 2, 0, 0, 0},
		{"fix then lost", []string{sentence(rmcValid), sentence(ggaValid), sentence(rmcVoid), sentence(ggaNoFix)}, false, 4, 0, 0, 0},
		{"stale fix", []string{sentence(rmcValid), sentence(ggaValid)}, false, 2, 0, 0, 3*time.Second + time.Millisecond},
		{"garbage, bad checksum, over-long", []string{
			"\x00\x13noise", good[:len(good)-2] + "FF", long, good[:25], sentence(ggaValid), "$GPZZZ,broken", good,
		}, true, 2, 4, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := newPTY(t)
			clock := newClock(t0)
			opened := make(chan struct{}, 1)
			rx := New(Options{Open: serialOpener(p, opened), MaxAge: 3 * time.Second, Now: clock.now}, nil)
			startReceiver(t, rx)
			<-opened
			p.send(t, tt.lines...)
			waitFor(t, "sentences", func() bool {
				s := rx.Stats()
				return s.Sentences+s.Bad >= tt.wantGood+tt.wantBad
			})
			clock.set(t0.Add(tt.afterwait))
			f, ok := rx.Latest()
			if ok != tt.wantFix {
				t.Fatalf("Latest() ok = %v; want %v (fix %+v)", ok, tt.wantFix, f)
			}
			if !ok && (f.Latitude != 0 || f.Longitude != 0 || f.Quality != 0) {
				t.Errorf("Latest() without fix returned %+v; want zero Fix", f)
			}
			if ok && (!near(f.Latitude, 51+57.1234/60, 1e-9) || f.Source != drivers.Hardware || !f.Received.Equal(t0)) {
				t.Errorf("Latest() = %+v; want Rotterdam, hardware, received %v", f, t0)
			}
			s := rx.Stats()
			if s.Sentences != tt.wantGood || s.Bad != tt.wantBad || s.TooLong != tt.wantLong {
				t.Errorf("Stats() = %+v; want sentences %d, bad %d, too long %d", s, tt.wantGood, tt.wantBad, tt.wantLong)
			}
			if !s.Connected || s.Opens != 1 || !s.LastSentence.Equal(t0) {
				t.Errorf("Stats() = %+v; want connected, 1 open, last sentence %v", s, t0)
			}
		})
	}
}

// TestReceiverReconnect unplugs the receiver, keeps it away for a few
// failed opens, then plugs in a new one and expects fixes to resume.
func TestReceiverReconnect(t *testing.T) {
	t.Parallel()
	p1 := newPTY(t)
	var (
		mu     sync.Mutex
		path   = p1.path
		sleeps []time.Duration
	)
	opened := make(chan string, 4)
	open := func(context.Context) (io.ReadCloser, error) {
		mu.Lock()
		pth := path
		mu.Unlock()
		rc, err := OpenSerial(pth, 4800)
		if err == nil {
			opened <- pth
		}
		return rc, err
	}
	sleep := func(ctx context.Context, d time.Duration) error {
		mu.Lock()
		sleeps = append(sleeps, d)
		mu.Unlock()
		return ctxtime.Sleep(ctx, time.Millisecond) // keep the test fast
	}
	var logs syncbuf.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	rx := New(Options{Open: open, Sleep: sleep, BackoffMin: 100 * time.Millisecond, BackoffMax: 400 * time.Millisecond}, log)
	startReceiver(t, rx)

	if got := <-opened; got != p1.path {
		t.Fatalf("opened %s; want %s", got, p1.path)
	}
	p1.send(t, sentence(rmcValid), sentence(ggaValid))
	waitFor(t, "first fix", func() bool { _, ok := rx.Latest(); return ok })

	// Unplug: the device node goes away. Point Open at a path that cannot
	// exist, so a pty made by a parallel test cannot be picked up.
	mu.Lock()
	path = filepath.Join(t.TempDir(), "ttyUSB0")
	mu.Unlock()
	p1.unplug()
	waitFor(t, "failed reopens", func() bool { return rx.Stats().OpenFailures >= 4 })
	if s := rx.Stats(); s.Connected || !strings.Contains(s.LastError, "ttyUSB0") {
		t.Errorf("Stats() while unplugged = %+v; want disconnected, error naming the port", s)
	}

	p2 := newPTY(t)
	mu.Lock()
	path = p2.path
	mu.Unlock()
	if got := <-opened; got != p2.path {
		t.Fatalf("reopened %s; want %s", got, p2.path)
	}
	moved := strings.NewReplacer("5157.1234,N", "5000.0000,N").Replace
	p2.send(t, sentence(moved(rmcValid)), sentence(moved(ggaValid)))
	waitFor(t, "fix from new port", func() bool { f, ok := rx.Latest(); return ok && f.Latitude == 50 })
	if s := rx.Stats(); s.Opens != 2 || !s.Connected {
		t.Errorf("Stats() after replug = %+v; want 2 opens, connected", s)
	}

	mu.Lock()
	got := append([]time.Duration(nil), sleeps...)
	mu.Unlock()
	want := []time.Duration{100, 200, 400, 400}
	for i := range want {
		want[i] *= time.Millisecond
		if i >= len(got) || got[i] != want[i] {
			t.Fatalf("backoff waits = %v; want prefix %v", got, want)
		}
	}
	for _, msg := range []string{"gps stream lost", "gps open failed"} {
		if !strings.Contains(logs.String(), msg) {
			t.Errorf("log lacks %q:\n%s", msg, logs.String())
		}
	}
}

func TestReceiverBackoffResets(t *testing.T) {
	t.Parallel()
	// Each open yields a stream that delivers one good sentence and then
	// ends; since data flowed, every wait is the minimum.
	var n atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var sleeps []time.Duration
	rx := New(Options{
		Open: func(context.Context) (io.ReadCloser, error) {
			n.Add(1)
			return io.NopCloser(strings.NewReader(sentence(rmcValid) + "\r\n")), nil
		},
		Sleep: func(ctx context.Context, d time.Duration) error {
			sleeps = append(sleeps, d)
			if len(sleeps) == 3 {
				cancel()
			}
			return ctx.Err()
		},
		BackoffMin: time.Second,
	}, nil)
	if err := rx.Run(ctx); err != nil {
		t.Fatalf("Run = %v; want nil", err)
	}
	for _, d := range sleeps {
		if d != time.Second {
			t.Errorf("waits = %v; want all 1s", sleeps)
			break
		}
	}
	if n.Load() != 3 || rx.Stats().Opens != 3 || rx.Stats().Sentences != 3 {
		t.Errorf("opens = %d, stats %+v; want 3 opens, 3 sentences", n.Load(), rx.Stats())
	}
}

func TestReceiverNoOpen(t *testing.T) {
	t.Parallel()
	if err := New(Options{}, nil).Run(context.Background()); !errors.Is(err, ErrNoOpen) {
		t.Errorf("Run without Open = %v; want ErrNoOpen", err)
	}
}

func TestOpenSerialMissing(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "ttyAMA9")
	if _, err := OpenSerial(path, 0); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("OpenSerial(%q) = %v; want error naming the port", path, err)
	}
}

func TestProbe(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		send   []string
		wantOK bool
	}{
		{"nmea", []string{"junk", sentence(ggaValid)}, true},
		{"unsupported type still proves NMEA", []string{sentence("GPGSV,1,1,01,07,79,048,42")}, true},
		{"silent", nil, false},
		{"garbage only", []string{"\x01\x02 hello", good2bad(sentence(rmcValid))}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := newPTY(t)
			rc, err := OpenSerial(p.path, 9600)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			if tt.send != nil {
				p.send(t, tt.send...)
			}
			line, err := Probe(context.Background(), rc, 200*time.Millisecond)
			if tt.wantOK != (err == nil) {
				t.Fatalf("Probe = %q, %v; want ok %v", line, err, tt.wantOK)
			}
			if err != nil && !errors.Is(err, ErrNoNMEA) {
				t.Errorf("Probe error %v; want ErrNoNMEA", err)
			}
			if err == nil && line != tt.send[len(tt.send)-1] {
				t.Errorf("Probe = %q; want %q", line, tt.send[len(tt.send)-1])
			}
		})
	}
}

func good2bad(s string) string { return s[:len(s)-2] + "00" }
