package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/reefer/tracker/drivers"
	"github.com/reefer/tracker/firmware/command"
	"github.com/reefer/tracker/firmware/telemetry"
	"github.com/reefer/tracker/internal/pnp"
)

// Defaults. Those of the telemetry delay and the alert threshold, and
// their bounds, are firmware/telemetry's.
const (
	DefaultFlushTimeout   = 5 * time.Second
	DefaultBackoffMin     = time.Second
	DefaultBackoffMax     = 2 * time.Minute
	DefaultReportInterval = 15 * time.Minute
	DefaultBeatInterval   = 5 * time.Second
	DefaultSenseTimeout   = 10 * time.Second

	// DefaultHoldMax bounds the samples held while the wall clock is not
	// set: an hour at the shortest interval, ten at the default one, and
	// well under a megabyte of memory.
	DefaultHoldMax   = 3600
	DefaultClockPoll = time.Second
)

// sendBatch is how many messages the sender peeks at a time, all in
// flight at once with a Pipeliner: enough to hide the round trips while a
// backlog drains (bench/queuecost under load: 64 in flight drained 3,000
// msg/s, 256 about 9,000, 512 no better), few enough that a lost link
// leaves little in doubt (resent with the same ids). The sender keeps two
// batches in flight (see sender); bench/README.md has the figures.
const sendBatch = 256

// Errors callers act on.
var (
	// ErrNotRunning: SendNow needs Run to be running.
	ErrNotRunning = errors.New("agent not running")
	// ErrRunning: Run was called twice.
	ErrRunning = errors.New("agent already running")
	// ErrBadDesired wraps every rejected desired property.
	ErrBadDesired = errors.New("bad desired property")
	// ErrHeld: SendNow took the sample but holds it until the wall clock
	// is set (Config.ClockFloor); it gets its id and seq when it is queued.
	ErrHeld = errors.New("sample held until the clock is set")
)

// Config holds an agent's dependencies and settings. Zero durations take
// the defaults above.
type Config struct {
	DeviceID        string // required: message ids are DeviceID-seq
	FirmwareVersion string

	Env       EnvSensor  // required
	GPS       Positioner // optional: nil sends no position
	Queue     Queue      // required
	Publisher Publisher  // required
	Reporter  Reporter   // optional: nil reports nothing
	// Commands keeps the cloud-to-device commands' record (an interval
	// override, the last outcome) across restarts; nil keeps it in memory.
	Commands CommandRecord

	Clock  Clock        // nil: SystemClock
	Logger *slog.Logger // nil: discard

	// TelemetryDelay is the configured sampling interval; desired
	// telemetryDelay overrides it and a null desired value restores it.
	TelemetryDelay time.Duration
	// AlertThreshold in °C; nil means telemetry.DefaultAlertThreshold (0 °C is a
	// valid threshold, hence the pointer).
	AlertThreshold *float64
	// AlertHysteresis (°C) and AlertMinDuration debounce the temperature
	// alert; nil means telemetry's defaults (0 is valid for both).
	AlertHysteresis  *float64
	AlertMinDuration *time.Duration
	// AlertCheck is how often the env sensor is read between messages to
	// watch for an alert. 0: DefaultAlertCheck.
	AlertCheck time.Duration
	// EnvSource is the env sensor's mode as main chose it, reported before
	// the first reading says so itself.
	EnvSource drivers.Source

	FlushTimeout   time.Duration // bound on sending what is queued when Run stops
	BackoffMin     time.Duration // first retry delay after a failed send
	BackoffMax     time.Duration // retry delay cap
	ReportInterval time.Duration // periodic reported-properties refresh while connected
	SenseTimeout   time.Duration // bound on one sensor read (wall clock)

	// Beat, if set, is called on every iteration of the sampling loop and
	// at least every BeatInterval: the systemd watchdog's heartbeat. A hung
	// sensor read stops the beats and lets the watchdog restart us.
	Beat         func()
	BeatInterval time.Duration

	// Rand returns a number in [0,1) for back-off jitter; nil: math/rand/v2.
	Rand func() float64

	// ClockFloor is the earliest wall-clock time the agent believes (the
	// daemon passes lifecycle.ClockFloor). While Clock.Now is before it,
	// each sample is held in memory with its monotonic reading instead of
	// being queued, and queued with its true time once the clock is set;
	// see the package comment. Zero: every time is believed.
	ClockFloor time.Time
	// HoldMax bounds the held samples; beyond it the oldest is dropped and
	// counted in StatusReport.Dropped. 0: DefaultHoldMax.
	HoldMax int
	// ClockPoll is how often the wall clock is looked at while samples are
	// held. 0: DefaultClockPoll.
	ClockPoll time.Duration
}

// Agent is the daemon's core loop. Create it with New and start it with Run.
// Its other methods are safe to call from any goroutine.
type Agent struct {
	cfg   Config
	log   *slog.Logger
	clock Clock

	running atomic.Bool

	// Signals, each buffered by one so a sender never blocks.
	intervalChanged chan struct{} // sampler: reset the ticker
	wakeSender      chan struct{} // sender: new message queued
	connSender      chan struct{} // sender: link went up or down
	wakeReporter    chan struct{} // reporter: something to report
	connReporter    chan struct{} // reporter: link went up or down
	overrideChanged chan struct{} // sampler: arm the end of the interval override
	sendNow         chan sendNowReq

	cmdMu sync.Mutex // one command at a time (HandleCommand)
	recMu sync.Mutex // one command-record save at a time, in state order

	mu      sync.Mutex
	st      state
	sampled chan struct{} // closed when the current Run stops sampling; guarded by mu
}

// state is the agent's mutable state, guarded by Agent.mu.
type state struct {
	// interval is the twin's telemetryDelay (or the configured one);
	// override, set by command, is in force over it while it lasts.
	interval       time.Duration
	override       *command.Override
	lastCmd        *command.Outcome
	handledCmds    []string // command.Record.Handled: ids done or rejected
	threshold      float64
	desiredVersion int64
	desiredErr     string
	// acks answers each writable property the desired twin has spoken
	// about (docs/protocol.md B.5); nil before the first.
	acks      map[string]pnp.Ack
	connected bool
	// envSources is what the last sample said about the env sensor (Env,
	// EnvError); the GPS part is read live from the receiver.
	envSources  telemetry.Sources
	provisioned time.Time

	samples, sensorErrs, sent, sendErrs, queueErrs uint64
	consecutiveSensorErrs                          uint64
	lastSample, lastSend, lastErrAt                time.Time
	lastSeq                                        uint64
	lastErr                                        string

	alerts alerts

	// Samples taken while the wall clock was below ClockFloor, oldest
	// first. Only the sampler goroutine changes held.
	held        []heldSample
	heldDropped uint64
	holding     bool // a hold episode began and was logged; ends on release
}

// heldSample is a reading whose wall time is not to be believed. mono
// (Clock.Monotonic when it was taken) gives its true time later.
type heldSample struct {
	s         telemetry.Sample
	mono      time.Duration
	threshold float64 // the one in force when it was taken
}

type sendNowReq struct {
	reply chan sendNowResult
}

type sendNowResult struct {
	m   Queued
	err error
}

// New checks cfg and returns an agent ready to Run.
func New(cfg Config) (*Agent, error) {
	switch {
	case cfg.DeviceID == "":
		return nil, errors.New("agent: no DeviceID")
	case cfg.Env == nil:
		return nil, errors.New("agent: no Env sensor")
	case cfg.Queue == nil:
		return nil, errors.New("agent: no Queue")
	case cfg.Publisher == nil:
		return nil, errors.New("agent: no Publisher")
	}
	if cfg.TelemetryDelay == 0 {
		cfg.TelemetryDelay = telemetry.DefaultDelay
	}
	if cfg.TelemetryDelay < telemetry.MinDelay || cfg.TelemetryDelay > telemetry.MaxDelay {
		return nil, fmt.Errorf("agent: telemetry delay %v outside %v..%v", cfg.TelemetryDelay, telemetry.MinDelay, telemetry.MaxDelay)
	}
	threshold := telemetry.DefaultAlertThreshold
	if cfg.AlertThreshold != nil {
		threshold = *cfg.AlertThreshold
		if !(threshold >= telemetry.MinAlertThreshold && threshold <= telemetry.MaxAlertThreshold) {
			return nil, fmt.Errorf("agent: alert threshold %v outside %v..%v", threshold, telemetry.MinAlertThreshold, telemetry.MaxAlertThreshold)
		}
	}
	cfg.AlertThreshold = &threshold
	hysteresis, minDur := telemetry.DefaultAlertHysteresis, telemetry.DefaultAlertMinDuration
	if cfg.AlertHysteresis != nil {
		hysteresis = *cfg.AlertHysteresis
		if _, err := checkHysteresis(hysteresis); err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
	}
	if cfg.AlertMinDuration != nil {
		minDur = *cfg.AlertMinDuration
		if _, err := checkMinDuration(minDur.Seconds()); err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
	}
	cfg.AlertHysteresis, cfg.AlertMinDuration = &hysteresis, &minDur
	setDefault(&cfg.AlertCheck, DefaultAlertCheck)
	setDefault(&cfg.FlushTimeout, DefaultFlushTimeout)
	setDefault(&cfg.BackoffMin, DefaultBackoffMin)
	setDefault(&cfg.BackoffMax, DefaultBackoffMax)
	setDefault(&cfg.ReportInterval, DefaultReportInterval)
	setDefault(&cfg.SenseTimeout, DefaultSenseTimeout)
	setDefault(&cfg.BeatInterval, DefaultBeatInterval)
	setDefault(&cfg.ClockPoll, DefaultClockPoll)
	if cfg.HoldMax <= 0 {
		cfg.HoldMax = DefaultHoldMax
	}
	if cfg.BackoffMax < cfg.BackoffMin {
		cfg.BackoffMax = cfg.BackoffMin
	}
	if cfg.Clock == nil {
		cfg.Clock = SystemClock()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	if cfg.Commands == nil {
		cfg.Commands = &memRecord{}
	}
	a := &Agent{
		cfg:             cfg,
		log:             cfg.Logger,
		clock:           cfg.Clock,
		intervalChanged: make(chan struct{}, 1),
		wakeSender:      make(chan struct{}, 1),
		connSender:      make(chan struct{}, 1),
		wakeReporter:    make(chan struct{}, 1),
		connReporter:    make(chan struct{}, 1),
		overrideChanged: make(chan struct{}, 1),
		sendNow:         make(chan sendNowReq),
		st: state{
			interval:   cfg.TelemetryDelay,
			threshold:  threshold,
			envSources: telemetry.Sources{Env: cfg.EnvSource},
			alerts:     alerts{hysteresis: hysteresis, minDuration: minDur},
		},
	}
	a.loadCommands()
	return a, nil
}

func setDefault(d *time.Duration, def time.Duration) {
	if *d <= 0 {
		*d = def
	}
}

// signal wakes whoever waits on ch without ever blocking.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// SetConnected tells the agent whether the IoT Hub link is up. The sender
// drains the queue only while it is, and a reconnect retries at once
// instead of waiting out the back-off and refreshes the reported
// properties. The agent starts disconnected.
func (a *Agent) SetConnected(up bool) {
	a.mu.Lock()
	changed := a.st.connected != up
	a.st.connected = up
	a.mu.Unlock()
	if changed {
		a.log.Info("hub link", "connected", up)
		signal(a.connSender)
		signal(a.connReporter)
	}
}

func (a *Agent) connected() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st.connected
}

// SetProvisioned records when DPS last assigned this device and reports it.
func (a *Agent) SetProvisioned(t time.Time) {
	a.mu.Lock()
	a.st.provisioned = t
	a.mu.Unlock()
	signal(a.wakeReporter)
}

// Report sends the reported properties again soon: the Reporter adds
// members of its own (the daemon's queue storage) and one of them changed.
func (a *Agent) Report() { signal(a.wakeReporter) }

// Run samples and sends until ctx is cancelled. It then stops sampling and
// spends at most FlushTimeout sending what is queued (while connected)
// before returning nil; what is left stays in the queue for the next start.
func (a *Agent) Run(ctx context.Context) error {
	if !a.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer a.running.Store(false)
	sampled := make(chan struct{})
	a.mu.Lock()
	a.sampled = sampled
	a.mu.Unlock()

	// Sends outlive ctx by up to FlushTimeout; flushing tells the sender to
	// stop waiting for new work and return once the queue is drained.
	sendCtx, cancelSend := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelSend()
	flushing := make(chan struct{})
	senderDone := make(chan struct{})
	go func() {
		defer close(senderDone)
		a.sender(sendCtx, flushing)
	}()
	reporterDone := make(chan struct{})
	go func() {
		defer close(reporterDone)
		if a.cfg.Reporter != nil {
			a.reporter(ctx)
		}
	}()

	a.log.Info("agent started", "device", a.cfg.DeviceID, "interval", a.interval(), "threshold", a.threshold())
	a.sampler(ctx)
	close(sampled)
	// The clock may have been set since the last poll: keep what we can.
	a.releaseHeld()
	if n := a.heldCount(); n > 0 {
		a.log.Warn("stopping with samples held for the clock; they are lost (their time is unknown)", "held", n)
	}

	close(flushing)
	n, _ := a.cfg.Queue.Len()
	a.log.Info("agent stopping, flushing queue", "queued", n, "connected", a.connected(), "timeout", a.cfg.FlushTimeout)
	select {
	case <-senderDone:
	case <-a.clock.After(a.cfg.FlushTimeout):
		cancelSend()
		<-senderDone
	}
	<-reporterDone
	n, b := a.cfg.Queue.Len()
	a.log.Info("agent stopped", "left_queued", n, "left_bytes", b)
	return nil
}

// interval is the sampling interval in force (see effectiveLocked).
func (a *Agent) interval() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.effectiveLocked()
}

func (a *Agent) threshold() float64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st.threshold
}

// sampler takes one sample at start and one per interval until ctx ends.
// It never waits on the network: messages go to the queue only.
func (a *Agent) sampler(ctx context.Context) {
	tick := a.clock.NewTicker(a.interval())
	defer tick.Stop()
	beat := a.clock.NewTicker(a.cfg.BeatInterval)
	defer beat.Stop()
	watch := a.clock.NewTicker(a.cfg.AlertCheck)
	defer watch.Stop()
	// poll runs only while samples are held, to queue them soon after the
	// clock is set even when the next sample is an hour away.
	var poll Ticker
	defer func() {
		if poll != nil {
			poll.Stop()
		}
	}()

	// overrideEnd fires when a timed interval override is over. The beat
	// checks too: a wall clock stepped by NTP moves the end.
	var overrideEnd <-chan time.Time
	arm := func() {
		overrideEnd = nil
		if until := a.overrideUntil(); !until.IsZero() {
			overrideEnd = a.clock.After(max(until.Sub(a.clock.Now()), 0))
		}
	}
	arm()
	a.expireOverride()

	a.sampleOnce(ctx)
	for {
		a.beat()
		a.releaseHeld()
		a.queueAlerts()
		var pollC <-chan time.Time
		switch held := a.heldCount() > 0; {
		case held && poll == nil:
			poll = a.clock.NewTicker(a.cfg.ClockPoll)
		case !held && poll != nil:
			poll.Stop()
			poll = nil
		}
		if poll != nil {
			pollC = poll.C()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C():
			a.sampleOnce(ctx)
		case <-a.intervalChanged:
			// A new telemetryDelay takes effect now: the next sample is one
			// new interval from now, not at the end of the old one.
			tick.Reset(a.interval())
		case req := <-a.sendNow:
			if ctx.Err() != nil {
				req.reply <- sendNowResult{err: ErrNotRunning}
				return
			}
			m, err := a.sampleOnce(ctx)
			req.reply <- sendNowResult{m, err}
		case <-watch.C():
			a.watch(ctx)
		case <-beat.C():
			a.expireOverride()
		case <-overrideEnd:
			overrideEnd = nil
			a.expireOverride()
		case <-a.overrideChanged:
			arm()
		case <-pollC:
		}
	}
}

func (a *Agent) beat() {
	if a.cfg.Beat != nil {
		a.cfg.Beat()
	}
}

// sampleOnce reads the sensors and queues one message, or holds it while
// the wall clock is not set. The message carries what could be read: a
// failed env reading is logged and counted, and the message goes without
// temperature, humidity and pressure, its source saying why (never a
// made-up value); a missing GPS likewise.
func (a *Agent) sampleOnce(ctx context.Context) (Queued, error) {
	now, mono := a.clock.Now(), a.clock.Monotonic()
	sctx, cancel := context.WithTimeout(ctx, a.cfg.SenseTimeout)
	env, err := a.cfg.Env.Sense(sctx)
	cancel()
	s := telemetry.Sample{Time: now, Env: env}
	if err != nil {
		a.sensorFailed(err)
		s.Env, s.EnvError = drivers.Env{}, err.Error()
	}
	if a.cfg.GPS != nil {
		s.GPSSource = a.cfg.GPS.Source()
		s.GPSError = a.cfg.GPS.Problem()
		if p, ok := a.cfg.GPS.Latest(); ok && s.GPSError == "" {
			s.Position = &p
		}
	}
	threshold := a.threshold()
	// Alerts first: one raised by this reading goes before it.
	a.evaluateAlerts(s)
	if !a.clockSet(now) {
		// Not numbered yet: the seq is taken when the reading is stored,
		// in the same write. Released in sampling order, before any newer
		// reading, held readings keep their order.
		a.hold(heldSample{s: s, mono: mono, threshold: threshold})
		return Queued{}, ErrHeld
	}
	a.releaseHeld() // older samples go first
	return a.enqueue(s, threshold)
}

// errBuild marks a message that could not be built from its sample, as
// opposed to a queue failure.
type errBuild struct{ err error }

func (e errBuild) Error() string { return e.err.Error() }
func (e errBuild) Unwrap() error { return e.err }

// enqueue builds the message for s under the next seq and queues it, and
// counts it.
func (a *Agent) enqueue(s telemetry.Sample, threshold float64) (Queued, error) {
	var msg telemetry.Message
	q, err := a.cfg.Queue.Append(func(seq uint64) (Queued, error) {
		s.Seq = seq
		var err error
		if msg, err = telemetry.Build(a.cfg.DeviceID, s, threshold); err != nil {
			return Queued{}, errBuild{err}
		}
		return Queued{ID: msg.ID, Seq: msg.Seq, Body: msg.Body, Props: msg.Properties, Created: msg.CreatedAt}, nil
	})
	var be errBuild
	switch {
	case errors.As(err, &be):
		a.sensorFailed(be.err)
		return Queued{}, fmt.Errorf("agent: build message: %w", be.err)
	case err != nil:
		a.queueFailed("append", err)
		return Queued{}, fmt.Errorf("agent: queue message: %w", err)
	}
	s.Seq = q.Seq
	a.mu.Lock()
	a.st.samples++
	a.st.lastSample, a.st.lastSeq = s.Time, s.Seq
	a.mu.Unlock()
	a.noteEnv(s)
	a.log.Debug("telemetry queued", "id", q.ID, "seq", q.Seq, "temperature", s.Env.TemperatureC,
		"env_error", s.EnvError, "alert", msg.Alert, "fix", s.Position != nil, "gps_error", s.GPSError)
	signal(a.wakeSender)
	return q, nil
}

// noteEnv records what sample s says about the env sensor, and reports a
// change (a sensor lost or back) at once.
func (a *Agent) noteEnv(s telemetry.Sample) {
	src := telemetry.SourcesOf(s)
	src.GPS, src.GPSError = "", ""
	a.mu.Lock()
	if s.EnvError == "" {
		a.st.consecutiveSensorErrs = 0
	}
	changed := a.st.envSources != src
	a.st.envSources = src
	a.mu.Unlock()
	if changed {
		signal(a.wakeReporter)
	}
}

// sensorFailed counts a failed reading. At one reading a second a dead
// sensor would flood the journal, so repeats are logged at debug level,
// except every 60th.
func (a *Agent) sensorFailed(err error) {
	a.mu.Lock()
	a.st.sensorErrs++
	a.st.consecutiveSensorErrs++
	n, total := a.st.consecutiveSensorErrs, a.st.sensorErrs
	a.setErrLocked("sensor: " + err.Error())
	a.mu.Unlock()
	level := slog.LevelDebug
	if n == 1 || n%60 == 0 {
		level = slog.LevelWarn
	}
	a.log.Log(context.Background(), level, "env sensor reading failed; the message goes without temperature, humidity and pressure",
		"err", err, "consecutive", n, "total", total)
}

func (a *Agent) queueFailed(op string, err error) {
	a.mu.Lock()
	a.st.queueErrs++
	a.setErrLocked("queue " + op + ": " + err.Error())
	a.mu.Unlock()
	a.log.Error("queue failed", "op", op, "err", err)
}

func (a *Agent) setErrLocked(msg string) {
	a.st.lastErr, a.st.lastErrAt = msg, a.clock.Now()
}

// SendNow samples immediately and queues the message; the sender sends it
// like any other. It returns the queued message (for the sendNow direct
// method's answer) or why none was queued.
func (a *Agent) SendNow(ctx context.Context) (Queued, error) {
	a.mu.Lock()
	sampled := a.sampled
	a.mu.Unlock()
	if sampled == nil || isClosed(sampled) {
		return Queued{}, ErrNotRunning
	}
	req := sendNowReq{reply: make(chan sendNowResult, 1)}
	select {
	case a.sendNow <- req:
	case <-sampled:
		return Queued{}, ErrNotRunning
	case <-ctx.Done():
		return Queued{}, fmt.Errorf("agent: send now: %w", ctx.Err())
	}
	select {
	case r := <-req.reply:
		return r.m, r.err
	case <-ctx.Done():
		return Queued{}, fmt.Errorf("agent: send now: %w", ctx.Err())
	}
}
