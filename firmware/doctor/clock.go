package doctor

import (
	"fmt"
	"time"
)

// CheckClock checks that the clock is plausible and synchronised. A board
// without a battery-backed clock (a Raspberry Pi) boots in 1970 or at the
// last saved time; TLS to Azure then fails because certificates look "not
// yet valid". floor is the earliest time that can be right (the firmware's
// build time or the device certificate's start, whichever is later; zero
// if unknown) and floorWhat names it. synced reports the kernel's NTP state;
// when it cannot tell, the check WARNs rather than fails.
func CheckClock(now, floor time.Time, floorWhat string, synced func() (bool, error)) Check {
	ck := Check{Name: "clock"}
	clock := now.UTC().Format(time.RFC3339)
	if !floor.IsZero() && now.Before(floor) {
		ck.Status = Fail
		ck.Detail = fmt.Sprintf("clock says %s, before %s (%s)", clock, floorWhat, floor.UTC().Format(time.RFC3339))
		ck.Fix = "the board has no battery-backed clock and has not synchronised yet: connect it to a network that reaches NTP (UDP 123) and wait; check with timedatectl timesync-status. TLS to Azure fails until the clock is right"
		return ck
	}
	if synced == nil {
		synced = SystemClockSynced
	}
	ok, err := synced()
	switch {
	case err != nil:
		ck.Status = Warn
		ck.Detail = fmt.Sprintf("clock says %s; cannot tell whether it is synchronised: %v", clock, err)
		ck.Fix = "check with timedatectl (NTP synchronized: yes)"
	case !ok:
		ck.Status = Warn
		ck.Detail = fmt.Sprintf("clock says %s, but it is not synchronised with NTP", clock)
		ck.Fix = "make sure NTP (UDP 123) is reachable and a time service runs: timedatectl set-ntp true; timedatectl timesync-status"
	default:
		ck.Status = OK
		ck.Detail = clock + ", synchronised"
	}
	return ck
}
