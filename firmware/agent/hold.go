package agent

import (
	"context"
	"log/slog"
	"time"
)

// clockSet says whether the wall-clock reading now is to be believed.
func (a *Agent) clockSet(now time.Time) bool {
	return a.cfg.ClockFloor.IsZero() || !now.Before(a.cfg.ClockFloor)
}

// hold keeps a sample whose wall time is implausible, dropping the oldest
// held one beyond HoldMax.
func (a *Agent) hold(h heldSample) {
	a.mu.Lock()
	first := !a.st.holding
	a.st.holding = true
	a.st.held = append(a.st.held, h)
	var dropped *heldSample
	if len(a.st.held) > a.cfg.HoldMax {
		d := a.st.held[0]
		dropped = &d
		a.st.held[0] = heldSample{}
		a.st.held = a.st.held[1:]
		a.st.heldDropped++
	}
	n, nDropped := len(a.st.held), a.st.heldDropped
	a.mu.Unlock()
	a.noteEnv(h.s)
	if first {
		a.log.Warn("wall clock not set yet; holding samples in memory until it is, to queue them with their true time",
			"clock", h.s.Time.UTC().Format(time.RFC3339), "need_at_least", a.cfg.ClockFloor.UTC().Format(time.RFC3339),
			"max_held", a.cfg.HoldMax)
	}
	if dropped != nil {
		// Like sensorFailed: a clock that never comes would flood the journal.
		level := slog.LevelDebug
		if nDropped == 1 || nDropped%100 == 0 {
			level = slog.LevelWarn
		}
		a.log.Log(context.Background(), level, "too many samples held for the clock; oldest dropped",
			"taken", dropped.s.Time.UTC().Format(time.RFC3339), "held", n, "dropped", nDropped)
	}
	a.log.Debug("sample held until the clock is set", "held", n)
}

// releaseHeld queues the held samples, oldest first, once the wall clock is
// set. Each gets its true time: the wall clock now, less the monotonic time
// elapsed since it was taken. A held sample leaves the holding area only
// after its Append, so Status never misses it in between.
func (a *Agent) releaseHeld() {
	now, mono := a.clock.Now(), a.clock.Monotonic()
	if !a.clockSet(now) {
		return
	}
	a.mu.Lock()
	holding := a.st.holding
	a.st.holding = false
	a.mu.Unlock()
	if !holding {
		return
	}
	var released int
	var first, last time.Time
	for {
		a.mu.Lock()
		if len(a.st.held) == 0 {
			a.mu.Unlock()
			break
		}
		h := a.st.held[0]
		a.mu.Unlock()

		h.s.Time = now.Add(-(mono - h.mono))
		if released == 0 {
			first = h.s.Time
		}
		last = h.s.Time
		if _, err := a.enqueue(h.s, h.threshold); err == nil {
			released++
		}

		a.mu.Lock()
		a.st.held[0] = heldSample{} // let go of its Position
		a.st.held = a.st.held[1:]
		a.mu.Unlock()
	}
	a.mu.Lock()
	a.st.held = nil
	dropped := a.st.heldDropped
	a.mu.Unlock()
	a.log.Info("wall clock set; held samples queued with their true time",
		"clock", now.UTC().Format(time.RFC3339), "queued", released,
		"first", first.UTC().Format(time.RFC3339), "last", last.UTC().Format(time.RFC3339),
		"dropped_while_held", dropped)
	signal(a.wakeReporter)
}

func (a *Agent) heldCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.st.held)
}
