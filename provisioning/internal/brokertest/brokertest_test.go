package brokertest

import (
	"bytes"
	"crypto/tls"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// recordHook accepts every client and remembers the CN it presented.
type recordHook struct {
	mqtt.HookBase
	mu  sync.Mutex
	cns []string
}

func (h *recordHook) ID() string { return "record" }
func (h *recordHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck}, []byte{b})
}
func (h *recordHook) OnACLCheck(*mqtt.Client, string, bool) bool { return true }
func (h *recordHook) OnConnectAuthenticate(cl *mqtt.Client, _ packets.Packet) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cns = append(h.cns, PeerCN(cl))
	return true
}

func connect(addr string, cfg *tls.Config) error {
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tls://" + addr).SetClientID("dev-1").
		SetTLSConfig(cfg).SetProtocolVersion(4).SetConnectTimeout(5 * time.Second).SetAutoReconnect(false))
	tok := c.Connect()
	tok.Wait()
	if tok.Error() == nil {
		c.Disconnect(0)
	}
	return tok.Error()
}

func TestStartMutualTLS(t *testing.T) {
	t.Parallel()
	p := NewPKI(t, "dev-1")
	h := &recordHook{}
	b := New(t, p)
	b.Start(t, h)
	if err := connect(b.Addr, p.ClientTLS()); err != nil {
		t.Fatalf("connect with the device certificate: %v", err)
	}
	h.mu.Lock()
	if len(h.cns) != 1 || h.cns[0] != "dev-1" {
		t.Errorf("peer CNs = %q; want [dev-1]", h.cns)
	}
	h.mu.Unlock()
	// Without a client certificate the handshake must fail: the broker
	// stands in for services that require one.
	if err := connect(b.Addr, &tls.Config{RootCAs: p.Roots}); err == nil {
		t.Error("connect without a client certificate succeeded; want a TLS failure")
	}
	// A certificate from another PKI is not trusted either.
	other := NewPKI(t, "dev-1")
	cfg := p.ClientTLS()
	cfg.Certificates = []tls.Certificate{other.Client}
	if err := connect(b.Addr, cfg); err == nil {
		t.Error("connect with a foreign certificate succeeded; want a TLS failure")
	}
}
