package main

import "runtime"

// The daemon takes one reading every few seconds and waits on the network
// and the disk the rest of the time; a second P only buys wake-ups. With
// several Ps, every goroutine handed work while the others are idle wakes
// another OS thread, and since Go 1.25 the runtime also re-reads the CPU
// affinity and cgroup limit once a second. One P cut the system calls per
// reading by a fifth and the thread hand-offs (futex) by a third, and
// still drains a backlog at 15,000-30,000 msg/s on a quiet machine
// (bench/README.md, "Second round"). GOMAXPROCS in the environment
// (/etc/default/tracker) still wins.

// daemonProcs is GOMAXPROCS for `tracker run`.
const daemonProcs = 1

// setProcs applies daemonProcs unless getenv has GOMAXPROCS, and returns
// the value in force.
func setProcs(getenv func(string) string) int {
	if getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(daemonProcs)
	}
	return runtime.GOMAXPROCS(0)
}
