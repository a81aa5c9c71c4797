package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"periph.io/x/conn/v3/i2c"

	"github.com/reefer/tracker/firmware/agent"
	"github.com/reefer/tracker/firmware/config"
	"github.com/reefer/tracker/firmware/health"
	"github.com/reefer/tracker/firmware/lifecycle"
	"github.com/reefer/tracker/firmware/queue"
	"github.com/reefer/tracker/provisioning/cache"
	"github.com/reefer/tracker/provisioning/certs"
	"github.com/reefer/tracker/provisioning/dps"
	"github.com/reefer/tracker/provisioning/iothub"
)

// QueueFile is the queue database's name in the state directory.
const QueueFile = "queue.db"

// Direct methods the daemon answers (spec B.6).
const (
	MethodGetStatus = "getStatus"
	MethodSendNow   = "sendNow"
)

// PropProvisioning is the reported property carrying the lifecycle status.
const PropProvisioning = "provisioning"

// PropQueueRecovered is the reported property telling the cloud that the
// queue database was found corrupt at this start and replaced: the
// readings queued in it are lost. Absent when nothing was lost.
const PropQueueRecovered = "queueRecovered"

// Defaults of Tuning.
const (
	DefaultReadyWait      = 30 * time.Second // well under the unit's TimeoutStartSec=90
	DefaultStatusInterval = 15 * time.Second
)

// Errors callers act on.
var (
	// ErrIdentity: the device certificate, key or trust roots are unusable.
	// Restarting cannot fix it; main exits with EX_CONFIG.
	ErrIdentity = errors.New("device identity refused")
	// ErrNotStarted: Run has not set the daemon up yet.
	ErrNotStarted = errors.New("daemon not started")
)

// Notifier tells the service manager how the daemon is doing.
type Notifier interface {
	Ready() error
	Status(line string) error
	Stopping() error
}

// Systemd is the Notifier speaking sd_notify (firmware/health); outside
// systemd every call is a no-op.
type Systemd struct{}

func (Systemd) Ready() error             { return health.Ready() }
func (Systemd) Status(line string) error { return health.Status(line) }
func (Systemd) Stopping() error          { return health.Stopping() }

// Tuning holds timings that production leaves at their defaults and tests
// shorten. Zero values take the defaults of the package that uses them.
type Tuning struct {
	// ReadyWait bounds the wait for the first hub connection before READY=1.
	ReadyWait time.Duration
	// StatusInterval is how often the STATUS= line is recomputed (it is
	// also recomputed on every lifecycle change).
	StatusInterval time.Duration
	// WatchdogInterval overrides WATCHDOG_USEC (0: from the environment).
	WatchdogInterval time.Duration

	// Agent: flush bound at shutdown, send back-off, report refresh, beats.
	FlushTimeout                   time.Duration
	SendBackoffMin, SendBackoffMax time.Duration
	ReportInterval                 time.Duration
	BeatInterval                   time.Duration

	// Lifecycle: the long schedule while refused (0: config
	// reprovisionRetry), the back-off after transient failures, how long
	// an unreachable hub is tried before asking DPS again, and the poll of
	// the clock wait.
	RetryMin, RetryMax      time.Duration
	BackoffBase, BackoffMax time.Duration
	HubGiveUp               time.Duration
	ClockPoll               time.Duration

	// IoT Hub client (provisioning/iothub.Config).
	HubBackoffBase, HubBackoffMax time.Duration
	HubNotAuthorizedLimit         int
	HubOperationTimeout           time.Duration
	HubConnectTimeout             time.Duration
	HubKeepAlive                  time.Duration
	HubStableAfter                time.Duration
	HubTakeoverThreshold          int

	// DPS client (provisioning/dps.Config).
	DPSBackoffBase, DPSBackoffMax time.Duration
	DPSMaxWait                    time.Duration
	DPSResponseTimeout            time.Duration
	DPSConnectTimeout             time.Duration
	DPSMaxAttempts                int

	// GPSProbeTimeout: how long "auto" waits for NMEA on the port.
	GPSProbeTimeout time.Duration

	Now  func() time.Time // wall clock for the clock wait and the lifecycle (nil: Clock.Now)
	Rand func() float64   // jitter in [0,1)
	// Clock is the agent's clock: sampling cadence, send back-off and the
	// wall and monotonic readings of samples held until the clock is set.
	// nil: the system clock.
	Clock agent.Clock
}

// Config configures a Daemon.
type Config struct {
	// Tracker is the loaded, validated configuration (config.Load).
	Tracker         *config.Config
	FirmwareVersion string
	Logger          *slog.Logger // nil discards
	Notifier        Notifier     // nil: Systemd{}
	// OpenI2C opens the BME280's bus by name; nil uses periph's registry
	// (main must have run host.Init).
	OpenI2C func(name string) (i2c.BusCloser, error)
	Tuning  Tuning
}

// Daemon is one run of the tracker. Create it with New and call Run once.
type Daemon struct {
	cfg    Config
	tc     *config.Config
	t      Tuning
	log    *slog.Logger
	notify Notifier

	running   atomic.Bool
	started   chan struct{} // closed once agent and prov are set
	firstConn chan struct{} // closed on the first hub connection
	firstOnce sync.Once
	wake      chan struct{} // recompute the STATUS= line
	lcAlive   atomic.Bool   // the provisioning goroutine runs

	mu     sync.Mutex
	agent  *agent.Agent
	prov   *lifecycle.Provisioner
	client *iothub.Client // current hub session, nil when none
	tls    *tls.Config    // client TLS for the hub: device chain, server roots
	note   string         // overrides the status line (clock wait)
	queue  *queue.Queue   // set with agent
}

// New checks cfg and returns a Daemon ready to Run.
func New(cfg Config) (*Daemon, error) {
	if cfg.Tracker == nil {
		return nil, errors.New("daemon: no tracker config")
	}
	if err := cfg.Tracker.Validate(); err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Notifier == nil {
		cfg.Notifier = Systemd{}
	}
	t := cfg.Tuning
	if t.ReadyWait <= 0 {
		t.ReadyWait = DefaultReadyWait
	}
	if t.StatusInterval <= 0 {
		t.StatusInterval = DefaultStatusInterval
	}
	if t.Clock == nil {
		t.Clock = agent.SystemClock()
	}
	if t.Now == nil {
		t.Now = t.Clock.Now
	}
	if t.RetryMin <= 0 {
		t.RetryMin = cfg.Tracker.ReprovisionRetry.MinDuration()
	}
	if t.RetryMax <= 0 {
		t.RetryMax = cfg.Tracker.ReprovisionRetry.MaxDuration()
	}
	return &Daemon{
		cfg:       cfg,
		tc:        cfg.Tracker,
		t:         t,
		log:       cfg.Logger,
		notify:    cfg.Notifier,
		started:   make(chan struct{}),
		firstConn: make(chan struct{}),
		wake:      make(chan struct{}, 1),
	}, nil
}

// Run starts the daemon and blocks until ctx ends (then it shuts down
// cleanly and returns nil) or a start-up step fails for good.
func (d *Daemon) Run(ctx context.Context) error {
	if !d.running.CompareAndSwap(false, true) {
		return errors.New("daemon: Run called twice")
	}
	tc := d.tc

	// Identity first: a refusal here is final. Validity is judged at the
	// clock floor at the earliest, so a board still in 1970 gets to the
	// clock wait instead of failing with "not yet valid".
	floor := lifecycle.ClockFloor(tc.CertFile)
	checkAt := d.t.Now()
	if checkAt.Before(floor) {
		checkAt = floor
	}
	id, err := certs.LoadIdentity(tc.CertFile, tc.KeyFile, checkAt)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrIdentity, err)
	}
	roots, err := certs.ServerRoots(tc.CAFile)
	if err != nil {
		return fmt.Errorf("%w: trust roots: %w", ErrIdentity, err)
	}
	d.log.Info("device identity", "registration_id", id.RegistrationID,
		"sha256", id.FingerprintSHA256, "not_after", id.Leaf.NotAfter.UTC().Format(time.RFC3339),
		"chain", 1+len(id.Intermediates))

	if err := os.MkdirAll(tc.StateDir, 0o700); err != nil {
		return fmt.Errorf("daemon: state directory: %w", err)
	}
	qpath := filepath.Join(tc.StateDir, QueueFile)
	// Recover: a queue.db damaged by the SD card is moved aside and
	// replaced (queue logs it at ERROR) rather than failing every start
	// while systemd restarts us forever. Sequence numbers stay unique.
	q, err := queue.Open(qpath, queue.Options{
		MaxCount: tc.Queue.MaxMessages, MaxBytes: tc.Queue.MaxBytes, Logger: d.log,
		Recover: true, Now: d.t.Now,
	})
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	n, b := q.Len()
	d.log.Info("queue opened", "path", qpath, "queued", n, "bytes", b, "dropped", q.Dropped(),
		"max_messages", tc.Queue.MaxMessages, "max_bytes", tc.Queue.MaxBytes,
		"recovered", q.Recovered() != nil)

	sens, err := d.openSensors(ctx, seedFor(id.RegistrationID))
	if err != nil {
		q.Close()
		return fmt.Errorf("daemon: %w", err)
	}

	wd, err := health.NewWatchdog(health.WatchdogOptions{Interval: d.t.WatchdogInterval, Logger: d.log})
	if err != nil {
		sens.close()
		q.Close()
		return fmt.Errorf("daemon: %w", err)
	}
	threshold := tc.TemperatureAlertThreshold
	// The TLS floor doubles as the floor for sample timestamps: a clock
	// that cannot be trusted for certificates cannot date readings either.
	// Should only the certificate's NotBefore be ahead of a correct clock,
	// holding costs a delay, not accuracy: re-stamping from the monotonic
	// clock gives the same times.
	a, err := agent.New(agent.Config{
		DeviceID:        id.RegistrationID,
		FirmwareVersion: d.cfg.FirmwareVersion,
		Env:             sens.env,
		GPS:             sens.gps,
		Queue:           queueAdapter{q},
		Publisher:       hubLink{d},
		Reporter:        hubLink{d},
		Logger:          d.log,
		Clock:           d.t.Clock,
		ClockFloor:      floor,
		TelemetryDelay:  tc.TelemetryInterval(),
		AlertThreshold:  &threshold,
		EnvSource:       sens.envSource,
		FlushTimeout:    d.t.FlushTimeout,
		BackoffMin:      d.t.SendBackoffMin,
		BackoffMax:      d.t.SendBackoffMax,
		ReportInterval:  d.t.ReportInterval,
		BeatInterval:    d.t.BeatInterval,
		Beat: func() {
			// Only a daemon whose parts are all alive keeps systemd's
			// watchdog quiet.
			if d.lcAlive.Load() {
				wd.Beat()
			}
		},
	})
	if err != nil {
		sens.close()
		q.Close()
		return fmt.Errorf("daemon: %w", err)
	}
	p, err := lifecycle.New(lifecycle.Config{
		Identity: id,
		TLS:      certs.TLSConfig(id, roots, ""), // each client sets its own ServerName
		DPS: dps.Config{
			Endpoint: tc.DPSEndpoint, IDScope: tc.IDScope,
			BackoffBase: d.t.DPSBackoffBase, BackoffMax: d.t.DPSBackoffMax,
			MaxWait: d.t.DPSMaxWait, ResponseTimeout: d.t.DPSResponseTimeout,
			ConnectTimeout: d.t.DPSConnectTimeout, MaxAttempts: d.t.DPSMaxAttempts,
			Rand: d.t.Rand,
		},
		StateDir:    tc.StateDir,
		RetryMin:    d.t.RetryMin,
		RetryMax:    d.t.RetryMax,
		BackoffBase: d.t.BackoffBase,
		BackoffMax:  d.t.BackoffMax,
		HubGiveUp:   d.t.HubGiveUp,
		Logger:      d.log,
		Now:         d.t.Now,
		Rand:        d.t.Rand,
		OnStatus:    func(lifecycle.Status) { signal(d.wake) },
	})
	if err != nil {
		sens.close()
		q.Close()
		return fmt.Errorf("daemon: %w", err)
	}
	d.mu.Lock()
	d.agent, d.prov, d.queue = a, p, q
	d.tls = certs.TLSConfig(id, roots, "")
	d.mu.Unlock()
	close(d.started)

	// Sampling, the hub lifecycle and the bookkeeping each get their own
	// context: at shutdown sampling stops first, the agent flushes over the
	// still-open hub session, and only then does the session close.
	bg := context.WithoutCancel(ctx)
	agentCtx, stopAgent := context.WithCancel(bg)
	lcCtx, stopLC := context.WithCancel(bg)
	auxCtx, stopAux := context.WithCancel(bg)
	defer stopAgent()
	defer stopLC()
	defer stopAux()

	agentDone := make(chan error, 1)
	go func() { agentDone <- a.Run(agentCtx) }()
	d.lcAlive.Store(true)
	lcDone := make(chan error, 1)
	go func() {
		defer d.lcAlive.Store(false)
		lcDone <- d.provision(lcCtx, p)
	}()
	var aux sync.WaitGroup
	aux.Go(func() { wd.Run(auxCtx) })
	aux.Go(func() { d.statusLoop(auxCtx) })
	aux.Go(func() { d.readyLoop(auxCtx) })

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-lcDone:
		lcDone = nil
		runErr = err
		if runErr == nil {
			runErr = errors.New("daemon: provisioning stopped")
		}
	case err := <-agentDone:
		agentDone = nil
		runErr = fmt.Errorf("daemon: agent stopped: %w", err)
	}

	n, _ = q.Len()
	d.log.Info("stopping", "queued", n, "cause", context.Cause(ctx), "err", runErr)
	if err := d.notify.Stopping(); err != nil {
		d.log.Warn("notify stopping", "err", err)
	}
	d.notifyStatus(fmt.Sprintf("stopping: flushing %d queued", n))
	stopAgent()
	if agentDone != nil {
		<-agentDone
	}
	stopLC()
	if lcDone != nil {
		<-lcDone
	}
	stopAux()
	aux.Wait()
	sens.close()
	n, _ = q.Len()
	if err := q.Close(); err != nil {
		d.log.Error("closing queue", "err", err)
	}
	d.log.Info("stopped", "left_queued", n)
	return runErr
}

// provision waits for a plausible clock, re-checks the identity against it
// and runs the lifecycle until ctx ends.
func (d *Daemon) provision(ctx context.Context, p *lifecycle.Provisioner) error {
	tc := d.tc
	floor := lifecycle.ClockFloor(tc.CertFile)
	if d.t.Now().Before(floor) {
		d.setNote("waiting for the clock (time sync) before TLS")
	}
	if err := lifecycle.WaitForClock(ctx, d.t.Now, floor, d.t.ClockPoll, d.log); err != nil {
		return nil // only ctx ends the wait
	}
	d.setNote("")
	if _, err := certs.LoadIdentity(tc.CertFile, tc.KeyFile, d.t.Now()); err != nil {
		return fmt.Errorf("%w: %w", ErrIdentity, err)
	}
	err := p.Run(ctx, lifecycle.ConnectorFunc(d.connect))
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// connect opens one hub session for the lifecycle: the client feeds the
// agent (link state, desired properties) and answers the direct methods.
func (d *Daemon) connect(ctx context.Context, as cache.Assignment) (lifecycle.Session, error) {
	var c *iothub.Client
	cfg := iothub.Config{
		Hub: as.Hub, DeviceID: as.DeviceID,
		TLS:                d.tls,
		Logger:             d.log,
		OnDesired:          d.onDesired,
		OnState:            func(sc iothub.StateChange) { d.onState(c, sc) },
		OperationTimeout:   d.t.HubOperationTimeout,
		ConnectTimeout:     d.t.HubConnectTimeout,
		BackoffBase:        d.t.HubBackoffBase,
		BackoffMax:         d.t.HubBackoffMax,
		StableAfter:        d.t.HubStableAfter,
		NotAuthorizedLimit: d.t.HubNotAuthorizedLimit,
		TakeoverThreshold:  d.t.HubTakeoverThreshold,
		KeepAlive:          d.t.HubKeepAlive,
		Rand:               d.t.Rand,
	}
	c, err := iothub.New(cfg)
	if err != nil {
		return nil, err
	}
	c.HandleMethod(MethodGetStatus, d.methodGetStatus)
	c.HandleMethod(MethodSendNow, d.methodSendNow)
	d.mu.Lock()
	d.client = c
	d.mu.Unlock()
	if err := c.Connect(ctx); err != nil {
		d.drop(c)
		c.Close()
		return nil, err
	}
	d.agent.SetProvisioned(d.prov.Status().LastProvisioned)
	return session{c, d}, nil
}

// session ends the daemon's use of a client when the lifecycle closes it.
type session struct {
	*iothub.Client
	d *Daemon
}

func (s session) Close() error {
	err := s.Client.Close()
	s.d.drop(s.Client)
	return err
}

// drop forgets c as the current session.
func (d *Daemon) drop(c *iothub.Client) {
	d.mu.Lock()
	if d.client == c {
		d.client = nil
	}
	d.mu.Unlock()
	d.agent.SetConnected(false)
	signal(d.wake)
}

func (d *Daemon) current() *iothub.Client {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.client
}

// onState mirrors the hub link into the agent. Events of a client that is
// no longer current are stale and ignored.
func (d *Daemon) onState(c *iothub.Client, sc iothub.StateChange) {
	if d.current() != c {
		return
	}
	up := sc.State == iothub.StateConnected
	d.agent.SetConnected(up)
	if up {
		d.firstOnce.Do(func() { close(d.firstConn) })
	}
	signal(d.wake)
}

// setNote sets (or clears, with "") a status line that overrides the
// lifecycle's.
func (d *Daemon) setNote(s string) {
	d.mu.Lock()
	d.note = s
	d.mu.Unlock()
	signal(d.wake)
}

// readyLoop sends READY=1 on the first hub connection or after ReadyWait.
func (d *Daemon) readyLoop(ctx context.Context) {
	t := time.NewTimer(d.t.ReadyWait)
	defer t.Stop()
	reason := "connected to the hub"
	select {
	case <-ctx.Done():
		return
	case <-d.firstConn:
	case <-t.C:
		reason = "no hub connection yet; running offline, readings are queued"
	}
	if err := d.notify.Ready(); err != nil {
		d.log.Warn("notify ready", "err", err)
	}
	d.log.Info("ready", "reason", reason)
}

// statusLoop keeps the STATUS= line current.
func (d *Daemon) statusLoop(ctx context.Context) {
	t := time.NewTicker(d.t.StatusInterval)
	defer t.Stop()
	last := ""
	for {
		if line := d.statusLine(); line != last {
			d.notifyStatus(line)
			last = line
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-d.wake:
		}
	}
}

func (d *Daemon) notifyStatus(line string) {
	if err := d.notify.Status(line); err != nil {
		d.log.Warn("notify status", "err", err)
	}
}

func (d *Daemon) statusLine() string {
	d.mu.Lock()
	note := d.note
	d.mu.Unlock()
	st, err := d.Status()
	if err != nil {
		return "starting"
	}
	return StatusLine(note, st.Lifecycle, st.StatusReport, d.t.Now())
}

// Status is the daemon's state: the agent's report and the lifecycle's.
// It is what the getStatus direct method answers.
type Status struct {
	agent.StatusReport
	Lifecycle lifecycle.Status `json:"lifecycle"`
	// QueueRecovered is set when the queue database was corrupt at this
	// start and replaced by an empty one; what it held is lost.
	QueueRecovered *queue.Recovery `json:"queueRecovered,omitempty"`
}

// Status returns the current state, or ErrNotStarted before Run set up
// the agent.
func (d *Daemon) Status() (Status, error) {
	select {
	case <-d.started:
	default:
		return Status{}, ErrNotStarted
	}
	return Status{StatusReport: d.agent.Status(), Lifecycle: d.prov.Status(), QueueRecovered: d.queue.Recovered()}, nil
}

// SendNow samples at once and queues the message (the sendNow method).
func (d *Daemon) SendNow(ctx context.Context) (agent.Queued, error) {
	select {
	case <-d.started:
	default:
		return agent.Queued{}, ErrNotStarted
	}
	return d.agent.SendNow(ctx)
}

// Started is closed once Run has set up the agent and the lifecycle.
func (d *Daemon) Started() <-chan struct{} { return d.started }

func seedFor(id string) int64 {
	h := fnv.New64a()
	h.Write([]byte(id))
	return int64(h.Sum64() >> 1)
}

// signal wakes whoever waits on ch without blocking.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
