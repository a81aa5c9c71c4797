// Package brokertest starts a real MQTT broker (mochi) for tests of the DPS
// and IoT Hub clients: mutual TLS on 127.0.0.1 with an ephemeral port and a
// throwaway PKI, stopped when the test ends. What the broker answers is up
// to the mochi hooks the test passes in. For tests only.
package brokertest

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/reefer/tracker/provisioning/certs/certstest"
)

// PKI is a root CA, a server certificate for 127.0.0.1 and one device
// certificate, all signed by the root.
type PKI struct {
	Root   *certstest.Cert
	Roots  *x509.CertPool // holds Root: trust for both sides
	Server tls.Certificate
	Client tls.Certificate // leaf only, CN as given to NewPKI
}

// NewPKI makes a fresh PKI whose device certificate has subject CN clientCN.
func NewPKI(t testing.TB, clientCN string) *PKI {
	t.Helper()
	root := certstest.Root(t, "brokertest root", certstest.Options{})
	srv := root.Leaf(t, "127.0.0.1", certstest.Options{IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}})
	dev := root.Leaf(t, clientCN, certstest.Options{})
	p := &PKI{Root: root, Roots: x509.NewCertPool(), Server: pair(srv), Client: pair(dev)}
	p.Roots.AddCert(root.Cert)
	return p
}

func pair(c *certstest.Cert) tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{c.Cert.Raw}, PrivateKey: c.Key, Leaf: c.Cert}
}

// ClientTLS is a device-side configuration: the device certificate, and
// the root to verify the broker with.
func (p *PKI) ClientTLS() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{p.Client}, RootCAs: p.Roots, MinVersion: tls.VersionTLS12}
}

// Broker is a broker for one test.
type Broker struct {
	Server *mqtt.Server
	Addr   string // 127.0.0.1:port, set by Start
	pki    *PKI
}

// New makes a broker that is not yet listening, so that hooks can be built
// with its Server (hooks that publish replies use its inline client). The
// broker stops when the test ends.
func New(t testing.TB, p *PKI) *Broker {
	t.Helper()
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(func() { srv.Close() })
	return &Broker{Server: srv, pki: p}
}

// Start adds the hooks and serves on a TLS listener that requires a client
// certificate signed by the PKI's root, like DPS and IoT Hub (docs/protocol.md A.1,
// B.1). What the broker accepts and answers is up to the hooks.
func (b *Broker) Start(t testing.TB, hooks ...mqtt.Hook) {
	t.Helper()
	for _, h := range hooks {
		if err := b.Server.AddHook(h, nil); err != nil {
			t.Fatalf("brokertest: add hook %s: %v", h.ID(), err)
		}
	}
	l := listeners.NewTCP(listeners.Config{ID: "tls", Address: "127.0.0.1:0", TLSConfig: &tls.Config{
		Certificates: []tls.Certificate{b.pki.Server},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    b.pki.Roots,
		MinVersion:   tls.VersionTLS12,
	}})
	if err := b.Server.AddListener(l); err != nil {
		t.Fatalf("brokertest: listen: %v", err)
	}
	go b.Server.Serve()
	b.Addr = l.Address()
}

// PeerCN is the subject CN of the certificate cl presented, or "".
func PeerCN(cl *mqtt.Client) string {
	tc, ok := cl.Net.Conn.(*tls.Conn)
	if !ok {
		return ""
	}
	if st := tc.ConnectionState(); len(st.PeerCertificates) > 0 {
		return st.PeerCertificates[0].Subject.CommonName
	}
	return ""
}
