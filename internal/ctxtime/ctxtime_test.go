package ctxtime

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestSleep(t *testing.T) {
	t.Parallel()
	if err := Sleep(context.Background(), time.Millisecond); err != nil {
		t.Errorf("Sleep(1ms) = %v; want nil", err)
	}
	if err := Sleep(context.Background(), 0); err != nil {
		t.Errorf("Sleep(0) = %v; want nil", err)
	}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Sleep(done, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("Sleep(cancelled, 0) = %v; want context.Canceled", err)
	}
	if err := Sleep(done, time.Hour); !errors.Is(err, context.Canceled) {
		t.Errorf("Sleep(cancelled, 1h) = %v; want context.Canceled", err)
	}
	cause := errors.New("budget spent")
	withCause, cancelCause := context.WithCancelCause(context.Background())
	cancelCause(cause)
	if err := Sleep(withCause, time.Hour); !errors.Is(err, cause) {
		t.Errorf("Sleep(cancelled with cause, 1h) = %v; want the cause", err)
	}
	// Cancelling while asleep wakes it.
	ctx, cancelLater := context.WithCancel(context.Background())
	go func() { time.Sleep(10 * time.Millisecond); cancelLater() }()
	start := time.Now()
	if err := Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Errorf("Sleep(cancelled later) = %v; want context.Canceled", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Sleep returned after %s; want soon after the cancel", d)
	}
}
