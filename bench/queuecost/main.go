// Command queuecost measures what one reading costs the real tracker
// binary, and how fast it drains a backlog, against the in-process
// emulator (DPS + IoT Hub over TLS/MQTT on 127.0.0.1).
//
//	go run ./bench/queuecost                     # 60 s steady window, 20,000-reading drain
//	go run ./bench/queuecost -window 300s -drain 20000
//
// Steady state: the tracker sends one simulated reading a second (the
// enrollment's initial twin sets telemetryDelay 1). Over the window it
// reads /proc/PID: CPU (utime+stime), context switches (voluntary and
// involuntary, summed over every thread), bytes written to the block layer
// (io write_bytes) and write syscalls; then, in a second window of the
// same length, it counts fdatasync/fsync/pwrite64 with strace -f -c
// (strace's ptrace stops inflate CPU and context switches, hence two
// windows). Each figure is divided by the readings the emulator received
// in its window.
//
// Drain: the tracker is stopped (SIGTERM), -drain readings are written
// into its queue (the firmware/queue package, as the tracker would have
// written them during an outage), and it is started again. The drain rate
// is the queued readings divided by the time from the first to the last
// one reaching the emulator; the tracker's CPU and log lines over the
// drain are reported too.
//
// See bench/README.md for figures and what they imply for an SD card.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/reefer/tracker/deploy/emulator"
	"github.com/reefer/tracker/deploy/emulator/pki"
	"github.com/reefer/tracker/deploy/emulator/store"
)

const deviceID = "sensor-thl-001"

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "queuecost:", err)
		os.Exit(1)
	}
}

type options struct {
	bin      string
	window   time.Duration
	drain    int
	noStrace bool
	keep     bool
	verbose  bool
	env      envFlag // extra KEY=VALUE for the tracker's environment
}

// envFlag collects repeated -env KEY=VALUE flags.
type envFlag []string

func (e *envFlag) String() string { return strings.Join(*e, " ") }

func (e *envFlag) Set(v string) error {
	if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
		return fmt.Errorf("%q: want KEY=VALUE", v)
	}
	*e = append(*e, v)
	return nil
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("queuecost", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.bin, "bin", "", "tracker binary (default: go build ./firmware/cmd/tracker into a temp dir)")
	fs.DurationVar(&o.window, "window", 60*time.Second, "length of each steady-state window")
	fs.IntVar(&o.drain, "drain", 20000, "readings queued for the drain run (0 skips it)")
	fs.BoolVar(&o.noStrace, "no-strace", false, "skip the strace window (fdatasync counts)")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory")
	fs.BoolVar(&o.verbose, "v", false, "tracker log on stderr")
	fs.Var(&o.env, "env", "`KEY=VALUE` added to the tracker's environment (repeatable), e.g. -env GOMAXPROCS=2")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.window < 5*time.Second {
		return fmt.Errorf("-window %v: want at least 5s", o.window)
	}
	dir, err := os.MkdirTemp("", "queuecost")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Fprintln(stderr, "work directory:", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	if o.bin == "" {
		o.bin = filepath.Join(dir, "tracker")
		fmt.Fprintln(stderr, "building the tracker...")
		if out, err := exec.Command("go", "build", "-trimpath", "-o", o.bin, "./firmware/cmd/tracker").CombinedOutput(); err != nil {
			return fmt.Errorf("go build (run from the repository root): %v\n%s", err, out)
		}
	}
	r, err := newRig(dir, o)
	if err != nil {
		return err
	}
	defer r.close()
	return r.measure(stdout, stderr)
}

// rig is the emulator, the device's files and the tracker process.
type rig struct {
	o        options
	dir      string
	e        *emulator.Emulator
	hub      string
	cfg      string
	state    string
	tr       *exec.Cmd
	exited   chan error
	logLines atomic.Int64
	// readingSize is one reading's body and properties as the hub got it.
	readingSize int
}

func newRig(dir string, o options) (*rig, error) {
	e, err := emulator.New(emulator.Config{
		DataDir: filepath.Join(dir, "emulator"), MQTTAddr: "127.0.0.1:0", HTTPSAddr: "-",
		RetryAfter: -1, NoSync: true, Logger: slog.New(slog.DiscardHandler),
		TelemetryHistory: 1 << 20, TelemetryHistoryBytes: 1 << 30,
	})
	if err != nil {
		return nil, fmt.Errorf("emulator: %w", err)
	}
	if err := e.Start(context.Background()); err != nil {
		e.Close()
		return nil, fmt.Errorf("emulator: %w", err)
	}
	r := &rig{o: o, dir: dir, e: e, hub: e.HubHost(0), state: filepath.Join(dir, "state")}
	if err := r.device(); err != nil {
		e.Close()
		return nil, err
	}
	return r, nil
}

// device makes the PKI, the group enrollment (initial twin
// telemetryDelay 1) and the tracker's config.
func (r *rig) device() error {
	root, err := pki.NewRootCA("Queuecost Root", pki.Options{})
	if err != nil {
		return err
	}
	inter, err := root.NewIntermediateCA("Queuecost Intermediate", pki.Options{})
	if err != nil {
		return err
	}
	leaf, err := inter.NewClient(deviceID, pki.Options{})
	if err != nil {
		return err
	}
	cert, key := filepath.Join(r.dir, deviceID+"-chain.pem"), filepath.Join(r.dir, deviceID+".key")
	if err := leaf.WriteFiles(cert, key); err != nil {
		return err
	}
	_, err = r.e.EnrollGroup("queuecost", root.Cert, func(g *store.EnrollmentGroup) {
		g.IoTHubs = []string{r.hub}
		g.InitialTwin = &store.InitialTwin{Properties: store.InitialTwinProperties{Desired: map[string]any{"telemetryDelay": 1}}}
	})
	if err != nil {
		return err
	}
	cfg, err := json.Marshal(map[string]any{
		"version": 1, "idScope": r.e.IDScope(), "dpsEndpoint": r.e.DPSEndpoint(),
		"certFile": cert, "keyFile": key, "caFile": r.e.Info().CACertPath, "stateDir": r.state,
		"sensors": map[string]any{"env": map[string]any{"mode": "simulated"}, "gps": map[string]any{"mode": "simulated"}},
	})
	if err != nil {
		return err
	}
	r.cfg = filepath.Join(r.dir, "tracker.json")
	return os.WriteFile(r.cfg, cfg, 0o644)
}

func (r *rig) close() {
	r.stop()
	r.e.Close()
}

func (r *rig) start() error {
	cmd := exec.Command(r.o.bin, "run", "--config", r.cfg)
	cmd.Env = append(append(os.Environ(), "JOURNAL_STREAM="), r.o.env...)
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			r.logLines.Add(1)
			if r.o.verbose {
				fmt.Fprintln(os.Stderr, sc.Text())
			}
		}
		io.Copy(io.Discard, pr)
	}()
	if err := cmd.Start(); err != nil {
		return err
	}
	r.tr, r.exited = cmd, make(chan error, 1)
	go func() {
		err := cmd.Wait()
		pw.Close()
		r.exited <- err
	}()
	return nil
}

// stop sends SIGTERM and waits for the exit (the tracker flushes what it
// can within its flush timeout).
func (r *rig) stop() {
	if r.tr == nil {
		return
	}
	r.tr.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.exited:
	case <-time.After(30 * time.Second):
		r.tr.Process.Kill()
		<-r.exited
	}
	r.tr = nil
}

func (r *rig) received() int { return r.e.TelemetryCount(r.hub, deviceID) }

// waitReceived waits until the emulator holds at least n messages. It
// polls the count (no copies) every 5 ms: the figures it times are in
// seconds.
func (r *rig) waitReceived(n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var err error
	for r.received() < n {
		if time.Now().After(deadline) {
			err = fmt.Errorf("%d of %d messages after %v", r.received(), n, timeout)
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err != nil {
		select {
		case exit := <-r.exited:
			r.exited <- exit
			return fmt.Errorf("%w (tracker exited: %v)", err, exit)
		default:
		}
	}
	return err
}

func (r *rig) measure(stdout, stderr io.Writer) error {
	fi, err := os.Stat(r.o.bin)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "tracker binary: %s, %.2f MB\n", r.o.bin, float64(fi.Size())/1e6)
	if err := r.start(); err != nil {
		return err
	}
	fmt.Fprintln(stderr, "waiting for the tracker to provision and send...")
	if err := r.waitReceived(5, 60*time.Second); err != nil {
		return err
	}
	pid := r.tr.Process.Pid

	fmt.Fprintf(stderr, "steady state: %v window...\n", r.o.window)
	n0 := r.received()
	load0 := loadAvg()
	p0, err := readProc(pid)
	if err != nil {
		return err
	}
	time.Sleep(r.o.window)
	p1, err := readProc(pid)
	if err != nil {
		return err
	}
	n := r.received() - n0
	if n == 0 {
		return errors.New("no readings received in the window")
	}
	d := p1.sub(p0)
	fmt.Fprintf(stdout, "steady state, %v window, %d readings received (%.2f/s), load average %s -> %s\n",
		r.o.window, n, float64(n)/r.o.window.Seconds(), load0, loadAvg())
	fmt.Fprintf(stdout, "  CPU per reading:               %.3f ms\n", d.cpu.Seconds()*1000/float64(n))
	fmt.Fprintf(stdout, "  context switches per reading:  %.1f (voluntary %.1f, involuntary %.1f)\n",
		float64(d.vcsw+d.ivcsw)/float64(n), float64(d.vcsw)/float64(n), float64(d.ivcsw)/float64(n))
	fmt.Fprintf(stdout, "  bytes written per reading:     %.0f (io write_bytes: page-cache folios dirtied)\n", float64(d.writeBytes)/float64(n))
	fmt.Fprintf(stdout, "  write syscalls per reading:    %.1f (io syscw)\n", float64(d.syscw)/float64(n))
	fmt.Fprintf(stdout, "  RSS at the end:                %.1f MB\n", float64(p1.rssKB)/1024)
	if msgs := r.e.Telemetry(r.hub, deviceID); len(msgs) > 0 { // one copy, outside the window
		r.readingSize = store.MessageSize(msgs[len(msgs)-1])
		fmt.Fprintf(stdout, "  a reading (body + properties): %d bytes; io write_bytes / reading size = %.0fx\n",
			r.readingSize, float64(d.writeBytes)/float64(n)/float64(r.readingSize))
	}

	if !r.o.noStrace {
		if err := r.straceWindow(pid, stdout, stderr); err != nil {
			fmt.Fprintf(stdout, "  strace window skipped: %v\n", err)
		}
	}
	if r.o.drain <= 0 {
		return nil
	}
	return r.drainRun(stdout, stderr)
}

// straceWindow counts the sync and write syscalls over one window, and
// the bytes the pwrite64 calls wrote: what the process hands the
// filesystem, page by page (io write_bytes is the kernel's accounting of
// dirtied page-cache folios, which on kernels with large folios counts
// more than was written).
func (r *rig) straceWindow(pid int, stdout, stderr io.Writer) error {
	path, err := exec.LookPath("strace")
	if err != nil {
		return errors.New("strace not installed (apt-get install strace)")
	}
	fmt.Fprintf(stderr, "strace window: %v...\n", r.o.window)
	out := filepath.Join(r.dir, "strace.txt")
	cmd := exec.Command(path, "-f", "-qq", "-o", out, "-p", strconv.Itoa(pid))
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond) // attached
	n0 := r.received()
	time.Sleep(r.o.window)
	n := r.received() - n0
	cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err != nil && errb.Len() > 0 && !strings.Contains(err.Error(), "interrupt") {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(errb.String()))
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return err
	}
	if n == 0 {
		return errors.New("no readings in the strace window")
	}
	c := parseStrace(string(b))
	fmt.Fprintf(stdout, "  syscalls per reading (strace -f, %d readings): fdatasync %.2f, fsync %.2f, pwrite64 %.2f (%.0f bytes), write %.2f\n",
		n, per(c.calls["fdatasync"], n), per(c.calls["fsync"], n), per(c.calls["pwrite64"], n), per(c.pwriteBytes, n), per(c.calls["write"], n))
	// The Go runtime's sleeps and wake-ups: sysmon's nanosleep, futex
	// between threads, the netpoller's epoll_pwait (timers and sockets).
	total := 0
	for _, v := range c.calls {
		total += v
	}
	fmt.Fprintf(stdout, "  all syscalls per reading: %.1f; runtime sleeps/wake-ups: nanosleep %.1f, futex %.1f, epoll_pwait %.1f\n",
		per(total, n), per(c.calls["nanosleep"], n), per(c.calls["futex"], n), per(c.calls["epoll_pwait"], n))
	if r.readingSize > 0 {
		fmt.Fprintf(stdout, "  pwrite64 bytes / reading size:  %.0fx (the filesystem journal comes on top)\n", per(c.pwriteBytes, n)/float64(r.readingSize))
	}
	return nil
}

// retRE matches a system call's return value after its arguments.
var retRE = regexp.MustCompile(`\)\s*= (-?\d+)`)

func per(c, n int) float64 { return float64(c) / float64(n) }

type straceCounts struct {
	calls       map[string]int
	pwriteBytes int
}

// parseStrace counts calls in strace -f output ("PID name(args) = ret",
// possibly split into "<unfinished ...>" and "<... name resumed>") and
// sums what pwrite64 returned.
func parseStrace(s string) straceCounts {
	c := straceCounts{calls: map[string]int{}}
	for _, line := range strings.Split(s, "\n") {
		_, rest, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		rest = strings.TrimSpace(rest)
		name := ""
		if r, ok := strings.CutPrefix(rest, "<... "); ok {
			name, _, _ = strings.Cut(r, " ")
		} else if i := strings.IndexByte(rest, '('); i > 0 {
			name = rest[:i]
			c.calls[name]++
		}
		if name != "pwrite64" {
			continue
		}
		// strace pads short lines: ")           = 4096".
		if m := retRE.FindAllStringSubmatch(rest, -1); len(m) > 0 {
			if v, err := strconv.Atoi(m[len(m)-1][1]); err == nil {
				c.pwriteBytes += v
			}
		}
	}
	return c
}

// drainRun stops the tracker, queues -drain readings and times the drain.
func (r *rig) drainRun(stdout, stderr io.Writer) error {
	r.stop()
	before := r.received()
	fmt.Fprintf(stderr, "queueing %d readings...\n", r.o.drain)
	if err := prefill(filepath.Join(r.state, "queue.db"), r.o.drain); err != nil {
		return fmt.Errorf("prefill: %w", err)
	}
	r.logLines.Store(0)
	load0 := loadAvg()
	start := time.Now()
	if err := r.start(); err != nil {
		return err
	}
	pid := r.tr.Process.Pid
	p0, _ := readProc(pid)
	self0, _ := readProc(os.Getpid())
	if err := r.waitReceived(before+1, 60*time.Second); err != nil {
		return err
	}
	first := time.Now()
	if err := r.waitReceived(before+r.o.drain, 10*time.Minute); err != nil {
		return err
	}
	done := time.Now()
	p1, err := readProc(pid)
	if err != nil {
		return err
	}
	self1, _ := readProc(os.Getpid())
	lines := r.logLines.Load()
	took := done.Sub(first)
	fmt.Fprintf(stdout, "drain of %d queued readings, load average %s -> %s\n", r.o.drain, load0, loadAvg())
	fmt.Fprintf(stdout, "  start to first received:       %v\n", first.Sub(start).Round(time.Millisecond))
	fmt.Fprintf(stdout, "  first to last received:        %v = %.0f msg/s\n", took.Round(time.Millisecond), float64(r.o.drain)/took.Seconds())
	fmt.Fprintf(stdout, "  tracker CPU over the drain:    %.1f s (%.3f ms per message)\n",
		p1.cpu.Seconds()-p0.cpu.Seconds(), (p1.cpu-p0.cpu).Seconds()*1000/float64(r.o.drain))
	// The emulator (DPS, hub, broker) runs in this process: on a shared
	// 2-core machine it competes with the tracker for CPU.
	fmt.Fprintf(stdout, "  emulator CPU over the drain:   %.1f s (this process)\n", (self1.cpu - self0.cpu).Seconds())
	fmt.Fprintf(stdout, "  log lines from start to end:   %d\n", lines)
	return nil
}

// loadAvg is the 1-minute load average: the machine is shared, and CPU,
// context switches and the drain rate move with it.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

// proc is a snapshot of /proc/PID.
type proc struct {
	cpu               time.Duration
	vcsw, ivcsw       int64
	writeBytes, syscw int64
	rssKB             int64
}

func (p proc) sub(q proc) proc {
	return proc{cpu: p.cpu - q.cpu, vcsw: p.vcsw - q.vcsw, ivcsw: p.ivcsw - q.ivcsw,
		writeBytes: p.writeBytes - q.writeBytes, syscw: p.syscw - q.syscw, rssKB: p.rssKB}
}

// clockTicks is USER_HZ, 100 on every Linux architecture the tracker runs on.
const clockTicks = 100

func readProc(pid int) (proc, error) {
	var p proc
	base := fmt.Sprintf("/proc/%d", pid)
	stat, err := os.ReadFile(base + "/stat")
	if err != nil {
		return p, err
	}
	// Fields after the ")" closing the command name: state is field 3;
	// utime and stime are fields 14 and 15.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	p.cpu = time.Duration(ut+st) * time.Second / clockTicks
	tasks, err := os.ReadDir(base + "/task")
	if err != nil {
		return p, err
	}
	for _, t := range tasks {
		kv := readKV(filepath.Join(base, "task", t.Name(), "status"))
		p.vcsw += kv["voluntary_ctxt_switches"]
		p.ivcsw += kv["nonvoluntary_ctxt_switches"]
	}
	io := readKV(base + "/io")
	p.writeBytes, p.syscw = io["write_bytes"], io["syscw"]
	p.rssKB = readKV(base + "/status")["VmRSS"]
	return p, nil
}

// readKV reads "key: number [kB]" lines.
func readKV(path string) map[string]int64 {
	out := map[string]int64{}
	b, err := os.ReadFile(path)
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
			out[k] = n
		}
	}
	return out
}
