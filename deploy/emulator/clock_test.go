package emulator

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/reefer/tracker/internal/faketime"
)

func newFakeClock() *faketime.Clock { return faketime.NewClock(time.Now()) }

// TestDPSThrottlingFakeClock steps through the registration limit
// (per minute, docs/protocol.md F) and the poll limit (5 per 10 s, docs/protocol.md A.4) with an
// injected clock: retry-after counts down with the clock and the limit
// lifts exactly when the window has passed.
func TestDPSThrottlingFakeClock(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	e := StartForTest(t, func(c *Config) { c.Now = clk.Now; c.RegistrationsPerMinute = 2 })
	f := newFleet(t)
	if _, err := e.EnrollGroup("fleet", f.root.Cert, nil); err != nil {
		t.Fatal(err)
	}
	register := func(c *client, id string) dpsResponse {
		t.Helper()
		return c.dpsRequest(t, registerTopic("1"), []byte(`{"registrationId":"`+id+`"}`))
	}
	for i := 0; i < 2; i++ {
		id := fmt.Sprintf("dev-%d", i)
		if r := register(dpsDial(t, e, id, f.leaf(t, id).TLS()), id); r.status != 202 {
			t.Fatalf("register %s = %d %s; want 202", id, r.status, r.raw)
		}
	}
	c := dpsDial(t, e, "dev-2", f.leaf(t, "dev-2").TLS())
	steps := []struct {
		advance time.Duration
		status  int
		retry   int // retry-after on 429
	}{
		{0, 429, 60},
		{30 * time.Second, 429, 30},
		{29 * time.Second, 429, 1},
		{time.Second, 202, 0}, // the first two fall out of the minute
	}
	var op string
	for i, s := range steps {
		clk.Advance(s.advance)
		r := register(c, "dev-2")
		if r.status != s.status || (s.status == 429 && r.retryAfter != s.retry) {
			t.Fatalf("register step %d (+%v) = %d retry-after %d; want %d retry-after %d", i, s.advance, r.status, r.retryAfter, s.status, s.retry)
		}
		if r.status == 202 {
			op, _ = r.body["operationId"].(string)
		}
	}

	poll := func() dpsResponse { t.Helper(); return c.dpsRequest(t, pollTopic("p", op), nil) }
	for i := 0; i < 5; i++ {
		clk.Advance(time.Second)
		if p := poll(); p.status != 200 {
			t.Fatalf("poll #%d = %d %s; want 200", i+1, p.status, p.raw)
		}
	}
	// Polls at t=1..5 s; the sixth at 5 s waits for the first to age out.
	if p := poll(); p.status != 429 || p.retryAfter != 6 || p.body["errorCode"] != float64(429001) {
		t.Errorf("6th poll within 10 s = %d retry-after %d %s; want 429 retry-after 6", p.status, p.retryAfter, p.raw)
	}
	clk.Advance(5 * time.Second)
	if p := poll(); p.status != 429 || p.retryAfter != 1 {
		t.Errorf("poll 1 s before the window frees = %d retry-after %d; want 429 retry-after 1", p.status, p.retryAfter)
	}
	clk.Advance(time.Second)
	if p := poll(); p.status != 200 {
		t.Errorf("poll after the window = %d %s; want 200", p.status, p.raw)
	}
}

// TestFakeClockReachesStoreAndServiceAPI: C2D TTL expiry and SAS token
// expiry follow Config.Now.
func TestFakeClockReachesStoreAndServiceAPI(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	e := StartForTest(t, func(c *Config) { c.Now = clk.Now })
	f := newFleet(t)
	hub := e.HubHost(0)
	if _, err := e.CreateDevice(hub, "dev-1", f.leaf(t, "dev-1").Cert); err != nil {
		t.Fatal(err)
	}
	if _, err := e.SendC2D(hub, "dev-1", []byte("hi"), nil); err != nil {
		t.Fatal(err)
	}
	if q, _ := e.Store().PendingC2D(hub, "dev-1"); len(q) != 1 {
		t.Fatalf("pending C2D = %d; want 1", len(q))
	}
	svc := newSvcClient(t, e)
	h := e.Info().Hubs[0]
	get := func() int {
		code, _ := svc.do("GET", "/devices/dev-1?api-version=2021-04-12", h.HostName, h.SharedAccessKeyName, h.SharedAccessKey, nil)
		return code
	}
	if code := get(); code != http.StatusOK {
		t.Fatalf("GET device with a fresh token = %d; want 200", code)
	}

	clk.Advance(time.Hour + time.Minute) // past the default C2D TTL and the token's expiry
	if q, _ := e.Store().PendingC2D(hub, "dev-1"); len(q) != 0 {
		t.Errorf("pending C2D after its TTL = %d; want 0 (docs/protocol.md B.4: 1 h default)", len(q))
	}
	if code := get(); code != http.StatusUnauthorized {
		t.Errorf("GET device with a token expired on the emulator's clock = %d; want 401", code)
	}
	if !e.Now().Equal(clk.Now()) {
		t.Errorf("Emulator.Now = %v; want the injected clock %v", e.Now(), clk.Now())
	}
}
