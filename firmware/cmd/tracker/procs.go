package main

import "runtime"

// The daemon takes one reading every few seconds and waits on the network
// and the disk the rest of the time; a second P only buys wake-ups. With
// several Ps, every goroutine handed work while the others are idle wakes
// another OS thread, and since Go 1.25 the runtime also re-reads the CPU
// affinity and cgroup limit once a second. One P cut the context switches
// per reading by a third and the system calls by 30 % (bench/README.md,
// "Runtime wake-ups"), and drains a backlog well above 10,000 msg/s.
// GOMAXPROCS in the environment (/etc/default/tracker) still wins.

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
