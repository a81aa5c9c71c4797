package doctor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/reefer/tracker/provisioning/certs"
	"github.com/reefer/tracker/provisioning/certs/certstest"
)

// hostsResolver resolves from a fixed table, like /etc/hosts.
type hostsResolver map[string][]string

func (h hostsResolver) LookupHost(_ context.Context, host string) ([]string, error) {
	if a, ok := h[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// tlsServer is a TLS endpoint on 127.0.0.1 that behaves like DPS before
// MQTT: it handshakes (verifying client certificates as configured) and
// then waits for the client to speak or leave. silent skips the handshake.
func tlsServer(t *testing.T, cfg *tls.Config, silent bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				if silent {
					io.Copy(io.Discard, c)
					return
				}
				tc := tls.Server(c, cfg)
				if err := tc.Handshake(); err != nil {
					return
				}
				io.Copy(io.Discard, tc)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func pool(cs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range cs {
		p.AddCert(c)
	}
	return p
}

func TestCheckDPS(t *testing.T) {
	t.Parallel()
	serverCA := certstest.Root(t, "DPS Test Root", certstest.Options{})
	srv := serverCA.Leaf(t, "dps.test", certstest.Options{DNSNames: []string{"dps.test"}})
	serverCert := tls.Certificate{Certificate: [][]byte{srv.Cert.Raw}, PrivateKey: srv.Key, Leaf: srv.Cert}
	dev := newDevice(t, "tracker-0042", certstest.Options{})
	id, err := certs.LoadIdentity(dev.certFile, dev.keyFile, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	stranger := certstest.Root(t, "Some Other Root", certstest.Options{})

	serve := func(clientCAs *x509.CertPool, maxVersion uint16) *tls.Config {
		return &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientAuth: tls.RequireAndVerifyClientCert,
			ClientCAs: clientCAs, MaxVersion: maxVersion}
	}
	closedAddr := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}()

	tests := []struct {
		name        string
		addr        string // server address; its port goes into the endpoint
		host        string // endpoint host
		roots       *x509.CertPool
		timeout     time.Duration
		st          Status
		detail, fix string
	}{
		{name: "accepted, TLS 1.3", addr: tlsServer(t, serve(pool(dev.root.Cert), 0), false), host: "dps.test", roots: pool(serverCA.Cert),
			st: OK, detail: `TLS 1.3, server "dps.test" trusted, our certificate accepted`},
		{name: "accepted, TLS 1.2", addr: tlsServer(t, serve(pool(dev.root.Cert), tls.VersionTLS12), false), host: "dps.test", roots: pool(serverCA.Cert),
			st: OK, detail: "TLS 1.2"},
		{name: "client cert refused, TLS 1.3", addr: tlsServer(t, serve(pool(stranger.Cert), 0), false), host: "dps.test", roots: pool(serverCA.Cert),
			st: Fail, detail: "refused our client certificate", fix: "CA is uploaded and verified"},
		{name: "client cert refused, TLS 1.2", addr: tlsServer(t, serve(pool(stranger.Cert), tls.VersionTLS12), false), host: "dps.test", roots: pool(serverCA.Cert),
			st: Fail, detail: "refused our client certificate", fix: "intermediate"},
		{name: "server not trusted", addr: tlsServer(t, serve(pool(dev.root.Cert), 0), false), host: "dps.test", roots: pool(stranger.Cert),
			st: Fail, detail: "not signed by a root we trust", fix: "caFile"},
		{name: "wrong host name", addr: tlsServer(t, serve(pool(dev.root.Cert), 0), false), host: "other.test", roots: pool(serverCA.Cert),
			st: Fail, detail: "other.test", fix: "host name"},
		{name: "unknown host", addr: "127.0.0.1:8883", host: "nowhere.test", roots: pool(serverCA.Cert),
			st: Fail, detail: "cannot resolve nowhere.test", fix: "DNS"},
		{name: "port closed", addr: closedAddr, host: "dps.test", roots: pool(serverCA.Cert),
			st: Fail, detail: "does not answer", fix: "TCP 8883"},
		{name: "no TLS answer", addr: tlsServer(t, nil, true), host: "dps.test", roots: pool(serverCA.Cert), timeout: 300 * time.Millisecond,
			st: Fail, detail: "no answer in time", fix: "TCP 8883"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, port, _ := net.SplitHostPort(tt.addr)
			res := hostsResolver{"dps.test": {"127.0.0.1"}, "other.test": {"127.0.0.1"}}
			cfg := certs.TLSConfig(id, tt.roots, "")
			ck := CheckDPS(context.Background(), net.JoinHostPort(tt.host, port), cfg, res, nil, tt.timeout)
			wantCheck(t, ck, "dps endpoint", tt.st, tt.detail, tt.fix)
		})
	}
}

func TestCheckHubVerdicts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		err         error
		st          Status
		detail, fix string
	}{
		{"accepted", nil, OK, `hub.test accepts device "tracker-1"`, ""},
		{"refused", fmt.Errorf("hub hub.test: %w: not Authorized", ErrHubRefused), Fail,
			"hub refuses the device: deleted or disabled identity", "the tracker will re-provision by itself"},
		{"unreachable", errors.New("dial tcp: connection refused"), Fail, "cannot reach hub.test", "TCP 8883"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var gotHub, gotID string
			probe := func(_ context.Context, hub, id string, _ *tls.Config) error {
				gotHub, gotID = hub, id
				return tt.err
			}
			ck := CheckHub(context.Background(), "hub.test", "tracker-1", &tls.Config{}, probe, time.Second)
			wantCheck(t, ck, "hub", tt.st, tt.detail, tt.fix)
			if gotHub != "hub.test" || gotID != "tracker-1" {
				t.Errorf("probe got %q, %q; want hub.test, tracker-1", gotHub, gotID)
			}
		})
	}
}
