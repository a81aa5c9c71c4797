package iothub

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/reefer/tracker/internal/ctxtime"
)

// outageRig runs a client against the fake hub in a testing/synctest
// bubble, with a hub outage scripted on the bubble's clock: the client's
// waits are real timers, which the bubble runs at once.
type outageRig struct {
	h *harness

	mu       sync.Mutex
	downFrom time.Time // connects fail in [downFrom, downTo)
	downTo   time.Time
	upAt     time.Time     // the first successful connect at or after downTo
	up       chan struct{} // closed at upAt
}

func newOutageRig(t *testing.T, rnd func() float64, mod func(*Config)) *outageRig {
	t.Helper()
	r := &outageRig{}
	r.h = newHarness(t, func(c *Config) {
		c.Rand = rnd
		c.OnState = nil // dozens of attempts would fill the harness's channel
		c.Sleep = func(ctx context.Context, d time.Duration) error {
			r.h.sleeps.Sleep(ctx, d) // records d
			return ctxtime.Sleep(ctx, d)
		}
		if mod != nil {
			mod(c)
		}
	})
	r.h.hub.connectErr = func(int) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		now := time.Now()
		if !now.Before(r.downFrom) && now.Before(r.downTo) {
			return fmt.Errorf("%w : dial tcp: connection refused", packets.ErrorNetworkError)
		}
		if !r.downTo.IsZero() && !now.Before(r.downTo) && r.upAt.IsZero() {
			r.upAt = now
			close(r.up)
		}
		return nil
	}
	return r
}

// down makes the hub unreachable from now for d.
func (r *outageRig) down(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.downFrom = time.Now()
	r.downTo = r.downFrom.Add(d)
	r.upAt = time.Time{}
	r.up = make(chan struct{})
}

// reconnectDelay is how long after the hub's return the client connected.
func (r *outageRig) reconnectDelay(t *testing.T) time.Duration {
	t.Helper()
	r.mu.Lock()
	up := r.up
	r.mu.Unlock()
	select {
	case <-up:
	case <-time.After(24 * time.Hour): // on the bubble's clock
		t.Fatal("no reconnect within a day of the outage")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.upAt.Sub(r.downTo)
}

// loseStableConnection connects, keeps the connection past StableAfter and
// then loses it to an outage of length d.
func (r *outageRig) loseStableConnection(t *testing.T, d time.Duration) {
	t.Helper()
	if err := r.h.c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Minute) // past the default StableAfter
	r.down(d)
	r.h.hub.last().drop(errors.New("pingresp not received, disconnecting"))
}

// After a connection that had worked, a 10-minute outage costs at most
// ReconnectMax once the hub is back: the first retry comes within
// BackoffBase, and no wait exceeds ReconnectMax (before, the waits grew to
// the 5-minute BackoffMax).
func TestReconnectAfterLongOutageIsPrompt(t *testing.T) {
	t.Parallel()
	for _, rnd := range []float64{0.999, 0.5, 0.25} {
		t.Run(fmt.Sprint(rnd), bubbled(func(t *testing.T) {
			r := newOutageRig(t, func() float64 { return rnd }, nil)
			r.loseStableConnection(t, 10*time.Minute)
			got := r.reconnectDelay(t)
			sleeps := r.h.sleeps.Got()
			if len(sleeps) == 0 || sleeps[0] >= time.Second {
				t.Errorf("first wait after losing a stable connection = %v; want under BackoffBase (1 s)", sleeps)
			}
			if m := slices.Max(sleeps); m > 30*time.Second {
				t.Errorf("longest wait %v (waits %v); want at most ReconnectMax 30 s", m, sleeps)
			}
			if got > 30*time.Second {
				t.Errorf("reconnected %v after the hub came back; want within ReconnectMax 30 s", got)
			}
			t.Logf("rand %.3f: %d attempts, back %v after the hub returned", rnd, len(sleeps), got)
		}))
	}
}

// A fleet that lost the hub together comes back spread over the
// ReconnectMax window, not in one second: full jitter on every wait.
func TestReconnectSpreadsAFleet(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const devices = 100
		delays := make([]time.Duration, devices)
		for i := range devices {
			src := rand.New(rand.NewPCG(7, uint64(i)))
			var mu sync.Mutex
			r := newOutageRig(t, func() float64 { mu.Lock(); defer mu.Unlock(); return src.Float64() }, nil)
			r.loseStableConnection(t, 10*time.Minute)
			delays[i] = r.reconnectDelay(t)
			r.h.c.Close()
		}
		perSecond := map[time.Duration]int{}
		var sum time.Duration
		for _, d := range delays {
			if d > 30*time.Second {
				t.Errorf("a device came back %v after the hub; want within 30 s", d)
			}
			perSecond[d.Truncate(time.Second)]++
			sum += d
		}
		busiest := 0
		for _, n := range perSecond {
			busiest = max(busiest, n)
		}
		mean := sum / devices
		// Spread over ~30 s a second holds a few of 100; a stampede puts them
		// all in the first.
		if busiest > devices/6 {
			t.Errorf("%d of %d devices reconnected in the same second; want them spread", busiest, devices)
		}
		if mean < 3*time.Second || mean > 25*time.Second {
			t.Errorf("mean time to reconnect %v; want between 3 s and 25 s", mean)
		}
		t.Logf("%d devices: mean %v, max %v, busiest second %d", devices, mean.Round(time.Millisecond), slices.Max(delays).Round(time.Millisecond), busiest)
	})
}

// A first Connect to a hub never reached keeps the long back-off towards
// BackoffMax (a wrong or moved hub should not be hammered); with KnownHub
// (a cached assignment from an earlier run) it uses the reconnect schedule.
func TestKnownHubFirstConnectUsesReconnectSchedule(t *testing.T) {
	t.Parallel()
	for _, known := range []bool{false, true} {
		t.Run(fmt.Sprint("known=", known), bubbled(func(t *testing.T) {
			r := newOutageRig(t, func() float64 { return 0.999 }, func(c *Config) { c.KnownHub = known })
			r.down(10 * time.Minute)
			if err := r.h.c.Connect(context.Background()); err != nil {
				t.Fatal(err)
			}
			got := r.reconnectDelay(t)
			longest := slices.Max(r.h.sleeps.Got())
			if known && (longest > 30*time.Second || got > 30*time.Second) {
				t.Errorf("known hub: longest wait %v, connected %v after the hub returned; want both within 30 s", longest, got)
			}
			if !known && longest <= 30*time.Second {
				t.Errorf("unknown hub: longest wait %v; want the back-off to grow past ReconnectMax", longest)
			}
		}))
	}
}

// ReconnectMax never exceeds BackoffMax (tests shorten BackoffMax alone).
func TestReconnectMaxCappedByBackoffMax(t *testing.T) {
	t.Parallel()
	c, err := Config{Hub: "h", DeviceID: "d", TLS: testTLS(), BackoffMax: 200 * time.Millisecond}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.ReconnectMax != 200*time.Millisecond {
		t.Errorf("ReconnectMax = %v; want BackoffMax 200ms", c.ReconnectMax)
	}
}

// bubbled runs a parallel subtest in a testing/synctest bubble.
func bubbled(f func(t *testing.T)) func(t *testing.T) {
	return func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, f)
	}
}
