package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reefer/tracker/internal/syncbuf"
	"github.com/reefer/tracker/internal/waitfor"
)

// instant is a DPS Sleep that returns at once, so the small tests run at
// protocol speed (the client's 2 s poll floor and back-offs are skipped).
func instant(ctx context.Context, _ time.Duration) error { return ctx.Err() }

func testFleet(t testing.TB, n int) *Fleet {
	t.Helper()
	f, err := NewFleet(n)
	if err != nil {
		t.Fatalf("NewFleet(%d): %v", n, err)
	}
	return f
}

func TestRunAllAssigned(t *testing.T) {
	t.Parallel()
	const n = 8
	r, err := Run(t.Context(), testFleet(t, n), Options{RegistrationsPerMinute: 1000, Telemetry: true, Sleep: instant})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if r.Assigned != n || r.Failed != 0 {
		t.Fatalf("assigned %d, failed %d (%s); want %d, 0", r.Assigned, r.Failed, r.FirstError, n)
	}
	checks := []struct {
		name      string
		got, want int
	}{
		{"attempts", r.Attempts, n},
		{"max attempts per device", r.MaxDeviceAttempts, 1},
		{"202 responses", r.Responses[202], n},
		{"200 responses", r.Responses[200], n},
		{"429 responses", r.Throttled, 0},
		{"telemetry recorded", r.Telemetry, n},
		{"telemetry failed", r.TelemetryFailed, 0},
		{"connects per second total", sum(r.ConnectsPerSec), n},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %d; want %d", c.name, c.got, c.want)
		}
	}
	if !(0 < r.P50 && r.P50 <= r.P90 && r.P90 <= r.P99 && r.P99 <= r.Max && r.Max <= r.Wall) {
		t.Errorf("p50 %s p90 %s p99 %s max %s wall %s; want 0 < p50 <= p90 <= p99 <= max <= wall", r.P50, r.P90, r.P99, r.Max, r.Wall)
	}
	if r.Peaks.Goroutines < n {
		t.Errorf("peak goroutines %d; want at least one per device (%d)", r.Peaks.Goroutines, n)
	}
	if _, err := os.Stat("/proc/net/tcp"); err == nil && r.Peaks.EmulatorConns < 1 {
		t.Errorf("peak emulator connections %d; want at least 1", r.Peaks.EmulatorConns)
	}
}

// Half the fleet over the limit, two attempts each: the throttled half
// sees two 429s and fails with ErrThrottled.
func TestRunThrottled(t *testing.T) {
	t.Parallel()
	const n, rate = 8, 4
	r, err := Run(t.Context(), testFleet(t, n), Options{RegistrationsPerMinute: rate, MaxAttempts: 2, Sleep: instant})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	checks := []struct {
		name      string
		got, want int
	}{
		{"assigned", r.Assigned, rate},
		{"failed", r.Failed, n - rate},
		{"failed throttled", r.Failures["throttled"], n - rate},
		{"429 responses", r.Throttled, 2 * (n - rate)},
		{"attempts", r.Attempts, rate + 2*(n-rate)},
		{"max attempts per device", r.MaxDeviceAttempts, 2},
		{"telemetry (off)", r.Telemetry, 0},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %d; want %d (first error: %s)", c.name, c.got, c.want, r.FirstError)
		}
	}
}

func sum(b []int) int {
	s := 0
	for _, v := range b {
		s += v
	}
	return s
}

func TestPercentile(t *testing.T) {
	t.Parallel()
	ms := func(v ...int) []time.Duration {
		var d []time.Duration
		for _, x := range v {
			d = append(d, time.Duration(x)*time.Millisecond)
		}
		return d
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	tests := []struct {
		sorted []time.Duration
		p      int
		want   time.Duration
	}{
		{nil, 50, 0},
		{ms(7), 99, 7 * time.Millisecond},
		{ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{ms(1, 2, 3, 4), 90, 4 * time.Millisecond},
		{ms(hundred...), 50, 50 * time.Millisecond},
		{ms(hundred...), 99, 99 * time.Millisecond},
		{ms(hundred...), 100, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := percentile(tt.sorted, tt.p); got != tt.want {
			t.Errorf("percentile(%d values, %d) = %s; want %s", len(tt.sorted), tt.p, got, tt.want)
		}
	}
}

func TestResponseStatus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		topic string
		want  int
	}{
		{"$dps/registrations/res/202/?$rid=1&retry-after=3", 202},
		{"$dps/registrations/res/429/?$rid=1&retry-after=58", 429},
		{"$dps/registrations/res/200/?$rid=2", 200},
		{"$dps/registrations/res/x/?$rid=2", 0},
		{"devices/d/messages/devicebound/", 0},
	}
	for _, tt := range tests {
		if got := responseStatus(tt.topic); got != tt.want {
			t.Errorf("responseStatus(%q) = %d; want %d", tt.topic, got, tt.want)
		}
	}
}

func TestCountEstablished(t *testing.T) {
	t.Parallel()
	// Two server ends on 8883 (0x22B3), one client end to it, one
	// listening socket, one TIME_WAIT.
	proc := strings.Join([]string{
		"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
		"   0: 0100007F:22B3 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1",
		"   1: 0100007F:22B3 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 2",
		"   2: 0100007F:22B3 0100007F:C351 01 00000000:00000000 00:00000000 00000000     0        0 3",
		"   3: 0100007F:C350 0100007F:22B3 01 00000000:00000000 00:00000000 00000000     0        0 4",
		"   4: 0100007F:22B3 0100007F:C352 06 00000000:00000000 00:00000000 00000000     0        0 5",
	}, "\n")
	tests := []struct {
		ports map[uint16]bool
		want  int
	}{
		{map[uint16]bool{8883: true}, 2},
		{map[uint16]bool{50000: true}, 1},
		{map[uint16]bool{8883: true, 50000: true}, 3},
		{map[uint16]bool{443: true}, 0},
	}
	for _, tt := range tests {
		if got := countEstablished([]byte(proc), tt.ports); got != tt.want {
			t.Errorf("countEstablished(ports %v) = %d; want %d", tt.ports, got, tt.want)
		}
	}
}

func TestPerSecond(t *testing.T) {
	t.Parallel()
	got := perSecond([]time.Duration{0, 999 * time.Millisecond, 2500 * time.Millisecond})
	if fmt.Sprint(got) != "[2 0 1]" {
		t.Errorf("perSecond = %v; want [2 0 1]", got)
	}
}

func TestFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-devices", "0"}, "want at least 1"},
		{[]string{"-rand", "1"}, "want a value in [0,1)"},
		{[]string{"-devices", "100000000"}, "file descriptors"},
		{[]string{"-bogus"}, "flag provided but not defined"},
	}
	for _, tt := range tests {
		var out, errb bytes.Buffer
		err := run(tt.args, &out, &errb)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("run(%q) = %v; want an error containing %q", tt.args, err, tt.want)
		}
	}
}

func TestCommandReport(t *testing.T) {
	t.Parallel()
	var out, errb bytes.Buffer
	if err := run([]string{"-devices", "3", "-rate", "1000", "-compare"}, &out, &errb); err != nil {
		t.Fatalf("run: %v\n%s", err, errb.String())
	}
	for _, want := range []string{
		"fleet: 3 devices, DPS limit 1000 registrations/min, full jitter",
		"fleet: 3 devices, DPS limit 1000 registrations/min, no jitter",
		"assigned 3, failed 0", "429:0", "telemetry recorded 3, failed 0",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	if !strings.Contains(errb.String(), "open-file limit") {
		t.Errorf("stderr does not name the open-file limit:\n%s", errb.String())
	}
}

// Benchmark fleet: FLEET_BENCH_DEVICES (default 1000) trackers register
// at once against a limit of half that per minute, with full jitter and
// with none. One iteration is one whole fleet run (about a minute);
// certificates are issued once and reused.
//
//	go test -run '^$' -bench Fleet -benchtime 1x -timeout 30m ./bench/fleet
func BenchmarkFleet(b *testing.B) {
	n := 1000
	if v := os.Getenv("FLEET_BENCH_DEVICES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			b.Fatalf("FLEET_BENCH_DEVICES=%q: want a positive integer", v)
		}
	}
	f := benchFleet(b, n)
	b.Logf("%d device certificates issued in %s", n, f.Took)
	for _, tc := range []struct {
		name     string
		noJitter bool
	}{{"jitter", false}, {"nojitter", true}} {
		b.Run(fmt.Sprintf("devices=%d/%s", n, tc.name), func(b *testing.B) {
			var sum Report
			for b.Loop() {
				r, err := Run(b.Context(), f, Options{Telemetry: true, NoJitter: tc.noJitter, ConstRand: 0.5})
				if err != nil {
					b.Fatal(err)
				}
				if r.Failed > 0 || r.Telemetry != n {
					b.Errorf("failed %d (%v), telemetry %d of %d; first error: %s", r.Failed, r.Failures, r.Telemetry, n, r.FirstError)
				}
				sum.Wall += r.Wall
				sum.P50 += r.P50
				sum.P99 += r.P99
				sum.Max += r.Max
				sum.Attempts += r.Attempts
				sum.Throttled += r.Throttled
				sum.PeakConnectsPerSec += r.PeakConnectsPerSec
				sum.Peaks.Goroutines = max(sum.Peaks.Goroutines, r.Peaks.Goroutines)
				sum.Peaks.HeapBytes = max(sum.Peaks.HeapBytes, r.Peaks.HeapBytes)
				sum.Peaks.EmulatorConns = max(sum.Peaks.EmulatorConns, r.Peaks.EmulatorConns)
				sum.Peaks.FDs = max(sum.Peaks.FDs, r.Peaks.FDs)
			}
			it := float64(b.N)
			b.ReportMetric(sum.Wall.Seconds()/it, "wall-s")
			b.ReportMetric(sum.P50.Seconds()/it, "p50-s")
			b.ReportMetric(sum.P99.Seconds()/it, "p99-s")
			b.ReportMetric(sum.Max.Seconds()/it, "max-s")
			b.ReportMetric(float64(sum.Attempts)/it, "attempts")
			b.ReportMetric(float64(sum.Throttled)/it, "429s")
			b.ReportMetric(float64(sum.PeakConnectsPerSec)/it, "peak-connects/s")
			b.ReportMetric(float64(sum.Peaks.Goroutines), "peak-goroutines")
			b.ReportMetric(float64(sum.Peaks.HeapBytes)/(1<<20), "peak-heap-MiB")
			b.ReportMetric(float64(sum.Peaks.FDs), "peak-fds")
			b.ReportMetric(float64(sum.Peaks.EmulatorConns), "peak-emu-conns")
			b.ReportMetric(0, "ns/op") // one op is a whole fleet; wall-s says it
		})
	}
}

var (
	fleetMu    sync.Mutex
	fleetCache = map[int]*Fleet{}
)

// benchFleet issues n certificates once per test binary.
func benchFleet(b *testing.B, n int) *Fleet {
	fleetMu.Lock()
	defer fleetMu.Unlock()
	if f := fleetCache[n]; f != nil {
		return f
	}
	f := testFleet(b, n)
	fleetCache[n] = f
	return f
}

// DPS down at the start: devices are refused, back off (short real
// waits here) and all end assigned once the emulator is back on the same
// ports with the same enrollment.
func TestRunOutage(t *testing.T) {
	t.Parallel()
	const n = 4
	short := func(ctx context.Context, d time.Duration) error {
		tm := time.NewTimer(min(d, 50*time.Millisecond))
		defer tm.Stop()
		select {
		case <-tm.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r, err := Run(t.Context(), testFleet(t, n), Options{RegistrationsPerMinute: 1000, Outage: 300 * time.Millisecond,
		MaxAttempts: 100, Telemetry: true, Sleep: short})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if r.Assigned != n || r.Telemetry != n {
		t.Fatalf("assigned %d, telemetry %d (%s); want %d, %d", r.Assigned, r.Telemetry, r.FirstError, n, n)
	}
	// Every device was refused at least once before the restart.
	if r.Attempts < 2*n || r.MaxDeviceAttempts < 2 {
		t.Errorf("attempts %d (max %d per device); want at least %d (max >= 2)", r.Attempts, r.MaxDeviceAttempts, 2*n)
	}
	if r.Responses[202] != n || r.Throttled != 0 {
		t.Errorf("responses %v; want %d×202 and no 429", r.Responses, n)
	}
	if r.Max < 300*time.Millisecond {
		t.Errorf("max time to assigned %s; want at least the 300ms outage", r.Max)
	}
}

func TestProgressLines(t *testing.T) {
	t.Parallel()
	st := &runStats{start: time.Now(), responses: map[int]int{}, connects: make([]time.Duration, 7)}
	st.assigned.Store(5)
	st.connected.Store(3)
	st.failed.Store(1)
	var buf syncbuf.Buffer
	stop, done := make(chan struct{}), make(chan struct{})
	go func() { st.progress(&buf, 10*time.Millisecond, stop); close(done) }()
	waitfor.Until(t, "a progress line", 5*time.Second, 10*time.Millisecond, func() bool { return strings.Contains(buf.String(), "\n") })
	close(stop)
	<-done
	for _, want := range []string{"DPS connects 7", "assigned 5 (", "hub-connected 3 (", "failed 1"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("progress %q lacks %q", buf.String(), want)
		}
	}
}

// TestMain lets the test binary be the emulator process of a -separate
// run, as the command is.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		if err := emulatorChild(os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "fleet emulator:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestRunSeparateProcess(t *testing.T) {
	t.Parallel()
	const n = 4
	// The memory limit reaches the emulator process as its flag (a flag
	// it did not take would stop it before "ready").
	r, err := Run(t.Context(), testFleet(t, n), Options{RegistrationsPerMinute: 1000, Telemetry: true, Sleep: instant, Separate: true,
		EmulatorMemoryLimit: 256 << 20})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if r.Assigned != n || r.Telemetry != n || r.Responses[200] != n {
		t.Fatalf("assigned %d, telemetry %d, 200s %d (%s); want %d each", r.Assigned, r.Telemetry, r.Responses[200], r.FirstError, n)
	}
	if _, err := os.Stat("/proc/self/status"); err == nil && (r.Peaks.EmulatorRSS == 0 || r.Peaks.EmulatorFDs < 1 || r.Peaks.EmulatorConns < 1) {
		t.Errorf("emulator process peaks = %+v; want its RSS, fds and connections", r.Peaks)
	}
	if r.EmulatorCPU <= 0 || r.CPU <= 0 {
		t.Errorf("CPU %s, emulator CPU %s; want both measured", r.CPU, r.EmulatorCPU)
	}
	if _, err := Run(t.Context(), testFleet(t, 1), Options{Separate: true, Outage: time.Second}); err == nil {
		t.Error("Run with Separate and Outage succeeded; want an error")
	}
}

// With a ramp the last device starts about Ramp after the first, and
// latency counts from each device's own start.
func TestRunRamp(t *testing.T) {
	t.Parallel()
	const n, ramp = 5, 400 * time.Millisecond
	r, err := Run(t.Context(), testFleet(t, n), Options{RegistrationsPerMinute: 1000, Sleep: instant, Ramp: ramp})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if r.Assigned != n {
		t.Fatalf("assigned %d (%s); want %d", r.Assigned, r.FirstError, n)
	}
	if last := ramp * (n - 1) / n; r.Max < last || r.LatencyP99 >= r.Max || r.LatencyP50 <= 0 {
		t.Errorf("max %s, latency p50 %s p99 %s; want max >= %s and latency below it", r.Max, r.LatencyP50, r.LatencyP99, last)
	}
}
