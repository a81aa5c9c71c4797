package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/reefer/tracker/deploy/emulator"
	"github.com/reefer/tracker/internal/memlimit"
	"github.com/reefer/tracker/provisioning/dps"
	"github.com/reefer/tracker/provisioning/iothub"
)

// Options shape one run. Zero values pick the defaults noted.
type Options struct {
	// RegistrationsPerMinute is the emulator's DPS instance limit over its
	// sliding one-minute window (default Devices/2, so about half the
	// fleet is throttled once).
	RegistrationsPerMinute int
	// PollRetryAfter is the retry-after the emulator sends with 202
	// "assigning" (default 0 s: the client then polls after its 2 s floor,
	// docs/protocol.md A.4).
	PollRetryAfter time.Duration
	// NoJitter replaces the client's uniform jitter with ConstRand, so
	// every device computes the same back-off.
	NoJitter  bool
	ConstRand float64
	// BackoffBase, BackoffMax, MaxAttempts and MaxWait go to dps.Config;
	// zero keeps the client's defaults (2 s, 2 min, 6, 5 min).
	BackoffBase, BackoffMax time.Duration
	MaxAttempts             int
	MaxWait                 time.Duration
	// Outage keeps DPS down for this long after the devices start: the
	// emulator is stopped (connections refused, a transient error without
	// retry-after) and started again on the same ports. It shows the
	// client's jitter at work, which a 429's retry-after floor overrides.
	Outage time.Duration
	// Telemetry: after assignment each device connects to its hub with
	// iothub, sends one message and stays connected until the run ends.
	Telemetry bool
	// Sleep is the DPS client's wait (default: a real timer). Tests pass
	// one that returns at once.
	Sleep  func(ctx context.Context, d time.Duration) error
	Logger *slog.Logger // emulator log (default: discard)
	// Separate runs the emulator in a child process (this program
	// re-executed), so the emulator's memory and file descriptors are its
	// own: Report.Peaks.EmulatorRSS is its peak RSS, and each process
	// needs about one descriptor per device instead of two. Not with
	// Outage.
	Separate bool
	// EmulatorCPUProfile and EmulatorMemProfile, with Separate, are files
	// for the emulator process's CPU profile over the run and heap
	// profile at its end (go tool pprof).
	EmulatorCPUProfile, EmulatorMemProfile string
	// EmulatorPprof, with Separate, is an address where the emulator
	// process serves net/http/pprof during the run (heap at the peak).
	EmulatorPprof string
	// EmulatorMemoryLimit, with Separate, is the emulator process's soft
	// memory limit (azemu --memory-limit; 0: none).
	EmulatorMemoryLimit memlimit.Bytes
	// Ramp spreads the devices' first attempts evenly over this long
	// instead of one instant (device i starts at i·Ramp/N): a fleet
	// powered on over a minute, not a stampede. Latency is then counted
	// from each device's own start.
	Ramp time.Duration
	// Progress, when set, gets one line about every second while the
	// devices run: DPS connects, assigned, hub-connected and failed so
	// far, with the rates over the last second.
	Progress io.Writer
}

// Report is what one run measured.
type Report struct {
	Devices       int  `json:"devices"`
	RatePerMinute int  `json:"registrationsPerMinute"`
	Jitter        bool `json:"jitter"`
	// Outage is Options.Outage.
	Outage time.Duration `json:"outageNs,omitempty"`
	// Ramp is Options.Ramp.
	Ramp     time.Duration `json:"rampNs,omitempty"`
	Assigned int           `json:"assigned"`
	Failed   int           `json:"failed"`
	// Failures counts failed devices by the dps sentinel they wrapped.
	Failures   map[string]int `json:"failures,omitempty"`
	FirstError string         `json:"firstError,omitempty"`
	// Wall runs from the common start until the last device finished
	// (assigned or failed; with Telemetry, until its message was acked).
	Wall time.Duration `json:"wallNs"`
	// Time to assigned over assigned devices, from the common start.
	P50, P90, P99, Max time.Duration
	// Registration latency: from a device's own start (see Ramp) to
	// assigned, over assigned devices.
	LatencyP50, LatencyP99 time.Duration
	// CPU is the user+system CPU this process used during the run, and
	// EmulatorCPU that of the emulator process (with Separate; 0 in
	// process, where CPU covers both).
	CPU, EmulatorCPU time.Duration
	// Attempts is the number of MQTT connections to DPS, one per try.
	Attempts          int `json:"attempts"`
	MaxDeviceAttempts int `json:"maxDeviceAttempts"`
	// Responses counts DPS responses on the wire by status (202, 200, 429).
	Responses map[int]int `json:"responses"`
	Throttled int         `json:"throttled"` // Responses[429]
	// PeakConnectsPerSec is the most DPS connection attempts started in
	// any one-second slot: the height of a stampede.
	PeakConnectsPerSec int `json:"peakConnectsPerSec"`
	// ConnectsPerSec[i] is the attempts started in second i of the run.
	ConnectsPerSec []int `json:"connectsPerSec"`
	// Telemetry is the messages the emulator recorded (one per device).
	Telemetry       int `json:"telemetry"`
	TelemetryFailed int `json:"telemetryFailed"`
	Peaks           peaks
	FDLimit         uint64 `json:"fdLimit"`
	// EmulatorMemoryLimit is Options.EmulatorMemoryLimit.
	EmulatorMemoryLimit memlimit.Bytes `json:"emulatorMemoryLimit,omitempty"`
}

// FDsNeeded estimates the file descriptors a run of n devices needs in
// this process. In one process every connection costs two (client and
// server end): the opening burst holds all n DPS connections at once, and
// with telemetry the hub connections that stay open overlap the last DPS
// ones (measured peak about 2n; 3n leaves room). With the emulator in its
// own process each side holds one end: n, half again with telemetry.
func FDsNeeded(n int, telemetry, separate bool) uint64 {
	per := uint64(4) // halves
	if telemetry {
		per = 6
	}
	if separate {
		per /= 2
	}
	return per*uint64(n)/2 + 256
}

// fdLimit is RLIMIT_NOFILE's soft limit; Go raises it to the hard limit
// at start-up, so that is what a run can use.
func fdLimit() uint64 {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0
	}
	return r.Cur
}

// runStats is shared by the device goroutines.
type runStats struct {
	start     time.Time
	mu        sync.Mutex
	connects  []time.Duration // when each DPS attempt started
	responses map[int]int

	// Running totals for the progress line.
	assigned, connected, failed atomic.Int64
}

// progress writes a line to w every interval until stop is closed.
func (s *runStats) progress(w io.Writer, every time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(every)
	defer t.Stop()
	var lastAssigned, lastConnected int64
	last := time.Now()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			s.mu.Lock()
			connects := len(s.connects)
			s.mu.Unlock()
			a, c, f := s.assigned.Load(), s.connected.Load(), s.failed.Load()
			dt := now.Sub(last).Seconds()
			fmt.Fprintf(w, "  %3.0fs  DPS connects %d  assigned %d (%.0f/s)  hub-connected %d (%.0f/s)  failed %d\n",
				now.Sub(s.start).Seconds(), connects, a, float64(a-lastAssigned)/dt, c, float64(c-lastConnected)/dt, f)
			lastAssigned, lastConnected, last = a, c, now
		}
	}
}

func (s *runStats) connect() {
	at := time.Since(s.start)
	s.mu.Lock()
	s.connects = append(s.connects, at)
	s.mu.Unlock()
}

func (s *runStats) response(topic string) {
	st := responseStatus(topic)
	s.mu.Lock()
	s.responses[st]++
	s.mu.Unlock()
}

// responseStatus reads the status of "$dps/registrations/res/{status}/?..."
// (docs/protocol.md A.2); 0 if the topic is something else.
func responseStatus(topic string) int {
	rest, ok := strings.CutPrefix(topic, "$dps/registrations/res/")
	if !ok {
		return 0
	}
	s, _, _ := strings.Cut(rest, "/")
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0
	}
	return n
}

type outcome struct {
	assigned bool
	done     time.Duration // assigned (or failed) since start
	latency  time.Duration // assigned (or failed) since the device's own start
	finished time.Duration // telemetry acked, or = done
	attempts int
	err      error
	telErr   error
	hub      string
	client   *iothub.Client
}

// Run starts an emulator on 127.0.0.1, enrolls f's root as a group, and
// registers every device of f with DPS at once, each in its own goroutine
// with the real client (TLS, MQTT). It returns when every device has
// finished; a device failing is a figure in the Report, not an error.
func Run(ctx context.Context, f *Fleet, o Options) (*Report, error) {
	n := len(f.Certs)
	if n == 0 {
		return nil, errors.New("fleet has no devices")
	}
	rate := o.RegistrationsPerMinute
	if rate <= 0 {
		rate = max(1, n/2)
	}
	if o.Separate && o.Outage > 0 {
		return nil, errors.New("an outage needs the emulator in process (no -separate)")
	}
	lim := fdLimit()
	if need := FDsNeeded(n, o.Telemetry, o.Separate); lim != 0 && lim < need {
		return nil, fmt.Errorf("%d devices need about %d file descriptors in one process, limit is %d: "+
			"raise the hard limit (ulimit -Hn / LimitNOFILE), run without telemetry, or use fewer devices", n, need, lim)
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	dir, err := os.MkdirTemp("", "fleet-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	pollRA := o.PollRetryAfter
	if pollRA <= 0 {
		pollRA = -1 // the emulator's "0 s"
	}
	ecfg := emulator.Config{
		DataDir: dir, MQTTAddr: "127.0.0.1:0", HTTPSAddr: "-", NoSync: true, Logger: logger,
		RegistrationsPerMinute: rate, RetryAfter: pollRA,
	}
	var (
		e         *emulator.Emulator // in process
		proc      *emulatorProcess   // or separate
		info      emulator.Info
		clientTLS func(tls.Certificate) *tls.Config
	)
	if o.Separate {
		proc, err = startEmulatorProcess(ctx, dir, rate, pollRA, f.Root.Cert, o)
		if err != nil {
			return nil, err
		}
		defer proc.close()
		info, clientTLS = proc.info, proc.clientTLS
	} else {
		e, err = startEmulator(ctx, ecfg)
		if err != nil {
			return nil, err
		}
		defer func() { e.Close() }()
		if _, err := e.EnrollGroup(groupID, f.Root.Cert, nil); err != nil {
			return nil, fmt.Errorf("enroll group: %w", err)
		}
		info, clientTLS = e.Info(), e.ClientTLSConfig
	}
	ports, err := emulatorPorts(info)
	if err != nil {
		return nil, err
	}
	endpoint, scope := info.DPS.DeviceEndpoint, info.DPS.IDScope
	tlsCfgs := make([]*tls.Config, n)
	for i := range n {
		tlsCfgs[i] = clientTLS(f.Certs[i])
	}
	if o.Outage > 0 {
		// Same DataDir, so the restart keeps ports, CA, ID scope and
		// the enrollment.
		if err := e.Close(); err != nil {
			return nil, fmt.Errorf("stop emulator for the outage: %w", err)
		}
	}

	rnd := func() float64 { return o.ConstRand }
	if !o.NoJitter {
		rnd = nil // the client's math/rand/v2
	}
	st := &runStats{responses: map[int]int{}}
	out := make([]outcome, n)
	begin := make(chan struct{})
	var ready, wg sync.WaitGroup
	for i := range n {
		ready.Add(1)
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			attempts := 0
			newClient := func(opts *mqtt.ClientOptions) mqtt.Client {
				attempts++ // Register makes one connection at a time
				st.connect()
				h := opts.DefaultPublishHandler
				opts.SetDefaultPublishHandler(func(c mqtt.Client, m mqtt.Message) {
					st.response(m.Topic())
					h(c, m)
				})
				return mqtt.NewClient(opts)
			}
			cfg := dps.Config{
				Endpoint:       endpoint,
				IDScope:        scope,
				RegistrationID: f.IDs[i],
				TLS:            tlsCfgs[i],
				MaxWait:        o.MaxWait,
				MaxAttempts:    o.MaxAttempts,
				BackoffBase:    o.BackoffBase,
				BackoffMax:     o.BackoffMax,
				Sleep:          o.Sleep,
				Rand:           rnd,
				NewClient:      newClient,
			}
			ready.Done()
			<-begin
			if o.Ramp > 0 {
				t := time.NewTimer(o.Ramp * time.Duration(i) / time.Duration(n))
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
				}
			}
			own := time.Since(st.start)
			res, err := dps.Register(ctx, cfg)
			oc := &out[i]
			oc.done = time.Since(st.start)
			oc.latency = oc.done - own
			oc.finished = oc.done
			oc.attempts = attempts
			if err != nil {
				oc.err = err
				st.failed.Add(1)
				return
			}
			st.assigned.Add(1)
			oc.assigned, oc.hub = true, res.AssignedHub
			if o.Telemetry {
				oc.client, oc.telErr = sendOne(ctx, res, tlsCfgs[i], func() { st.connected.Add(1) })
				oc.finished = time.Since(st.start)
			}
		}(i)
	}
	ready.Wait()
	emuPID := 0
	if proc != nil {
		emuPID = proc.pid()
	}
	smp := startSampler(ports, emuPID, 100*time.Millisecond)
	cpu0 := processCPU()
	st.start = time.Now()
	stopCh, progressDone := make(chan struct{}), make(chan struct{})
	stopProgress := func() { close(stopCh); <-progressDone } // no write after Run returns
	go func() {
		defer close(progressDone)
		if o.Progress != nil {
			st.progress(o.Progress, time.Second, stopCh)
		}
	}()
	close(begin)
	if o.Outage > 0 {
		select {
		case <-time.After(o.Outage):
		case <-ctx.Done():
		}
		// Devices only talk to it after it is up; they never read e.
		e2, err := startEmulator(ctx, ecfg)
		if err != nil {
			wg.Wait()
			stopProgress()
			smp.Stop()
			closeAll(out)
			return nil, fmt.Errorf("restart emulator after the outage: %w", err)
		}
		e = e2
	}
	wg.Wait()
	wall := time.Since(st.start)
	cpu := processCPU() - cpu0
	stopProgress()
	pk := smp.Stop()

	r := &Report{Devices: n, RatePerMinute: rate, Jitter: !o.NoJitter, Outage: o.Outage, Ramp: o.Ramp, Wall: wall, Failures: map[string]int{},
		Responses: st.responses, Throttled: st.responses[429], Attempts: len(st.connects), Peaks: pk, FDLimit: lim, CPU: cpu,
		EmulatorMemoryLimit: o.EmulatorMemoryLimit}
	var times, lat []time.Duration
	for i := range out {
		oc := &out[i]
		r.MaxDeviceAttempts = max(r.MaxDeviceAttempts, oc.attempts)
		if !oc.assigned {
			r.Failed++
			r.Failures[failureKind(oc.err)]++
			if r.FirstError == "" {
				r.FirstError = oc.err.Error()
			}
			continue
		}
		r.Assigned++
		times = append(times, oc.done)
		lat = append(lat, oc.latency)
		if o.Telemetry {
			if oc.telErr != nil {
				r.TelemetryFailed++
				if r.FirstError == "" {
					r.FirstError = oc.telErr.Error()
				}
			}
			switch {
			case e != nil:
				r.Telemetry += len(e.Telemetry(oc.hub, f.IDs[i]))
			case oc.telErr == nil && oc.client != nil:
				r.Telemetry++ // acknowledged, so recorded (PUBACK follows the record)
			}
		}
	}
	slices.Sort(times)
	slices.Sort(lat)
	r.P50, r.P90, r.P99 = percentile(times, 50), percentile(times, 90), percentile(times, 99)
	r.LatencyP50, r.LatencyP99 = percentile(lat, 50), percentile(lat, 99)
	if len(times) > 0 {
		r.Max = times[len(times)-1]
	}
	r.ConnectsPerSec = perSecond(st.connects)
	r.PeakConnectsPerSec = slices.Max(append([]int{0}, r.ConnectsPerSec...))
	closeAll(out)
	if proc != nil {
		_ = proc.close() // its CPU is known once it has exited
		r.EmulatorCPU = proc.cpu()
	}
	return r, nil
}

// processCPU is the user+system CPU this process has used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// sendOne connects device res to its hub, calls connected, sends one
// telemetry message (QoS 1, returns after PUBACK, docs/protocol.md B.3) and leaves the
// client connected.
func sendOne(ctx context.Context, res *dps.Result, tlsCfg *tls.Config, connected func()) (*iothub.Client, error) {
	c, err := iothub.New(iothub.Config{Hub: res.AssignedHub, DeviceID: res.DeviceID, TLS: tlsCfg})
	if err != nil {
		return nil, err
	}
	if err := c.Connect(ctx); err != nil {
		c.Close()
		return nil, err
	}
	connected()
	body := fmt.Appendf(nil, `{"deviceId":%q,"temperature":-18.2,"humidity":81,"lat":53.54,"lon":9.98}`, res.DeviceID)
	if err := c.Send(ctx, iothub.Message{Body: body, ContentType: "application/json", ContentEncoding: "utf-8"}); err != nil {
		return c, err
	}
	return c, nil
}

func startEmulator(ctx context.Context, cfg emulator.Config) (*emulator.Emulator, error) {
	e, err := emulator.New(cfg)
	if err != nil {
		return nil, err
	}
	if err := e.Start(ctx); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

func closeAll(out []outcome) {
	var wg sync.WaitGroup
	for i := range out {
		if c := out[i].client; c != nil {
			wg.Add(1)
			go func() { defer wg.Done(); c.Close() }()
		}
	}
	wg.Wait()
}

var sentinels = []struct {
	name string
	err  error
}{
	{"throttled", dps.ErrThrottled}, {"transient", dps.ErrTransient}, {"unauthorized", dps.ErrUnauthorized},
	{"disabled", dps.ErrDisabled}, {"failed", dps.ErrFailed}, {"bad-request", dps.ErrBadRequest},
	{"not-found", dps.ErrNotFound}, {"malformed", dps.ErrMalformed}, {"context", context.DeadlineExceeded},
	{"context", context.Canceled},
}

func failureKind(err error) string {
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			return s.name
		}
	}
	return "other"
}

// percentile is the nearest-rank p-th percentile of sorted d.
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	k := (p*len(sorted) + 99) / 100 // ceil(p/100·n), 1-based
	return sorted[max(k, 1)-1]
}

// perSecond buckets start times into whole seconds.
func perSecond(at []time.Duration) []int {
	var b []int
	for _, d := range at {
		s := int(d / time.Second)
		for len(b) <= s {
			b = append(b, 0)
		}
		b[s]++
	}
	return b
}

// emulatorPorts are the ports of the emulator's MQTT listeners.
func emulatorPorts(info emulator.Info) ([]uint16, error) {
	addrs := []string{info.DPS.DeviceEndpoint}
	for _, h := range info.Hubs {
		addrs = append(addrs, h.MQTTAddress)
	}
	var ports []uint16
	for _, a := range addrs {
		_, p, err := net.SplitHostPort(a)
		if err != nil {
			return nil, fmt.Errorf("emulator address %q: %w", a, err)
		}
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("emulator address %q: %w", a, err)
		}
		ports = append(ports, uint16(n))
	}
	return ports, nil
}
