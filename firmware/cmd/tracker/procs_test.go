package main

import (
	"runtime"
	"testing"
)

// TestSetProcs: the daemon runs on daemonProcs Ps unless GOMAXPROCS is in
// its environment. Not parallel: it changes the test process's GOMAXPROCS
// (restored at the end).
func TestSetProcs(t *testing.T) {
	was := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(was) })

	runtime.GOMAXPROCS(3)
	if got := setProcs(func(string) string { return "" }); got != daemonProcs {
		t.Errorf("setProcs without GOMAXPROCS = %d; want %d", got, daemonProcs)
	}
	runtime.GOMAXPROCS(3) // as the runtime would have set it from GOMAXPROCS=3
	env := func(k string) string {
		if k == "GOMAXPROCS" {
			return "3"
		}
		return ""
	}
	if got := setProcs(env); got != 3 {
		t.Errorf("setProcs with GOMAXPROCS=3 = %d; want 3 (the environment wins)", got)
	}
}
