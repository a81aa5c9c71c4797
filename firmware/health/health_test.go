package health

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/reefer/tracker/internal/faketime"
	"github.com/reefer/tracker/internal/syncbuf"
)

// listen stands in for systemd: a unixgram socket in a temp dir, with
// NOTIFY_SOCKET pointing at it. t.Setenv rules out t.Parallel.
func listen(t *testing.T) *net.UnixConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return conn
}

// recv returns the next datagram systemd would have received.
func recv(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("reading notify socket: %v", err)
	}
	return string(buf[:n])
}

func TestNotifications(t *testing.T) {
	conn := listen(t)
	tests := []struct {
		name string
		call func() error
		want string
	}{
		{"Ready", Ready, "READY=1"},
		{"Status", func() error { return Status("connected to hub-x, 3 queued") }, "STATUS=connected to hub-x, 3 queued"},
		{"Status newline", func() error { return Status("a\nREADY=1") }, "STATUS=a READY=1"},
		{"Stopping", Stopping, "STOPPING=1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); err != nil {
				t.Fatalf("%s() = %v", tt.name, err)
			}
			if got := recv(t, conn); got != tt.want {
				t.Errorf("%s() sent %q; want %q", tt.name, got, tt.want)
			}
		})
	}
}

func TestNoOpOutsideSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	for name, f := range map[string]func() error{
		"Ready": Ready, "Stopping": Stopping, "Status": func() error { return Status("x") },
	} {
		if err := f(); err != nil {
			t.Errorf("%s() without NOTIFY_SOCKET = %v; want nil", name, err)
		}
	}
}

func TestNotifyErrorWhenSocketGone(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "missing"))
	if err := Ready(); err == nil || !strings.Contains(err.Error(), "READY") {
		t.Errorf("Ready() to a missing socket = %v; want an error naming READY", err)
	}
}

func TestWatchdogInterval(t *testing.T) {
	pid := strconv.Itoa(os.Getpid())
	tests := []struct {
		usec, pid string
		want      time.Duration
		wantErr   bool
	}{
		{"", "", 0, false},
		{"3000000", pid, 3 * time.Second, false},
		{"3000000", "", 3 * time.Second, false},
		{"3000000", "1", 0, false}, // meant for another process
		{"soon", pid, 0, true},
		{"-5", pid, 0, true},
	}
	for _, tt := range tests {
		t.Setenv("WATCHDOG_USEC", tt.usec)
		t.Setenv("WATCHDOG_PID", tt.pid)
		got, err := WatchdogInterval()
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("WatchdogInterval() with USEC=%q PID=%q = %v, %v; want %v, error %v",
				tt.usec, tt.pid, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestNewWatchdogFromEnvironment(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "4000000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	w, err := NewWatchdog(WatchdogOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := w.Interval(); got != 4*time.Second {
		t.Errorf("Interval() = %v; want 4s", got)
	}

	t.Setenv("WATCHDOG_USEC", "")
	w, err = NewWatchdog(WatchdogOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := w.Interval(); got != 0 {
		t.Errorf("Interval() without WATCHDOG_USEC = %v; want 0", got)
	}
	done := make(chan error)
	go func() { done <- w.Run(context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("disabled Run() = %v; want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("disabled Run() did not return")
	}

	t.Setenv("WATCHDOG_USEC", "x")
	if _, err := NewWatchdog(WatchdogOptions{}); err == nil {
		t.Error("NewWatchdog with WATCHDOG_USEC=x = nil error; want error")
	}
}

func TestHealthyWithinInterval(t *testing.T) {
	t.Parallel()
	clk := faketime.NewClock(time.Unix(1000, 0))
	w, err := NewWatchdog(WatchdogOptions{Interval: 10 * time.Second, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		sinceBeat time.Duration
		want      bool
	}{
		{0, true},
		{5 * time.Second, true},
		{10*time.Second - 1, true},
		{10 * time.Second, false},
		{time.Hour, false},
	}
	for _, tt := range tests {
		w.Beat()
		clk.Advance(tt.sinceBeat)
		if got := w.Healthy(); got != tt.want {
			t.Errorf("Healthy() %v after Beat = %v; want %v", tt.sinceBeat, got, tt.want)
		}
	}
}

func TestWatchdogPingsOnlyWhileHealthy(t *testing.T) {
	conn := listen(t)
	clk := faketime.NewClock(time.Unix(1000, 0))
	tick := make(chan time.Time) // unbuffered: a send returns once Run took it
	var period time.Duration
	stopped := make(chan struct{})
	var logs syncbuf.Buffer
	w, err := NewWatchdog(WatchdogOptions{
		Interval: 10 * time.Second,
		Now:      clk.Now,
		NewTicker: func(d time.Duration) (<-chan time.Time, func()) {
			period = d
			return tick, func() { close(stopped) }
		},
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- w.Run(ctx) }()

	tick <- clk.Now()
	if got := recv(t, conn); got != "WATCHDOG=1" {
		t.Fatalf("first tick sent %q; want WATCHDOG=1 (start counts as a beat)", got)
	}
	if period != 5*time.Second {
		t.Errorf("ticker period = %v; want half the interval, 5s", period)
	}

	clk.Advance(4 * time.Second)
	w.Beat()
	clk.Advance(9 * time.Second) // 9 s since the last beat: still healthy
	tick <- clk.Now()
	if got := recv(t, conn); got != "WATCHDOG=1" {
		t.Fatalf("tick 9s after Beat sent %q; want WATCHDOG=1", got)
	}

	// The loop stalls: no Beat for a whole interval.
	clk.Advance(2 * time.Second)
	tick <- clk.Now()
	tick <- clk.Now() // returns only after the first stalled tick was handled
	if w.Healthy() {
		t.Error("Healthy() = true 11s after the last Beat; want false")
	}
	if err := Status("marker"); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, conn); got != "STATUS=marker" {
		t.Fatalf("stalled loop: systemd received %q; want no WATCHDOG=1 before STATUS=marker", got)
	}

	// The loop recovers.
	w.Beat()
	tick <- clk.Now()
	if got := recv(t, conn); got != "WATCHDOG=1" {
		t.Fatalf("after recovery sent %q; want WATCHDOG=1", got)
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run() = %v after cancel; want nil", err)
	}
	select {
	case <-stopped:
	default:
		t.Error("Run() returned without stopping its ticker")
	}
	if n := strings.Count(logs.String(), "stalled"); n != 1 {
		t.Errorf("log mentions the stall %d times; want once per stall:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "recovered") {
		t.Errorf("log lacks the recovery:\n%s", logs.String())
	}
}
