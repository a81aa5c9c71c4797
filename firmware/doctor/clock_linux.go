package doctor

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// maxSyncedError is the kernel's maximum-error estimate (µs) below which
// the clock counts as synchronised: 16 s, the kernel's own ceiling
// (NTP_PHASE_LIMIT), which it reaches when nobody disciplines the clock.
const maxSyncedError = 16_000_000

// SystemClockSynced asks the kernel, through adjtimex(2) in read-only mode,
// whether an NTP client keeps the clock synchronised. It is the test that
// systemd's timedated uses for timedatectl's "NTPSynchronized", read
// directly: no D-Bus, no timedatectl binary, works with any NTP client
// (timesyncd, chrony, ntpd) and inside containers.
func SystemClockSynced() (bool, error) {
	var tx unix.Timex // Modes 0: read only
	if _, err := unix.Adjtimex(&tx); err != nil {
		return false, fmt.Errorf("adjtimex: %w", err)
	}
	return int64(tx.Maxerror) < maxSyncedError, nil
}
