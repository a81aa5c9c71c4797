package doctor

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// maxSyncedError is the kernel's maximum-error estimate (µs) below which
// the clock counts as synchronised: 16 s, the kernel's own ceiling
// (NTP_PHASE_LIMIT), which it reaches when nobody disciplines the clock.
const maxSyncedError = 16_000_000

// timesyncFlag is the file systemd-timesyncd creates once it has
// synchronised the clock (sd-daemon's "synchronized" flag, systemd ≥ 246).
const timesyncFlag = "/run/systemd/timesync/synchronized"

// SystemClockSynced asks the kernel, through adjtimex(2) in read-only mode,
// whether an NTP client keeps the clock synchronised. It is the test that
// systemd's timedated uses for timedatectl's "NTPSynchronized", read
// directly: no D-Bus, no timedatectl binary, works with any NTP client
// (timesyncd, chrony, ntpd) and inside containers.
//
// Inside tracker.service (the getStatus method) ProtectClock= refuses
// even the read-only call with EPERM (systemd issue #26413); there the
// flag systemd-timesyncd leaves once synchronised answers instead.
func SystemClockSynced() (bool, error) { return clockSynced(unix.Adjtimex, timesyncFlag) }

func clockSynced(adjtimex func(*unix.Timex) (int, error), flag string) (bool, error) {
	var tx unix.Timex // Modes 0: read only
	_, err := adjtimex(&tx)
	if err == nil {
		return int64(tx.Maxerror) < maxSyncedError, nil
	}
	if errors.Is(err, unix.EPERM) {
		if _, serr := os.Stat(flag); serr == nil {
			return true, nil
		}
	}
	return false, fmt.Errorf("adjtimex: %w", err)
}
