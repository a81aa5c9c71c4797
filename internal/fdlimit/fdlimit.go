// Package fdlimit raises the process's open-file limit as far as it may go
// and says so, for the programs that hold one socket per device (the
// emulator, the fleet bench).
package fdlimit

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// nrOpenPath holds the kernel's ceiling for RLIMIT_NOFILE.
const nrOpenPath = "/proc/sys/fs/nr_open"

// Raise sets the open-file limit to the kernel's ceiling when the process
// may (CAP_SYS_RESOURCE), else the soft limit to the hard one, and logs
// "raised open-file limit from X to Y", or the limit and how to lift it
// when there was nothing to raise. It returns the soft limit in force.
// Go already lifts the soft limit to the hard one at start-up (and puts it
// back for child processes), so without the capability there is usually
// nothing left to do here but say what the limit is.
func Raise(log *slog.Logger) uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		log.Warn("cannot read the open-file limit", "err", err)
		return 0
	}
	for _, to := range []uint64{kernelCeiling(), lim.Max} {
		if to <= lim.Cur {
			continue
		}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: to, Max: max(to, lim.Max)}); err == nil {
			log.Info(fmt.Sprintf("raised open-file limit from %d to %d", lim.Cur, to), "from", lim.Cur, "to", to)
			return to
		}
	}
	log.Info(fmt.Sprintf("open-file limit %d is the most this process may have (raise the hard limit with ulimit -Hn or LimitNOFILE= for more)", lim.Cur),
		"limit", lim.Cur, "hard", lim.Max)
	return lim.Cur
}

func kernelCeiling() uint64 {
	b, err := os.ReadFile(nrOpenPath)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return n
}
