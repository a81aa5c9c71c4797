package emulator

import (
	"net"
	"testing"
	"time"

	"github.com/reefer/tracker/internal/waitfor"
)

// Connections beyond Config.MaxHandshakes wait their turn instead of being
// refused or handshaking all at once: a socket that does not start its
// handshake holds the only slot, and the device queued behind it connects
// once that socket is gone.
func TestHandshakesWaitTheirTurn(t *testing.T) {
	t.Parallel()
	e := StartForTest(t, func(c *Config) { c.MaxHandshakes = 1 })
	dev := hubDevice(t, e, "dev-1")
	hs := e.listeners[0].handshakes
	active := func() int {
		hs.mu.Lock()
		defer hs.mu.Unlock()
		return hs.active
	}

	silent, err := net.Dial("tcp", e.Info().Hubs[0].MQTTAddress)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	waitfor.Until(t, "the silent socket to take the handshake slot", waitTime, time.Millisecond, func() bool { return active() == 1 })

	connected := make(chan error, 1)
	go func() {
		_, err := hubDial(t, e, 0, "dev-1", dev.TLS())
		connected <- err
	}()
	waitfor.Until(t, "the device to queue behind it", waitTime, time.Millisecond, func() bool { return hs.waiting() == 1 })
	select {
	case err := <-connected:
		t.Fatalf("device connected (%v) while the only handshake slot was taken", err)
	default:
	}

	silent.Close() // its handshake fails; the device goes next
	select {
	case err := <-connected:
		if err != nil {
			t.Fatalf("queued device: %v", err)
		}
	case <-time.After(connectTime):
		t.Fatal("queued device did not connect")
	}
	if !e.IsConnected(e.HubHost(0), "dev-1") {
		t.Error("dev-1 not listed as connected")
	}
}
