// Package backoff computes the waits between retries, for every retry loop
// of the tracker (DPS and IoT Hub clients, the provisioning lifecycle, the
// agent's sender): a ceiling that doubles from a base up to a cap, and a
// uniform random pick under it, so a fleet that failed together does not
// come back together.
package backoff

import "time"

// Ceiling is base·2^attempt, capped at limit; attempt 0 is base. Doubling
// stops at limit, so a huge attempt cannot overflow.
func Ceiling(attempt int, base, limit time.Duration) time.Duration {
	ceil := base
	for i := 0; i < attempt && ceil < limit; i++ {
		ceil *= 2
	}
	return min(ceil, limit)
}

// Jitter is the one jitter formula: uniform in [keep·ceil, ceil) for rnd
// uniform in [0, 1). keep 0 is "full jitter", the widest spread; keep ½ is
// "equal jitter", which never waits less than half the ceiling.
func Jitter(ceil time.Duration, keep, rnd float64) time.Duration {
	lo := time.Duration(keep * float64(ceil))
	return lo + time.Duration(rnd*float64(ceil-lo))
}

// Delay is the wait before retry number attempt (0 for the first retry):
// full jitter under Ceiling(attempt, base, limit).
//
// floor is the server's retry-after when it sent one (docs/protocol.md A.4: honour
// retry-after on 429); pass 0 for none. The jitter then goes on top of it,
// over a window at least as long as the floor: a throttled fleet is told the
// same retry-after, and waiting exactly that long would bring every device
// back in the same second, to be throttled again (bench/fleet measured
// exactly that). rnd is a sample from [0, 1).
func Delay(attempt int, base, limit, floor time.Duration, rnd float64) time.Duration {
	ceil := Ceiling(attempt, base, limit)
	if floor <= 0 {
		return Jitter(ceil, 0, rnd)
	}
	return floor + Jitter(max(ceil, floor), 0, rnd)
}
