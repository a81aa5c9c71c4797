// Package waitfor is the polling wait the tests share: check a condition
// until it holds, failing the test with what was awaited when it does not.
package waitfor

import (
	"testing"
	"time"
)

// Until polls cond every poll until it holds, or fails t after timeout with
// "timed out waiting for <what>".
func Until(t testing.TB, what string, timeout, poll time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(poll)
	}
}
