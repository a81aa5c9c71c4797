package health

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

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

// drain returns the datagrams systemd has received and not yet read, without
// waiting: every notification is written before its call returns.
func drain(t *testing.T, conn *net.UnixConn) []string {
	t.Helper()
	raw, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	buf := make([]byte, 4096)
	var rerr error
	for {
		var n int
		if err := raw.Read(func(fd uintptr) bool {
			n, _, rerr = syscall.Recvfrom(int(fd), buf, syscall.MSG_DONTWAIT)
			return true
		}); err != nil {
			t.Fatal(err)
		}
		if rerr == syscall.EAGAIN {
			return got
		}
		if rerr != nil {
			t.Fatalf("reading notify socket: %v", rerr)
		}
		got = append(got, string(buf[:n]))
	}
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
			if got := drain(t, conn); !slices.Equal(got, []string{tt.want}) {
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
	synctest.Test(t, func(t *testing.T) {
		w, err := NewWatchdog(WatchdogOptions{Interval: 10 * time.Second})
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
			time.Sleep(tt.sinceBeat)
			if got := w.Healthy(); got != tt.want {
				t.Errorf("Healthy() %v after Beat = %v; want %v", tt.sinceBeat, got, tt.want)
			}
		}
	})
}

// TestWatchdogPingsOnlyWhileHealthy runs the watchdog in a synctest bubble:
// time.Sleep moves the fake clock that drives its ticker, and synctest.Wait
// returns once Run has handled every tick due, so what systemd received by
// then is all it will receive.
func TestWatchdogPingsOnlyWhileHealthy(t *testing.T) {
	conn := listen(t)
	synctest.Test(t, func(t *testing.T) {
		var logs syncbuf.Buffer
		w, err := NewWatchdog(WatchdogOptions{
			Interval: 10 * time.Second,
			Logger:   slog.New(slog.NewTextHandler(&logs, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel() // ends Run on a failure, so the bubble can end
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		// advance moves the clock by d and returns what systemd got meanwhile.
		advance := func(d time.Duration) []string {
			time.Sleep(d)
			synctest.Wait()
			return drain(t, conn)
		}

		// The ticker runs at half the interval, 5 s.
		if got := advance(5*time.Second - time.Millisecond); len(got) != 0 {
			t.Fatalf("before the first tick (half the interval) systemd got %q; want nothing", got)
		}
		if got := advance(time.Millisecond); !slices.Equal(got, []string{"WATCHDOG=1"}) {
			t.Fatalf("first tick sent %q; want WATCHDOG=1 (start counts as a beat)", got)
		}

		advance(time.Second)
		w.Beat()                        // at 6 s
		got := advance(9 * time.Second) // ticks at 10 s and 15 s, 9 s after the beat: healthy
		if want := []string{"WATCHDOG=1", "WATCHDOG=1"}; !slices.Equal(got, want) {
			t.Fatalf("ticks 4s and 9s after Beat sent %q; want %q", got, want)
		}

		// The loop stalls: no Beat for a whole interval (ticks at 20 s and 25 s).
		if got := advance(10 * time.Second); len(got) != 0 {
			t.Fatalf("stalled loop: systemd received %q; want no WATCHDOG=1", got)
		}
		if w.Healthy() {
			t.Error("Healthy() = true 19s after the last Beat; want false")
		}

		// The loop recovers.
		w.Beat()
		if got := advance(5 * time.Second); !slices.Equal(got, []string{"WATCHDOG=1"}) {
			t.Fatalf("after recovery sent %q; want WATCHDOG=1", got)
		}

		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v after cancel; want nil", err)
		}
		w.Beat()
		if got := advance(time.Minute); len(got) != 0 {
			t.Errorf("after Run returned systemd got %q; want its ticker stopped", got)
		}
		if n := strings.Count(logs.String(), "stalled"); n != 1 {
			t.Errorf("log mentions the stall %d times; want once per stall:\n%s", n, logs.String())
		}
		if !strings.Contains(logs.String(), "recovered") {
			t.Errorf("log lacks the recovery:\n%s", logs.String())
		}
	})
}
