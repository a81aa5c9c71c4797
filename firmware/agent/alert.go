package agent

import (
	"context"
	"time"

	"github.com/reefer/tracker/firmware/telemetry"
)

// DefaultAlertCheck is how often the sensors are read between messages to
// watch for an excursion: a temperature alert must not wait for the next
// message, which may be an hour away.
const DefaultAlertCheck = 5 * time.Second

// alerts is the alert state, guarded by Agent.mu: the temperature
// excursion with its debounce, and the sensors' loss.
type alerts struct {
	hysteresis  float64
	minDuration time.Duration

	// temp is the temperature alert; pending, when set, is when the
	// readings began to say otherwise (monotonic, and wall).
	temp        bool
	pending     bool
	pendingMono time.Duration
	pendingWall time.Time

	env, gps bool // sensor lost
	// unsent are alerts not queued yet (the clock is not set, or the queue
	// failed), oldest first; their times are fixed when queued.
	unsent []heldAlert
}

// heldAlert is an alert whose wall times are to be worked out from the
// monotonic clock once it is queued.
type heldAlert struct {
	a                   telemetry.Alert
	monoTime, monoSince time.Duration
}

// state is each alert, in force or not.
func (al *alerts) state() map[string]bool {
	return map[string]bool{
		string(telemetry.AlertTemperature): al.temp,
		string(telemetry.AlertEnvSensor):   al.env,
		string(telemetry.AlertGPS):         al.gps,
	}
}

// any says whether an alert is in force.
func (al *alerts) any() bool { return al.temp || al.env || al.gps }

// watch reads the env sensor between messages and evaluates the alerts
// (the sampler calls it every AlertCheck).
func (a *Agent) watch(ctx context.Context) {
	sctx, cancel := context.WithTimeout(ctx, a.cfg.SenseTimeout)
	env, err := a.cfg.Env.Sense(sctx)
	cancel()
	s := telemetry.Sample{Time: a.clock.Now(), Env: env}
	if err != nil {
		a.sensorFailed(err)
		s.EnvError = err.Error()
	} else {
		a.mu.Lock()
		a.st.consecutiveSensorErrs = 0
		a.mu.Unlock()
	}
	a.evaluateAlerts(s)
}

// envLostAfter is how many failed reads in a row make the env sensor lost,
// as drivers judge a chip dead: one glitch is not an alert.
const envLostAfter = 3

// evaluateAlerts runs the alert state machines on a reading (a message's
// or a watch's) and queues an alert message for each change.
func (a *Agent) evaluateAlerts(s telemetry.Sample) {
	mono := a.clock.Monotonic()
	var gpsProblem string
	if a.cfg.GPS != nil {
		gpsProblem = a.cfg.GPS.Problem()
	}
	a.mu.Lock()
	al := &a.st.alerts
	threshold := a.st.threshold
	var out []heldAlert
	change := func(k telemetry.AlertKind, on bool, since time.Duration, reason string) {
		h := heldAlert{a: telemetry.Alert{Kind: k, Active: on, Reason: reason, Threshold: threshold,
			Hysteresis: al.hysteresis, MinDuration: al.minDuration}, monoTime: mono, monoSince: since}
		if k == telemetry.AlertTemperature {
			t := s.Env.TemperatureC
			h.a.Temperature = &t
		}
		out = append(out, h)
	}

	if envLost := s.EnvError != "" && a.st.consecutiveSensorErrs >= envLostAfter; envLost != al.env {
		al.env = envLost
		change(telemetry.AlertEnvSensor, envLost, mono, s.EnvError)
	}
	if gpsLost := gpsProblem != ""; a.cfg.GPS != nil && gpsLost != al.gps {
		al.gps = gpsLost
		change(telemetry.AlertGPS, gpsLost, mono, gpsProblem)
	}
	if s.EnvError == "" {
		t := s.Env.TemperatureC
		// Past the mark that would change the state: above the threshold
		// while clear, below it minus the hysteresis while active.
		past := (!al.temp && t > threshold) || (al.temp && t < threshold-al.hysteresis)
		switch {
		case !past:
			al.pending = false
		case !al.pending:
			al.pending, al.pendingMono, al.pendingWall = true, mono, s.Time
		}
		if al.pending && mono-al.pendingMono >= al.minDuration {
			al.temp, al.pending = !al.temp, false
			change(telemetry.AlertTemperature, al.temp, al.pendingMono, "")
		}
	}
	al.unsent = append(al.unsent, out...)
	a.mu.Unlock()
	for _, h := range out {
		lvl, msg := a.log.Warn, "ALERT raised"
		if !h.a.Active {
			lvl, msg = a.log.Info, "alert cleared"
		}
		var temp any
		if h.a.Temperature != nil {
			temp = *h.a.Temperature
		}
		lvl(msg, "alert", h.a.Kind, "temperature", temp, "threshold", threshold,
			"hysteresis", h.a.Hysteresis, "min_duration", h.a.MinDuration, "reason", h.a.Reason)
	}
	if len(out) > 0 {
		signal(a.wakeReporter)
	}
	a.queueAlerts()
}

// queueAlerts queues the alerts not queued yet, oldest first, once the
// wall clock can date them: each is stamped now minus the monotonic time
// elapsed since it happened. A queue failure keeps the rest for the next
// reading.
func (a *Agent) queueAlerts() {
	now, mono := a.clock.Now(), a.clock.Monotonic()
	if !a.clockSet(now) {
		return
	}
	for {
		a.mu.Lock()
		if len(a.st.alerts.unsent) == 0 {
			a.mu.Unlock()
			return
		}
		h := a.st.alerts.unsent[0]
		a.mu.Unlock()
		al := h.a
		al.Time, al.Since = now.Add(h.monoTime-mono), now.Add(h.monoSince-mono)
		q, err := a.cfg.Queue.Append(func(seq uint64) (Queued, error) {
			al.Seq = seq
			m, err := telemetry.BuildAlert(a.cfg.DeviceID, al)
			if err != nil {
				return Queued{}, err
			}
			return Queued{ID: m.ID, Seq: m.Seq, Body: m.Body, Props: m.Properties, Created: m.CreatedAt}, nil
		})
		if err != nil {
			a.queueFailed("append alert", err)
			return
		}
		a.mu.Lock()
		a.st.alerts.unsent = a.st.alerts.unsent[1:]
		a.mu.Unlock()
		a.log.Info("alert queued", "id", q.ID, "seq", q.Seq, "alert", al.Kind, "active", al.Active)
		signal(a.wakeSender)
	}
}
