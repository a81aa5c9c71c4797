package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/reefer/tracker/firmware/command"
)

// CommandRecord keeps the command record across restarts
// (firmware/command.File). Save must be durable when it returns: a command
// is acknowledged to the hub after it.
type CommandRecord interface {
	Load() (command.Record, error)
	Save(command.Record) error
}

// memRecord keeps the record in memory when Config.Commands is nil.
type memRecord struct{ r command.Record }

func (m *memRecord) Load() (command.Record, error) { return m.r, nil }
func (m *memRecord) Save(r command.Record) error   { m.r = r; return nil }

// loadCommands restores the record at start. A record that cannot be read
// must not stop a tracker at sea: it starts without one, and says so.
func (a *Agent) loadCommands() {
	r, err := a.cfg.Commands.Load()
	if err != nil {
		a.log.Error("command record unreadable; starting without an interval override", "err", err)
		return
	}
	a.st.override, a.st.lastCmd, a.st.handledCmds = r.Override, r.Last, r.Handled
	if o := r.Override; o != nil {
		a.log.Info("telemetry interval override restored", "seconds", o.Seconds, "until", o.Until, "command", o.MessageID)
	}
}

// HandleCommand carries out one cloud-to-device command (firmware/command
// and docs/commands.md) and records its outcome, which the lastCommand
// reported property carries. It returns nil once the command is done, or
// rejected, and its effect and outcome are on disk: the caller then
// acknowledges the message, which completes it at the hub (docs/protocol.md B.4). An
// error means it could not be carried out or recorded now: the message is
// left unacknowledged and the hub delivers it again.
//
// A rejected command (not JSON, unknown, bad parameters) returns nil: MQTT
// cannot reject a message (docs/protocol.md B.4), and one never acknowledged would be
// delivered again at every reconnect until it expires, and rejected again
// each time.
//
// Delivery is at least once: a connection that drops between the record
// and the acknowledgement brings the message again on the next one. The
// message ids of recent commands done or rejected are on disk with the
// record (command.Record.Handled), so such a message is acknowledged and
// logged as a duplicate, not carried out again.
func (a *Agent) HandleCommand(ctx context.Context, messageID string, body []byte) error {
	a.cmdMu.Lock()
	defer a.cmdMu.Unlock()
	a.mu.Lock()
	dup := a.recordLocked().WasHandled(messageID)
	a.mu.Unlock()
	if dup {
		a.log.Info("command duplicate: delivered again, already handled; acknowledged, not carried out again", "id", messageID)
		return nil
	}
	out := command.Outcome{MessageID: messageID, At: a.clock.Now()}
	cmd, err := command.Parse(body)
	if err != nil {
		out.Command, out.Status, out.Detail = claimedName(body), command.StatusRejected, err.Error()
		a.log.Warn("command rejected", "id", messageID, "command", out.Command, "err", err)
		return a.finish(out, nil, false)
	}
	out.Command = cmd.Name
	a.log.Info("command received", "id", messageID, "command", cmd.Name)
	switch cmd.Name {
	case command.SendNow:
		m, err := a.SendNow(ctx)
		switch {
		case errors.Is(err, ErrHeld):
			out.Detail = "reading taken; held until the clock is set, then queued"
		case err != nil:
			return a.failed(out, err)
		default:
			out.Detail = fmt.Sprintf("reading queued as %s (seq %d)", m.ID, m.Seq)
		}
	case command.SetTelemetryInterval:
		o := &command.Override{Seconds: cmd.Seconds, MessageID: messageID}
		out.Detail = fmt.Sprintf("telemetry interval %vs until further notice", cmd.Seconds)
		if cmd.For > 0 {
			o.Until = out.At.Add(cmd.For).UTC()
			out.Detail = fmt.Sprintf("telemetry interval %vs until %s, then the twin's telemetryDelay", cmd.Seconds, o.Until.Format(time.RFC3339))
		}
		return a.finish(out, o, true)
	case command.ClearTelemetryInterval:
		a.mu.Lock()
		had, delay := a.st.override != nil, a.st.interval
		a.mu.Unlock()
		out.Detail = fmt.Sprintf("no override was in force; telemetry interval %vs", delay.Seconds())
		if had {
			out.Detail = fmt.Sprintf("override ended; the twin's telemetryDelay %vs applies", delay.Seconds())
		}
		return a.finish(out, nil, true)
	case command.FlushQueue:
		n, _ := a.cfg.Queue.Len()
		// The sender takes a link signal as the end of any back-off: it
		// sends at once whatever is queued.
		signal(a.connSender)
		out.Detail = fmt.Sprintf("%d queued; sending now (connected: %v)", n, a.connected())
	case command.ReportStatus:
		out.Detail = "reported properties refreshed"
	}
	return a.finish(out, nil, false)
}

// failed records a command that could not be carried out now and returns
// why; the hub delivers it again.
func (a *Agent) failed(out command.Outcome, err error) error {
	out.Status, out.Detail = command.StatusFailed, err.Error()+"; the hub delivers the command again"
	a.log.Warn("command failed, left for redelivery", "id", out.MessageID, "command", out.Command, "err", err)
	if serr := a.finish(out, nil, false); serr != nil {
		return errors.Join(fmt.Errorf("command %s: %w", out.Command, err), serr)
	}
	return fmt.Errorf("command %s: %w", out.Command, err)
}

// finish records out (status done unless set) and, when setOverride, the
// new interval override (nil ends it), on disk first and then in force.
func (a *Agent) finish(out command.Outcome, o *command.Override, setOverride bool) error {
	if out.Status == "" {
		out.Status = command.StatusDone
	}
	a.recMu.Lock()
	defer a.recMu.Unlock()
	a.mu.Lock()
	rec := a.recordLocked()
	rec.Last = &out
	if setOverride {
		rec.Override = o
	}
	a.mu.Unlock()
	rec = rec.Remember(out)
	if err := a.cfg.Commands.Save(rec); err != nil {
		a.log.Error("command record not saved; the hub delivers the command again", "id", out.MessageID, "err", err)
		// Not in force, but the operator sees why (in memory only).
		if out.Status != command.StatusFailed {
			out.Status, out.Detail = command.StatusFailed, "not saved: "+err.Error()+"; the hub delivers the command again"
		}
		a.mu.Lock()
		a.st.lastCmd = &out
		a.mu.Unlock()
		signal(a.wakeReporter)
		return fmt.Errorf("command %s: %w", out.Command, err)
	}
	a.setRecord(rec)
	if out.Status == command.StatusDone {
		a.log.Info("command done", "id", out.MessageID, "command", out.Command, "detail", out.Detail)
	}
	return nil
}

// setRecord puts a saved record in force. Caller holds recMu.
func (a *Agent) setRecord(rec command.Record) {
	a.mu.Lock()
	before := a.effectiveLocked()
	a.st.override, a.st.lastCmd, a.st.handledCmds = rec.Override, rec.Last, rec.Handled
	changed := a.effectiveLocked() != before
	a.mu.Unlock()
	if changed {
		signal(a.intervalChanged)
	}
	// The override or its end is armed by the sampler on this signal too.
	signal(a.overrideChanged)
	signal(a.wakeReporter)
}

// expireOverride ends a timed override that is over; the twin's
// telemetryDelay applies again. It says whether it ended one.
func (a *Agent) expireOverride() bool {
	a.recMu.Lock()
	defer a.recMu.Unlock()
	a.mu.Lock()
	o := a.st.override
	rec := a.recordLocked()
	rec.Override = nil
	a.mu.Unlock()
	if o == nil || !o.Ended(a.clock.Now()) {
		return false
	}
	if err := a.cfg.Commands.Save(rec); err != nil {
		// In force in memory all the same: the period is over. A restart
		// before a save succeeds finds it over too.
		a.log.Error("command record not saved at the end of the interval override", "err", err)
	}
	a.setRecord(rec)
	a.log.Info("telemetry interval override ended; the twin's telemetryDelay applies", "command", o.MessageID,
		"until", o.Until, "interval", a.interval())
	return true
}

// recordLocked is the command record in force. Caller holds mu.
func (a *Agent) recordLocked() command.Record {
	return command.Record{Override: a.st.override, Last: a.st.lastCmd, Handled: a.st.handledCmds}
}

// overrideUntil is when the override in force ends; zero when there is
// none or it has no end.
func (a *Agent) overrideUntil() time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.st.override == nil {
		return time.Time{}
	}
	return a.st.override.Until
}

// effectiveLocked is the interval in force: an override's, else the
// twin's (or configured) telemetryDelay. Caller holds mu.
func (a *Agent) effectiveLocked() time.Duration {
	if a.st.override != nil {
		return a.st.override.Interval()
	}
	return a.st.interval
}

// claimedName is the "command" a rejected message gave, for the outcome.
func claimedName(body []byte) string {
	var w struct {
		Command any `json:"command"`
	}
	if json.Unmarshal(body, &w) != nil {
		return ""
	}
	if s, ok := w.Command.(string); ok && len(s) <= 64 {
		return s
	}
	return ""
}
