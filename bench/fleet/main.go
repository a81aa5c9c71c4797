// Command fleet provisions thousands of trackers at once against the
// in-process emulator with the real device client (dps.Register over TLS
// and MQTT, then optionally iothub and one telemetry message) and reports
// how the fleet got through the DPS registration rate limit: time to
// assigned (p50/p90/p99/max), connection attempts, 429s, failures, and
// peak goroutines, heap, file descriptors and emulator connections.
//
//	go run ./bench/fleet -devices 1000
//	go run ./bench/fleet -devices 1000 -compare   # full jitter, then none
//	go run ./bench/fleet -portcall 500            # 500 containers out, 500 in
//
// -portcall N instead runs a port call: 2N simulated trackers, fleetctl's
// bulk disenroll of N and bulk re-enroll of N at once, and how long until
// every re-enrolled tracker sends again and every disenrolled one is
// refused (portcall.go).
//
// The same run is a benchmark: go test -run '^$' -bench . ./bench/fleet.
// See bench/README.md for the scaling and typical numbers.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/reefer/tracker/internal/fdlimit"
)

func main() {
	if os.Getenv(childEnv) == "1" {
		if err := emulatorChild(os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "fleet emulator:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "fleet:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleet", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o Options
	devices := fs.Int("devices", 1000, "trackers that register at once")
	fs.IntVar(&o.RegistrationsPerMinute, "rate", 0, "emulator DPS registrations per minute (default devices/2; with -portcall 1000 × 5 min / retry-min)")
	fs.DurationVar(&o.PollRetryAfter, "poll-retry-after", 0, "retry-after the emulator sends with 202 (whole seconds)")
	fs.BoolVar(&o.NoJitter, "no-jitter", false, "replace the back-off jitter with the constant -rand")
	fs.Float64Var(&o.ConstRand, "rand", 0.5, "jitter sample every device uses with -no-jitter, in [0,1)")
	compare := fs.Bool("compare", false, "run twice: full jitter, then -no-jitter")
	fs.DurationVar(&o.BackoffBase, "backoff-base", 0, "dps BackoffBase (default the client's 2s)")
	fs.DurationVar(&o.BackoffMax, "backoff-max", 0, "dps BackoffMax (default the client's 2m)")
	fs.IntVar(&o.MaxAttempts, "max-attempts", 0, "dps MaxAttempts (default the client's 6)")
	fs.DurationVar(&o.MaxWait, "max-wait", 0, "dps MaxWait (default the client's 5m)")
	fs.DurationVar(&o.Outage, "outage", 0, "keep DPS down this long after the devices start (connections refused)")
	fs.BoolVar(&o.Telemetry, "telemetry", true, "after assignment connect to the hub, send one message, stay connected")
	fs.DurationVar(&o.Ramp, "ramp", 0, "start the devices evenly over this long instead of at once")
	fs.BoolVar(&o.Separate, "separate", false, "run the emulator in its own process (its RSS and fds are then its own; about one fd per device each)")
	fs.StringVar(&o.EmulatorCPUProfile, "emulator-cpuprofile", "", "with -separate: write the emulator's CPU profile to this file")
	fs.StringVar(&o.EmulatorMemProfile, "emulator-memprofile", "", "with -separate: write the emulator's heap profile at the end to this file")
	fs.StringVar(&o.EmulatorPprof, "emulator-pprof", "", "with -separate: serve net/http/pprof of the emulator process on this address (e.g. 127.0.0.1:6061)")
	fs.Var(&o.EmulatorMemoryLimit, "emulator-memory-limit", "with -separate: the emulator process's soft memory limit, as azemu --memory-limit (e.g. 900MiB; 0: none)")
	asJSON := fs.Bool("json", false, "print the report(s) as JSON")
	var pc PortCallOptions
	fs.IntVar(&pc.Containers, "portcall", 0, "instead: a port call of N containers out and N in (2N trackers), bulk disenroll and re-enroll at once")
	fs.DurationVar(&pc.RetryMin, "retry-min", 0, "port call: the trackers' reprovisionRetry min (default 5s)")
	fs.DurationVar(&pc.RetryMax, "retry-max", 0, "port call: the trackers' reprovisionRetry max (default 30s)")
	fs.DurationVar(&pc.Interval, "interval", 0, "port call: telemetry interval of a connected tracker (default 5s)")
	fs.StringVar(&pc.TempDir, "tmp", "", "port call: directory for the emulator's and trackers' state (default /dev/shm if present)")
	verbose := fs.Bool("v", false, "emulator log on stderr")
	timeout := fs.Duration("timeout", 15*time.Minute, "give up on the whole run after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *devices < 1 {
		return fmt.Errorf("-devices %d: want at least 1", *devices)
	}
	if o.ConstRand < 0 || o.ConstRand >= 1 {
		return fmt.Errorf("-rand %v: want a value in [0,1)", o.ConstRand)
	}
	if *verbose {
		o.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	o.Progress = stderr
	fdlimit.Raise(slog.New(slog.NewTextHandler(stderr, nil))) // two sockets per device in one process
	if lim, need := fdLimit(), FDsNeeded(*devices, o.Telemetry, o.Separate); lim != 0 && lim < need {
		return fmt.Errorf("%d devices need about %d file descriptors, limit is %d: raise ulimit -Hn, use -telemetry=false or fewer -devices", *devices, need, lim)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	if pc.Containers > 0 {
		return runPortCall(ctx, pc, o.RegistrationsPerMinute, *asJSON, stdout, stderr, o.Logger)
	}
	fmt.Fprintf(stderr, "issuing %d ECDSA P-256 device certificates...\n", *devices)
	f, err := NewFleet(*devices)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "issued in %s\n", f.Took.Round(time.Millisecond))
	runs := []Options{o}
	if *compare {
		nj := o
		nj.NoJitter = true
		o.NoJitter = false
		runs = []Options{o, nj}
	}
	var reports []*Report
	for _, ro := range runs {
		fmt.Fprintf(stderr, "registering %d devices at once (jitter=%v)...\n", *devices, !ro.NoJitter)
		r, err := Run(ctx, f, ro)
		if err != nil {
			return err
		}
		reports = append(reports, r)
		if !*asJSON {
			printReport(stdout, r, f.Took)
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(reports)
	}
	return nil
}

// loadAverage is the first three fields of /proc/loadavg ("?" elsewhere):
// how busy the machine was, which the figures depend on.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func runPortCall(ctx context.Context, o PortCallOptions, rate int, asJSON bool, stdout, stderr io.Writer, log *slog.Logger) error {
	o.RegistrationsPerMinute, o.Progress, o.Logger = rate, stderr, log
	fmt.Fprintf(stderr, "issuing %d ECDSA P-256 device certificates...\n", 2*o.Containers)
	f, err := NewFleet(2 * o.Containers)
	if err != nil {
		return err
	}
	r, err := PortCall(ctx, f, o)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	printPortCall(stdout, r)
	return nil
}

func printReport(w io.Writer, r *Report, certs time.Duration) {
	ms := func(d time.Duration) string { return d.Round(10 * time.Millisecond).String() }
	jit := "full jitter"
	if !r.Jitter {
		jit = "no jitter"
	}
	fmt.Fprintf(w, "fleet: %d devices, DPS limit %d registrations/min, %s", r.Devices, r.RatePerMinute, jit)
	if r.Outage > 0 {
		fmt.Fprintf(w, ", DPS down for the first %s", r.Outage)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  assigned %d, failed %d", r.Assigned, r.Failed)
	for k, v := range r.Failures {
		fmt.Fprintf(w, ", %s %d", k, v)
	}
	if r.Ramp > 0 {
		fmt.Fprintf(w, ", starts spread over %s", r.Ramp)
	}
	fmt.Fprintf(w, "\n  wall %s; time to assigned p50 %s p90 %s p99 %s max %s\n", ms(r.Wall), ms(r.P50), ms(r.P90), ms(r.P99), ms(r.Max))
	fmt.Fprintf(w, "  registration latency (own start to assigned) p50 %s p99 %s\n", ms(r.LatencyP50), ms(r.LatencyP99))
	fmt.Fprintf(w, "  DPS connections %d (max %d per device), responses 202:%d 200:%d 429:%d",
		r.Attempts, r.MaxDeviceAttempts, r.Responses[202], r.Responses[200], r.Responses[429])
	for st, c := range r.Responses {
		if st != 200 && st != 202 && st != 429 {
			fmt.Fprintf(w, " %d:%d", st, c)
		}
	}
	fmt.Fprintf(w, "\n  peak DPS connects in one second %d; connects per second: %s\n", r.PeakConnectsPerSec, sparse(r.ConnectsPerSec))
	fmt.Fprintf(w, "  telemetry recorded %d, failed %d\n", r.Telemetry, r.TelemetryFailed)
	mib := func(b uint64) float64 { return float64(b) / (1 << 20) }
	fmt.Fprintf(w, "  peak goroutines %d, heap %.1f MiB, RSS %.0f MiB, fds %d (limit %d), emulator connections %d\n",
		r.Peaks.Goroutines, mib(r.Peaks.HeapBytes), mib(r.Peaks.RSS), r.Peaks.FDs, r.FDLimit, r.Peaks.EmulatorConns)
	if r.Peaks.EmulatorRSS > 0 {
		limit := "none"
		if r.EmulatorMemoryLimit != 0 {
			limit = r.EmulatorMemoryLimit.String()
		}
		fmt.Fprintf(w, "  emulator process: peak RSS %.0f MiB (soft memory limit %s), fds %d, CPU %s\n", mib(r.Peaks.EmulatorRSS), limit, r.Peaks.EmulatorFDs, ms(r.EmulatorCPU))
	}
	fmt.Fprintf(w, "  CPU of this process %s (load average at the end %s)\n", ms(r.CPU), loadAverage())
	fmt.Fprintf(w, "  certificates issued in %s\n", ms(certs))
	if r.FirstError != "" {
		fmt.Fprintf(w, "  first error: %s\n", r.FirstError)
	}
}

// sparse prints the non-zero seconds as "t=count".
func sparse(b []int) string {
	var parts []string
	for s, c := range b {
		if c > 0 {
			parts = append(parts, fmt.Sprintf("%ds=%d", s, c))
		}
	}
	return strings.Join(parts, " ")
}
