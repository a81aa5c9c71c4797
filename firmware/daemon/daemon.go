package daemon

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"periph.io/x/conn/v3/i2c"

	"github.com/reefer/tracker/firmware/agent"
	"github.com/reefer/tracker/firmware/command"
	"github.com/reefer/tracker/firmware/config"
	"github.com/reefer/tracker/firmware/health"
	"github.com/reefer/tracker/firmware/lifecycle"
	"github.com/reefer/tracker/firmware/model"
	"github.com/reefer/tracker/firmware/queue"
	"github.com/reefer/tracker/firmware/sensors"
	"github.com/reefer/tracker/firmware/statequeue"
	"github.com/reefer/tracker/provisioning/cache"
	"github.com/reefer/tracker/provisioning/iothub"
)

// QueueFile is the queue database's name in the state directory.
const QueueFile = "queue.db"

// CommandFile is the command record's name in the state directory: an
// interval override set by command and the last command's outcome.
const CommandFile = "commands.json"

// Direct methods the daemon answers (docs/protocol.md B.6).
const (
	MethodGetStatus = "getStatus"
	MethodSendNow   = "sendNow"
)

// PropProvisioning is the reported property carrying the lifecycle status.
const PropProvisioning = "provisioning"

// PropQueueInMemory is the reported property telling the cloud that the
// state directory is unusable and readings are kept in memory only (lost
// on a restart): since when, why, which directory. null while on disk.
const PropQueueInMemory = "queueInMemory"

// PropQueueRecovered is the reported property telling the cloud that the
// queue database was found corrupt at this start and replaced: the
// readings queued in it are lost. Absent when nothing was lost.
const PropQueueRecovered = "queueRecovered"

// Defaults of Config.
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

// Config configures a Daemon.
type Config struct {
	// Tracker is the loaded, validated configuration (config.Load).
	Tracker         *config.Config
	FirmwareVersion string
	Logger          *slog.Logger // nil discards
	Notifier        Notifier     // nil: Systemd{}
	// OpenI2C opens the BME280's bus by name; nil uses periph's registry
	// (main must have initialised periph's host drivers).
	OpenI2C func(name string) (i2c.BusCloser, error)

	// ReadyWait bounds the wait for the first hub connection before
	// READY=1. 0: DefaultReadyWait.
	ReadyWait time.Duration
	// StatusInterval is how often the STATUS= line is recomputed (it is
	// also recomputed on every lifecycle change). 0: DefaultStatusInterval.
	StatusInterval time.Duration
	// ClockPoll is how often the wait for a plausible clock looks at it.
	// 0: lifecycle.WaitForClock's default.
	ClockPoll time.Duration

	// The parts' own settings: timings that production leaves at the
	// parts' defaults and tests shorten, and the clocks tests replace.
	// The daemon sets every field it wires (identity, TLS, sensors, queue,
	// hub link, callbacks, logger, and what the tracker config holds) and
	// passes the others as given; zero values take the parts' defaults.
	//
	// Agent.Clock (nil: the system clock) is the daemon's clock too: the
	// agent's sampling cadence and held samples, and, unless Lifecycle.Now
	// is set, the wall clock of the clock wait and the lifecycle.
	// Lifecycle.RetryMin and RetryMax default to the config's
	// reprovisionRetry.
	Agent     agent.Config
	Lifecycle lifecycle.Config // DPS tuning in Lifecycle.DPS
	Hub       iothub.Config
	Watchdog  health.WatchdogOptions
	// Sensors shapes how a missing or dead sensor is reopened.
	Sensors sensors.ReopenOptions
	// StateQueue shapes the fall-back to memory when the state directory
	// is unusable (its Queue, Now, Logger and OnChange are the daemon's).
	StateQueue statequeue.Options
}

// Daemon is one run of the tracker. Create it with New and call Run once.
type Daemon struct {
	cfg    Config // with defaults
	tc     *config.Config
	now    func() time.Time
	log    *slog.Logger
	notify Notifier

	running   atomic.Bool
	started   chan struct{} // closed once p is set
	firstConn chan struct{} // closed on the first hub connection
	firstOnce sync.Once
	wake      chan struct{} // recompute the STATUS= line
	// stateChanged: the queue moved between disk and memory.
	stateChanged chan struct{}
	lcAlive      atomic.Bool // the provisioning goroutine runs

	p *parts // set before started is closed, never changed

	mu     sync.Mutex
	client *iothub.Client // current hub session, nil when none
	note   string         // overrides the status line (clock wait)
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
	if cfg.ReadyWait <= 0 {
		cfg.ReadyWait = DefaultReadyWait
	}
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = DefaultStatusInterval
	}
	if cfg.Agent.Clock == nil {
		cfg.Agent.Clock = agent.SystemClock()
	}
	if cfg.Lifecycle.Now == nil {
		cfg.Lifecycle.Now = cfg.Agent.Clock.Now
	}
	if cfg.Lifecycle.RetryMin <= 0 {
		cfg.Lifecycle.RetryMin = cfg.Tracker.ReprovisionRetry.MinDuration()
	}
	if cfg.Lifecycle.RetryMax <= 0 {
		cfg.Lifecycle.RetryMax = cfg.Tracker.ReprovisionRetry.MaxDuration()
	}
	return &Daemon{
		cfg:       cfg,
		tc:        cfg.Tracker,
		now:       cfg.Lifecycle.Now,
		log:       cfg.Logger,
		notify:    cfg.Notifier,
		started:   make(chan struct{}),
		firstConn: make(chan struct{}),
		wake:      make(chan struct{}, 1),

		stateChanged: make(chan struct{}, 1),
	}, nil
}

// parts are what Run opens, in order. Close releases whatever was opened.
type parts struct {
	dev   *Device
	queue *statequeue.Store
	sens  *openedSensors
	wd    *health.Watchdog
	agent *agent.Agent
	prov  *lifecycle.Provisioner
}

func (p *parts) Close() error {
	if p.sens != nil {
		p.sens.close()
	}
	if p.queue != nil {
		return p.queue.Close()
	}
	return nil
}

// open opens the parts: identity and trust roots, queue, sensors,
// watchdog, agent and lifecycle. On error it closes what it opened.
func (d *Daemon) open(ctx context.Context) (_ *parts, err error) {
	tc := d.tc
	p := &parts{}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()

	// Identity first: a refusal here is final.
	if p.dev, err = OpenDevice(tc, d.now()); err != nil {
		if errors.Is(err, ErrIdentity) {
			return nil, err
		}
		return nil, fmt.Errorf("daemon: %w", err)
	}
	id := p.dev.Identity
	d.log.Info("device identity", "registration_id", id.RegistrationID,
		"sha256", id.FingerprintSHA256, "not_after", id.Leaf.NotAfter.UTC().Format(time.RFC3339),
		"chain", 1+len(id.Intermediates))

	qpath := filepath.Join(tc.StateDir, QueueFile)
	// Recover: a queue.db damaged by the SD card is moved aside and
	// replaced (queue logs it at ERROR) rather than failing every start
	// while systemd restarts us forever. Sequence numbers stay unique.
	// A state directory that is read-only or gone does not stop us
	// either: readings are kept in memory, loudly, until it works again.
	so := d.cfg.StateQueue
	so.Queue = queue.Options{MaxCount: tc.Queue.MaxMessages, MaxBytes: tc.Queue.MaxBytes, Logger: d.log, Recover: true, Now: d.now}
	so.Now, so.Logger = d.now, d.log
	so.OnChange = func() { signal(d.stateChanged) }
	p.queue = statequeue.Open(qpath, so)
	q := p.queue
	n, b := q.Len()
	d.log.Info("queue opened", "path", qpath, "queued", n, "bytes", b, "dropped", q.Dropped(),
		"max_messages", tc.Queue.MaxMessages, "max_bytes", tc.Queue.MaxBytes,
		"recovered", q.Recovered() != nil)

	if p.sens, err = d.openSensors(ctx, seedFor(id.RegistrationID)); err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}

	wo := d.cfg.Watchdog
	wo.Logger = d.log
	if p.wd, err = health.NewWatchdog(wo); err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}

	threshold := tc.TemperatureAlertThreshold
	ac := d.cfg.Agent
	ac.DeviceID = id.RegistrationID
	ac.FirmwareVersion = d.cfg.FirmwareVersion
	ac.Env, ac.GPS, ac.EnvSource = p.sens.env, p.sens.gps, p.sens.envSource
	ac.Queue = queueAdapter{q}
	ac.Commands = command.File{Path: filepath.Join(tc.StateDir, CommandFile)}
	ac.Publisher, ac.Reporter = hubLink{d}, hubLink{d}
	ac.Logger = d.log
	// The TLS floor doubles as the floor for sample timestamps: a clock
	// that cannot be trusted for certificates cannot date readings either.
	// Should only the certificate's NotBefore be ahead of a correct clock,
	// holding costs a delay, not accuracy: re-stamping from the monotonic
	// clock gives the same times.
	ac.ClockFloor = p.dev.Floor
	ac.TelemetryDelay = tc.TelemetryInterval()
	ac.AlertThreshold = &threshold
	hysteresis, minDur := tc.TemperatureAlertHysteresis, tc.AlertMinDuration()
	ac.AlertHysteresis, ac.AlertMinDuration = &hysteresis, &minDur
	wd := p.wd
	ac.Beat = func() {
		// Only a daemon whose parts are all alive keeps systemd's
		// watchdog quiet.
		if d.lcAlive.Load() {
			wd.Beat()
		}
	}
	if p.agent, err = agent.New(ac); err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}

	lc := d.cfg.Lifecycle
	lc.Logger = d.log
	agt := p.agent
	lc.OnStatus = func(lifecycle.Status) {
		signal(d.wake)
		agt.Report() // the provisioning property (a renewal error) reaches the twin without waiting for the next report
	}
	if p.prov, err = p.dev.Provisioner(lc); err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	return p, nil
}

// Run starts the daemon and blocks until ctx ends (then it shuts down
// cleanly and returns nil) or a start-up step fails for good.
func (d *Daemon) Run(ctx context.Context) error {
	if !d.running.CompareAndSwap(false, true) {
		return errors.New("daemon: Run called twice")
	}
	p, err := d.open(ctx)
	if err != nil {
		return err
	}
	d.p = p
	close(d.started)

	// Sampling, the hub lifecycle and the bookkeeping are stages stopped
	// in that order: at shutdown sampling stops first, the agent flushes
	// over the still-open hub session, and only then does the session
	// close.
	g := newGroup(ctx)
	g.stage().Go(func(ctx context.Context) error {
		err := p.agent.Run(ctx)
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("daemon: agent stopped: %w", err)
	})
	d.lcAlive.Store(true)
	g.stage().Go(func(ctx context.Context) error {
		defer d.lcAlive.Store(false)
		err := d.provision(ctx, p)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			err = errors.New("daemon: provisioning stopped")
		}
		return err
	})
	aux := g.stage()
	aux.Go(func(ctx context.Context) error { p.wd.Run(ctx); return nil })
	aux.Go(func(ctx context.Context) error { d.statusLoop(ctx); return nil })
	aux.Go(func(ctx context.Context) error { d.readyLoop(ctx); return nil })
	aux.Go(func(ctx context.Context) error { d.probeState(ctx); return nil })
	aux.Go(func(ctx context.Context) error { d.watchCertificates(ctx); return nil })

	runErr := g.Wait(ctx)
	n, _ := p.queue.Len()
	d.log.Info("stopping", "queued", n, "cause", context.Cause(ctx), "err", runErr)
	if err := d.notify.Stopping(); err != nil {
		d.log.Warn("notify stopping", "err", err)
	}
	d.notifyStatus(fmt.Sprintf("stopping: flushing %d queued", n))
	g.Stop()
	n, _ = p.queue.Len()
	if err := p.Close(); err != nil {
		d.log.Error("closing queue", "err", err)
	}
	d.log.Info("stopped", "left_queued", n)
	return runErr
}

// provision waits for a plausible clock, re-checks the identity against it
// and runs the lifecycle until ctx ends.
func (d *Daemon) provision(ctx context.Context, p *parts) error {
	if d.now().Before(p.dev.Floor) {
		d.setNote("waiting for the clock (time sync) before TLS")
	}
	if err := p.dev.WaitForClock(ctx, d.now, d.cfg.ClockPoll, d.log); err != nil {
		if ctx.Err() != nil {
			return nil // only ctx ends the wait
		}
		return err
	}
	d.setNote("")
	err := p.prov.Run(ctx, lifecycle.ConnectorFunc(d.connect))
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// connect opens one hub session for the lifecycle: the client feeds the
// agent (link state, desired properties) and answers the direct methods.
func (d *Daemon) connect(ctx context.Context, as cache.Assignment) (lifecycle.Session, error) {
	var c *iothub.Client
	cfg := d.cfg.Hub
	cfg.Hub, cfg.DeviceID = as.Hub, as.DeviceID
	cfg.TLS = d.p.prov.HubTLS() // the operational certificate when DPS issues one
	if cfg.ModelID == "" {
		cfg.ModelID = model.ID // announced at CONNECT (docs/protocol.md B.1)
	}
	cfg.Logger = d.log
	cfg.OnDesired = d.onDesired
	cfg.OnC2D = d.onC2D
	cfg.OnState = func(sc iothub.StateChange) { d.onState(c, sc) }
	// A cached assignment is a hub that took this device before: retry it
	// as promptly as after a lost connection (a tracker restarted at sea
	// comes back as soon as the network does).
	cfg.KnownHub = d.p.prov.Status().FromCache
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
	d.p.agent.SetProvisioned(d.p.prov.Status().LastProvisioned)
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
	d.p.agent.SetConnected(false)
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
	d.p.agent.SetConnected(up)
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
	t := time.NewTimer(d.cfg.ReadyWait)
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
	t := time.NewTicker(d.cfg.StatusInterval)
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
	line := StatusLine(note, st.Lifecycle, st.StatusReport, d.now())
	if st.QueueInMemory != nil {
		line += "; QUEUE IN MEMORY: state directory unusable"
	}
	return line
}

// probeState checks the state directory on the queue's schedule (back to
// disk when it works again, to memory when it vanished) and reports every
// move at once.
func (d *Daemon) probeState(ctx context.Context) {
	t := time.NewTicker(d.p.queue.ProbeInterval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.p.queue.Probe()
		case <-d.stateChanged:
			signal(d.wake)
			d.p.agent.Report()
		}
	}
}

// Status is the daemon's state: the agent's report and the lifecycle's.
// It is what the getStatus direct method answers.
type Status struct {
	agent.StatusReport
	Lifecycle lifecycle.Status `json:"lifecycle"`
	// QueueRecovered is set when the queue database was corrupt at this
	// start and replaced by an empty one; what it held is lost.
	QueueRecovered *queue.Recovery `json:"queueRecovered,omitempty"`
	// QueueInMemory is set while the state directory is unusable and the
	// readings are kept in memory only.
	QueueInMemory *statequeue.Fallback `json:"queueInMemory,omitempty"`
	// Certificates says when the device's certificates expire.
	Certificates Certificates `json:"certificates"`
}

// Status returns the current state, or ErrNotStarted before Run set up
// the agent.
func (d *Daemon) Status() (Status, error) {
	select {
	case <-d.started:
	default:
		return Status{}, ErrNotStarted
	}
	return Status{StatusReport: d.p.agent.Status(), Lifecycle: d.p.prov.Status(), QueueRecovered: d.p.queue.Recovered(),
		QueueInMemory: d.p.queue.Fallback(), Certificates: d.certificates()}, nil
}

// SendNow samples at once and queues the message (the sendNow method).
func (d *Daemon) SendNow(ctx context.Context) (agent.Queued, error) {
	select {
	case <-d.started:
	default:
		return agent.Queued{}, ErrNotStarted
	}
	return d.p.agent.SendNow(ctx)
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
