package daemon

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/reefer/tracker/drivers"
	"github.com/reefer/tracker/firmware/agent"
	"github.com/reefer/tracker/firmware/lifecycle"
	"github.com/reefer/tracker/provisioning/dps"
)

// StatusLine is the one-line summary for systemd's STATUS= (shown by
// `systemctl status`): what the tracker is doing, then the queue. The
// agent's wait for the clock, or note when set, replaces the lifecycle part.
func StatusLine(note string, ls lifecycle.Status, st agent.StatusReport, now time.Time) string {
	var b strings.Builder
	retry := ""
	if !ls.NextAttempt.IsZero() {
		retry = ", retrying in " + approx(ls.NextAttempt.Sub(now))
	}
	switch {
	case st.WaitingForClock || st.Held > 0:
		fmt.Fprintf(&b, "waiting for the clock; %d %s held", st.Held, plural(st.Held, "sample", "samples"))
	case note != "":
		b.WriteString(note)
	case ls.Phase == lifecycle.PhaseConnected && st.Connected:
		fmt.Fprintf(&b, "connected to hub %s as %s", ls.Hub, ls.DeviceID)
	case ls.Phase == lifecycle.PhaseConnected:
		fmt.Fprintf(&b, "offline: reconnecting to hub %s", ls.Hub)
	case ls.Phase == lifecycle.PhaseAssigned:
		fmt.Fprintf(&b, "connecting to hub %s as %s", ls.Hub, ls.DeviceID)
	case ls.Phase == lifecycle.PhaseProvisioning:
		b.WriteString("provisioning through DPS")
	case ls.Phase == lifecycle.PhaseRefusedDisabled:
		b.WriteString("refused: enrollment disabled" + retry)
	case ls.Phase == lifecycle.PhaseRefusedUnauthorized && errors.Is(ls.Err, lifecycle.ErrHubRefused):
		b.WriteString("refused: hub " + ls.Hub + " refuses the device (identity disabled?)" + retry)
	case ls.Phase == lifecycle.PhaseRefusedUnauthorized:
		b.WriteString("refused: DPS does not accept the certificate (no enabled enrollment)" + retry)
	case ls.Phase == lifecycle.PhaseBackingOff && (errors.Is(ls.Err, dps.ErrFailed) || errors.Is(ls.Err, dps.ErrBadRequest) || errors.Is(ls.Err, dps.ErrNotFound)):
		b.WriteString("refused: DPS registration failed, check the configuration" + retry)
	case ls.Phase == lifecycle.PhaseBackingOff:
		b.WriteString("offline" + retry)
	default:
		b.WriteString("starting")
	}
	fmt.Fprintf(&b, "; %d queued", st.QueueDepth)
	if st.Dropped > 0 {
		fmt.Fprintf(&b, ", %d dropped", st.Dropped)
	}
	if st.Sources.Env == drivers.Simulated {
		b.WriteString("; SIMULATED sensors")
	}
	// The reason is in getStatus, the reported properties and the log.
	if st.Sources.Env == drivers.Missing {
		b.WriteString("; env sensor MISSING")
	}
	if st.Sources.GPS == drivers.Missing {
		b.WriteString("; GPS MISSING")
	}
	return b.String()
}

// approx renders a wait the way an operator reads it: "7 min", "40 s".
func approx(d time.Duration) string {
	switch {
	case d <= 0:
		return "now"
	case d < time.Minute:
		return fmt.Sprintf("%d s", int((d+time.Second-1)/time.Second))
	default:
		return fmt.Sprintf("%d min", int((d+30*time.Second)/time.Minute))
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
