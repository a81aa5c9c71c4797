package syncbuf

import (
	"strings"
	"sync"
	"testing"
)

// TestConcurrentWrites fails under -race if Write and String are not
// guarded, and otherwise if a write is lost or torn.
func TestConcurrentWrites(t *testing.T) {
	t.Parallel()
	var b Buffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				b.Write([]byte("line\n"))
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if got, want := b.String(), strings.Repeat("line\n", 800); got != want {
		t.Errorf("String() after 800 writes of %q = %d bytes; want %d", "line\n", len(got), len(want))
	}
}
