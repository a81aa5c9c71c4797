package emulator

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/reefer/tracker/deploy/emulator/pki"
	"github.com/reefer/tracker/internal/syncbuf"
)

func TestTokenBucket(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1_700_000_000, 0)
	b := &tokenBucket{rate: 2, burst: 2}
	steps := []struct {
		at   time.Duration
		want bool
	}{
		{0, true}, {0, true}, {0, false}, // burst of 2, then empty
		{250 * time.Millisecond, false}, // half a token
		{500 * time.Millisecond, true},  // one token after 0.5 s
		{500 * time.Millisecond, false},
		{-time.Second, false},                                                         // a clock stepping back refills nothing
		{10 * time.Second, true}, {10 * time.Second, true}, {10 * time.Second, false}, // refill capped at burst
	}
	for i, s := range steps {
		if got := b.take(t0.Add(s.at)); got != s.want {
			t.Errorf("step %d: take(t0%+v) = %v; want %v", i, s.at, got, s.want)
		}
	}
	var unlimited *d2cLimiter
	if !unlimited.allow("hub") || !newD2CLimiter(0, time.Now).allow("hub") {
		t.Error("a nil or zero limiter refused a message; want unlimited")
	}
}

// TestTelemetryThrottleClosesConnection shows docs/protocol.md F's D2C throttle over
// MQTT (docs/protocol.md B.2, B.7): with 2 messages/s per hub on a fake clock, the
// device whose message exceeds the hub's budget is disconnected and that
// message is not recorded, while a device sending within the budget keeps
// its connection and its messages.
func TestTelemetryThrottleClosesConnection(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	var logs syncbuf.Buffer
	e := StartForTest(t, func(c *Config) {
		c.Now, c.TelemetryPerSecond, c.Hubs = clk.Now, 2, 2
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	hub := e.HubHost(0)
	quiet := mustHubDial(t, e, 0, "quiet", hubDevice(t, e, "quiet").TLS())
	noisy := mustHubDial(t, e, 0, "noisy", hubDevice(t, e, "noisy").TLS())
	send := func(c *client, id string, n int) error {
		t.Helper()
		return c.publish(t, "devices/"+id+"/messages/events/", 1, fmt.Appendf(nil, `{"n":%d}`, n))
	}

	// Under the limit for several (fake) seconds: one message a second.
	for i := range 3 {
		if err := send(quiet, "quiet", i); err != nil {
			t.Fatalf("quiet message %d: %v", i, err)
		}
		clk.Advance(time.Second)
	}
	// The noisy device spends the hub's budget (2) and exceeds it at
	// the same instant.
	for i := range 2 {
		if err := send(noisy, "noisy", i); err != nil {
			t.Fatalf("noisy message %d within the budget: %v", i, err)
		}
	}
	_ = noisy.c.Publish("devices/noisy/messages/events/", 1, false, []byte(`{"n":2}`)) // no PUBACK comes
	noisy.expectLost(t, "message over the D2C limit")
	// The server notices its own close just after the client does.
	for deadline := time.Now().Add(waitTime); e.IsConnected(hub, "noisy"); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("noisy device still registered as connected after the throttle closed it")
		}
	}
	if l := logs.String(); !strings.Contains(l, "code=429001") || !strings.Contains(l, "deviceId=noisy") {
		t.Errorf("log lacks the 429001 close of noisy:\n%s", l)
	}
	if got := len(e.Telemetry(hub, "noisy")); got != 2 {
		t.Errorf("noisy telemetry = %d messages; want the 2 within the budget", got)
	}

	// The quiet device was not disconnected; once the bucket refills its
	// next message is accepted.
	select {
	case err := <-quiet.lost:
		t.Fatalf("quiet device lost its connection: %v", err)
	default:
	}
	clk.Advance(500 * time.Millisecond)
	if err := send(quiet, "quiet", 3); err != nil {
		t.Fatalf("quiet message after refill: %v", err)
	}
	if got := len(e.Telemetry(hub, "quiet")); got != 4 || !e.IsConnected(hub, "quiet") {
		t.Errorf("quiet device: %d messages, connected %v; want 4, true", got, e.IsConnected(hub, "quiet"))
	}

	// The budget is per hub: hub 2 is unaffected by hub 1's traffic.
	// Hub 1's bucket is empty right now (the quiet message took the
	// refill).
	oc, err := pki.NewSelfSigned("other", pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.CreateDevice(e.HubHost(1), "other", oc.Cert); err != nil {
		t.Fatal(err)
	}
	other := mustHubDial(t, e, 1, "other", oc.TLS())
	for i := range 2 {
		if err := send(other, "other", i); err != nil {
			t.Fatalf("hub 2 message %d: %v", i, err)
		}
	}
}
