package daemon

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
)

func TestGroupStopsStagesInOrder(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	g := newGroup(ctx)
	var mu sync.Mutex
	var ended []string
	loop := func(name string) func(context.Context) error {
		return func(ctx context.Context) error {
			<-ctx.Done()
			mu.Lock()
			ended = append(ended, name)
			mu.Unlock()
			return nil
		}
	}
	g.stage().Go(loop("first"))
	g.stage().Go(loop("second"))
	third := g.stage()
	third.Go(loop("third"))
	third.Go(func(context.Context) error { return nil }) // ending without error ends nothing
	cancel()
	if err := g.Wait(ctx); err != nil {
		t.Fatalf("Wait after cancel = %v; want nil", err)
	}
	mu.Lock()
	if len(ended) != 0 {
		t.Errorf("loops ended before Stop: %v", ended)
	}
	mu.Unlock()
	g.Stop()
	if want := []string{"first", "second", "third"}; !slices.Equal(ended, want) {
		t.Errorf("stages ended in order %v; want %v", ended, want)
	}
}

func TestGroupFirstErrorEndsWait(t *testing.T) {
	t.Parallel()
	g := newGroup(context.Background())
	boom := errors.New("boom")
	g.stage().Go(func(ctx context.Context) error { <-ctx.Done(); return errors.New("late") })
	g.stage().Go(func(context.Context) error { return boom })
	if err := g.Wait(context.Background()); !errors.Is(err, boom) {
		t.Fatalf("Wait = %v; want %v", err, boom)
	}
	g.Stop()
	if err := g.Wait(context.Background()); !errors.Is(err, boom) {
		t.Errorf("Wait after Stop = %v; want the first error %v", err, boom)
	}
}
