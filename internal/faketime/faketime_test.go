package faketime

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestClock(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewClock(t0)
	if got := c.Now(); !got.Equal(t0) {
		t.Errorf("Now() = %v; want %v", got, t0)
	}
	c.Advance(90 * time.Second)
	c.Advance(time.Hour)
	if got, want := c.Now(), t0.Add(time.Hour+90*time.Second); !got.Equal(want) {
		t.Errorf("Now() after Advance(90s), Advance(1h) = %v; want %v", got, want)
	}
}

func TestSleeps(t *testing.T) {
	t.Parallel()
	var s Sleeps
	if err := s.Sleep(context.Background(), time.Hour); err != nil {
		t.Errorf("Sleep(1h) = %v; want nil at once", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Sleep(ctx, 2*time.Second); !errors.Is(err, context.Canceled) {
		t.Errorf("Sleep with a cancelled context = %v; want context.Canceled", err)
	}
	got := s.Got()
	if want := []time.Duration{time.Hour, 2 * time.Second}; !reflect.DeepEqual(got, want) {
		t.Errorf("Got() = %v; want %v", got, want)
	}
	got[0] = 0 // a copy: the recorder must not change
	if s.Got()[0] != time.Hour {
		t.Error("Got() returned the recorder's own slice; want a copy")
	}
}
