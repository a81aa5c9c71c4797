package waitfor

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestUntilHolds(t *testing.T) {
	var n atomic.Int32
	Until(t, "three polls", time.Second, time.Millisecond, func() bool { return n.Add(1) >= 3 })
	if got := n.Load(); got != 3 {
		t.Errorf("cond called %d times; want 3", got)
	}
}

// fatalTB records Fatalf instead of stopping the test.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = format
	if len(args) > 0 {
		f.msg = strings.Replace(format, "%s", args[0].(string), 1)
	}
	panic(f)
}

func TestUntilTimesOut(t *testing.T) {
	f := &fatalTB{TB: t}
	func() {
		defer func() {
			if r := recover(); r != f {
				t.Fatalf("recover() = %v; want the Fatalf of a timeout", r)
			}
		}()
		Until(f, "never", 20*time.Millisecond, time.Millisecond, func() bool { return false })
	}()
	if f.msg != "timed out waiting for never" {
		t.Errorf("message = %q; want %q", f.msg, "timed out waiting for never")
	}
}
