package doctor

import (
	"context"
	"crypto/tls"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/reefer/tracker/firmware/config"
	"github.com/reefer/tracker/firmware/lifecycle"
	"github.com/reefer/tracker/firmware/queue"
	"github.com/reefer/tracker/firmware/sensorcheck"
	"github.com/reefer/tracker/provisioning/certs"
)

// Inputs are everything Run needs. Zero values take the real thing (the
// system clock, DNS, TCP, the hub), so tests replace only what they must.
type Inputs struct {
	// Config is the configuration in use (the agent passes its own). When
	// nil, Run loads ConfigPath with Getenv and Overrides like the tracker
	// does at start, and reports the outcome as the first check.
	Config     *config.Config
	ConfigPath string
	Getenv     func(string) string
	Overrides  config.Overrides

	// Sensors takes one reading of each sensor, probing ("auto" opened as
	// hardware, firmware/sensors Options.Probe). Nil, or SkipSensors,
	// skips the sensor checks.
	Sensors     func(ctx context.Context, c *config.Config) sensorcheck.Report
	SkipSensors bool
	// Offline skips the checks that use the network (DPS, hub).
	Offline bool

	Now func() time.Time
	// BuildTime is when the firmware was built (zero if unknown): the clock
	// cannot be right before it.
	BuildTime time.Time
	// Synced reports NTP synchronisation; nil means SystemClockSynced.
	Synced   func() (bool, error)
	Resolver Resolver // nil: net.DefaultResolver
	Dialer   Dialer   // nil: a net.Dialer
	ProbeHub HubProbe // nil: iothub.Probe
	// QueuePath is the queue database; "" is DefaultQueueFile in stateDir.
	QueuePath string
	// RunningQueue, from the running tracker, replaces opening the queue
	// database (which the tracker holds locked): the queue check judges
	// these figures and the hub check is skipped as for a running tracker.
	RunningQueue *QueueFigures
	// Timeout bounds each network check; 0 is DefaultTimeout.
	Timeout time.Duration
	Logger  *slog.Logger // nil discards
}

// Run runs the checks in order: config; key file and certificate (id,
// chain, dates); clock; env sensor and GPS; DPS endpoint; cached
// assignment and hub; queue. A check that cannot run (config unreadable,
// --offline, no assignment, the running tracker owns the hub connection)
// is listed in Report.Skipped with the reason.
func Run(ctx context.Context, in Inputs) Report {
	now := time.Now
	if in.Now != nil {
		now = in.Now
	}
	log := in.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := Report{Time: now().UTC()}

	// 1. Config.
	c := in.Config
	if c == nil {
		var ck Check
		c, ck = CheckConfig(in.ConfigPath, in.Getenv, in.Overrides)
		r.add(ck)
	} else {
		p := c.Path()
		if p == "" {
			p = "(built in)"
		}
		r.add(Check{Name: "config", Status: OK, Detail: p + " loaded by the running tracker"})
	}
	if c == nil {
		// The clock needs no config, and is a common cause of trouble.
		floor, why := lifecycle.Floor(in.BuildTime, time.Time{})
		r.add(CheckClock(now(), floor, why, in.Synced))
		for _, n := range []string{"certificate", "sensors", "dps endpoint", "hub", "queue"} {
			r.skip(n, "the config file must load first")
		}
		return r
	}

	// 2. Key and certificate; the hub certificate when DPS issues it.
	cr := CheckCertificate(c.CertFile, c.KeyFile, now())
	for _, ck := range cr.Checks {
		r.add(ck)
	}
	hubID := cr.Identity
	if c.CertificateIssuance.Enabled {
		var ck Check
		ck, hubID = CheckOperational(c.StateDir, c.CertificateIssuance.RenewAt, now())
		r.add(ck)
	}

	// 3. Clock.
	// The same floor the daemon waits for (lifecycle.ClockFloor), so the
	// doctor never calls a clock OK that the tracker still waits on.
	var notBefore time.Time
	if cr.Leaf != nil {
		notBefore = cr.Leaf.NotBefore
	}
	floor, floorWhat := lifecycle.Floor(in.BuildTime, notBefore)
	r.add(CheckClock(now(), floor, floorWhat, in.Synced))

	// 4, 5. Sensors.
	if in.SkipSensors || in.Sensors == nil {
		r.skip("sensors", "skipped on request")
	} else {
		rep := in.Sensors(ctx, c)
		r.add(CheckEnv(c.Sensors.Env, rep))
		r.add(CheckGPS(c.Sensors.GPS, rep))
	}

	// 8 is probed before 7: a running tracker owns the hub connection.
	qpath := in.QueuePath
	if qpath == "" {
		qpath = filepath.Join(c.StateDir, DefaultQueueFile)
	}
	qopts := queue.Options{MaxCount: c.Queue.MaxMessages, MaxBytes: c.Queue.MaxBytes, Logger: log}
	var qck Check
	var running bool
	if in.RunningQueue != nil {
		qck, running = QueueCheck(*in.RunningQueue, qopts), true
	} else {
		qck, running = CheckQueue(qpath, qopts)
	}

	// 6. DPS endpoint.
	var tlsCfg, hubTLS *tls.Config
	if !in.Offline && cr.Identity != nil {
		roots, err := certs.ServerRoots(c.CAFile)
		if err != nil {
			r.add(Check{Name: "dps endpoint", Status: Fail, Detail: err.Error(),
				Fix: "caFile must be a PEM file of trust roots; leave it out to trust Azure's"})
		} else {
			tlsCfg = certs.TLSConfig(cr.Identity, roots, "")
			if hubID != nil {
				hubTLS = certs.TLSConfig(hubID, roots, "")
			}
		}
	}
	switch {
	case in.Offline:
		r.skip("dps endpoint", "--offline")
	case cr.Identity == nil:
		r.skip("dps endpoint", "no usable device certificate")
	case tlsCfg != nil:
		r.add(CheckDPS(ctx, c.DPSEndpoint, tlsCfg, in.Resolver, in.Dialer, in.Timeout))
	}

	// 7. Cached assignment and hub.
	fp := ""
	if hubID != nil {
		fp = hubID.FingerprintSHA256 // the cache is bound to the hub's certificate
	}
	ack, a := CheckAssignment(c.StateDir, fp, now())
	r.add(ack)
	switch {
	case in.Offline:
		r.skip("hub", "--offline")
	case a == nil:
		r.skip("hub", "no cached assignment for this certificate")
	case running:
		// docs/protocol.md B.7: a second connection as the same device knocks the
		// tracker's own off.
		r.skip("hub", "the running tracker is connected as this device; a second connection would knock it off")
	case hubTLS == nil:
		r.skip("hub", "no usable TLS configuration (see above)")
	default:
		r.add(CheckHub(ctx, a.Hub, a.DeviceID, hubTLS, in.ProbeHub, in.Timeout))
	}

	// 8. Queue.
	r.add(qck)
	return r
}
