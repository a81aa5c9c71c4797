// Package memlimit sets the Go runtime's soft memory limit from a flag
// written as GOMEMLIMIT is, for the processes that hold thousands of
// connections (the emulator, the fleet bench's emulator process). Near the
// limit the runtime collects garbage sooner, shrinks goroutine stacks and
// returns freed pages to the system, so a burst of connections does not
// leave the process at twice its live memory.
package memlimit

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime/debug"
	"strconv"
	"strings"
)

// units are GOMEMLIMIT's suffixes, longest first so "MiB" is not read as "B".
var units = []struct {
	suffix string
	shift  uint
}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"B", 0}}

// Bytes is a memory limit flag: a whole number of bytes with an optional
// unit B, KiB, MiB, GiB or TiB ("900MiB"), as GOMEMLIMIT takes it. Zero,
// the default, leaves the runtime's limit alone (GOMEMLIMIT, else none).
type Bytes int64

// String prints b in the largest unit that divides it.
func (b Bytes) String() string {
	if b == 0 {
		return "0"
	}
	for _, u := range units {
		if b%(1<<u.shift) == 0 {
			return strconv.FormatInt(int64(b)>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(b), 10) + "B"
}

// Set parses s.
func (b *Bytes) Set(s string) error {
	n, err := Parse(s)
	if err != nil {
		return err
	}
	*b = Bytes(n)
	return nil
}

// Parse reads a size written as GOMEMLIMIT takes it.
func Parse(s string) (int64, error) {
	num, shift := strings.TrimSpace(s), uint(0)
	for _, u := range units {
		if v, ok := strings.CutSuffix(num, u.suffix); ok {
			num, shift = v, u.shift
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	switch {
	case err != nil:
		return 0, fmt.Errorf("memory limit %q: want a whole number of bytes with an optional unit B, KiB, MiB, GiB or TiB (e.g. 900MiB)", s)
	case n < 0:
		return 0, fmt.Errorf("memory limit %q is negative", s)
	case n > math.MaxInt64>>shift:
		return 0, fmt.Errorf("memory limit %q is too large", s)
	}
	return n << shift, nil
}

// ErrTooLow is returned by Apply for a limit below Min.
var ErrTooLow = errors.New("memory limit below 64MiB")

// Min is the smallest limit Apply takes: below it the runtime would spend
// most of its time collecting garbage even for an idle emulator.
const Min = 64 << 20

// Apply sets the soft memory limit to b (0: leave the runtime's) and logs
// the limit in force. It returns that limit, math.MaxInt64 for none.
func Apply(b Bytes, log *slog.Logger) (int64, error) {
	if b != 0 && b < Min {
		// A bare number is bytes, as in GOMEMLIMIT: "900" is 900B, which
		// someone who meant megabytes learns from the hint.
		return 0, fmt.Errorf("%w: %s (a number without a unit is bytes; give one, e.g. 900MiB)", ErrTooLow, b)
	}
	if b != 0 {
		debug.SetMemoryLimit(int64(b))
	}
	cur := debug.SetMemoryLimit(-1) // -1 reads without changing
	if cur == math.MaxInt64 {
		log.Info("no soft memory limit (set one with the flag or GOMEMLIMIT)")
	} else {
		log.Info("soft memory limit "+Bytes(cur).String(), "bytes", cur)
	}
	return cur, nil
}
