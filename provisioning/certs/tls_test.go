package certs

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/reefer/tracker/provisioning/certs/certstest"
)

func TestEmbeddedRoots(t *testing.T) {
	t.Parallel()
	// docs/protocol.md A.1, B.1. Fingerprints as published by DigiCert and Microsoft.
	want := map[string]string{
		"CN=DigiCert Global Root G2,OU=www.digicert.com,O=DigiCert Inc,C=US":            "cb3ccbb76031e5e0138f8dd39a23f9de47ffc35e43c1144cea27d46a5ab1cb5f",
		"CN=DigiCert Global Root G3,OU=www.digicert.com,O=DigiCert Inc,C=US":            "31ad6648f8104138c738f39ea4320133393e3a18cc02296ef97c2ac9ef6731d0",
		"CN=Microsoft RSA Root Certificate Authority 2017,O=Microsoft Corporation,C=US": "c741f70f4b2a8d88bf2e71c14122ef53ef10eba0cfa5e64cfa20f418853073e0",
	}
	certs, err := embeddedRoots()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, c := range certs {
		sum := sha256.Sum256(c.Raw)
		got[c.Subject.String()] = hex.EncodeToString(sum[:])
	}
	if len(certs) != len(want) {
		t.Errorf("embedded %d roots; want %d", len(certs), len(want))
	}
	for subj, fp := range want {
		if got[subj] != fp {
			t.Errorf("embedded root %q has fingerprint %q; want %q", subj, got[subj], fp)
		}
	}

	// And the pool ServerRoots builds holds exactly those subjects.
	pool, err := ServerRoots("")
	if err != nil {
		t.Fatal(err)
	}
	if subj := poolSubjects(t, pool); !slices.Equal(subj, sortedKeys(want)) {
		t.Errorf("ServerRoots(\"\") subjects = %q; want %q", subj, sortedKeys(want))
	}
}

func sortedKeys(m map[string]string) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// poolSubjects lists a pool's subjects as sorted strings. Subjects is
// deprecated only for system pools, which this is not.
func poolSubjects(t *testing.T, pool *x509.CertPool) []string {
	t.Helper()
	var out []string
	for _, raw := range pool.Subjects() { //nolint:staticcheck // not a system pool
		var rdn pkix.RDNSequence
		if _, err := asn1.Unmarshal(raw, &rdn); err != nil {
			t.Fatal(err)
		}
		var n pkix.Name
		n.FillFromRDNSequence(&rdn)
		out = append(out, n.String())
	}
	slices.Sort(out)
	return out
}

func TestServerRootsFileReplaces(t *testing.T) {
	t.Parallel()
	a := certstest.Root(t, "Emulator CA A", certstest.Options{})
	b := certstest.Root(t, "Emulator CA B", certstest.Options{})
	dir := t.TempDir()
	file := filepath.Join(dir, "ca.pem")
	certstest.WriteCerts(t, file, a.Cert, b.Cert)
	pool, err := ServerRoots(file)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := poolSubjects(t, pool), []string{"CN=Emulator CA A", "CN=Emulator CA B"}; !slices.Equal(got, want) {
		t.Errorf("ServerRoots(%s) subjects = %q; want only %q (the file replaces Azure's roots)", file, got, want)
	}

	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, []byte("not pem\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{empty, filepath.Join(dir, "missing.pem")} {
		// The error says what to do, not only what is wrong.
		if _, err := ServerRoots(f); err == nil || !strings.Contains(err.Error(), "server CA file") ||
			!strings.Contains(err.Error(), "copy the right file there, or remove caFile from the config to trust the built-in Azure roots") {
			t.Errorf("ServerRoots(%s) = %v; want an error about the server CA file saying what to do", f, err)
		}
	}
}

func TestTLSConfigFields(t *testing.T) {
	t.Parallel()
	p := newPKI(t, "sensor-tls", certstest.ECDSA)
	certFile, keyFile := files(t, p.leaf.Key, certstest.PKCS8, p.leaf.Cert, p.inter.Cert)
	id, err := LoadIdentity(certFile, keyFile, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	roots, _ := ServerRoots("")
	cfg := TLSConfig(id, roots, "global.azure-devices-provisioning.net")
	if cfg.MinVersion != tls.VersionTLS12 || cfg.InsecureSkipVerify || cfg.RootCAs != roots ||
		cfg.ServerName != "global.azure-devices-provisioning.net" || len(cfg.Certificates) != 1 || cfg.GetClientCertificate == nil {
		t.Errorf("TLSConfig: MinVersion %#x, InsecureSkipVerify %v, RootCAs set %v, ServerName %q, %d certificates, GetClientCertificate set %v; want TLS 1.2+, verification on, the roots, SNI and the client chain",
			cfg.MinVersion, cfg.InsecureSkipVerify, cfg.RootCAs == roots, cfg.ServerName, len(cfg.Certificates), cfg.GetClientCertificate != nil)
	}
	if cfg := TLSConfig(nil, roots, "h"); cfg.Certificates != nil || cfg.GetClientCertificate != nil {
		t.Error("TLSConfig(nil, ...) has a client certificate")
	}
}

// server is a TLS server on 127.0.0.1 that records what each client
// presented.
type server struct {
	addr string
	seen chan tls.ConnectionState
}

func startServer(t *testing.T, cfg *tls.Config) *server {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{addr: ln.Addr().String(), seen: make(chan tls.ConnectionState, 4)}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			tc.SetDeadline(time.Now().Add(10 * time.Second))
			if tc.Handshake() == nil {
				s.seen <- tc.ConnectionState()
			}
			tc.Close()
		}
	}()
	return s
}

// dial runs one handshake and reads until the server closes, so that a
// client certificate the server rejects surfaces as an error (in TLS 1.3
// the client learns of it only after its handshake returns).
func dial(addr string, cfg *tls.Config) error {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = c.Read(make([]byte, 1))
	if err != nil && err.Error() == "EOF" {
		return nil
	}
	return err
}

func TestTLSConfigHandshake(t *testing.T) {
	t.Parallel()
	device := newPKI(t, "sensor-thl-001", certstest.ECDSA)
	certFile, keyFile := files(t, device.leaf.Key, certstest.PKCS8, device.leaf.Cert, device.inter.Cert)
	id, err := LoadIdentity(certFile, keyFile, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// The server side: its own CA, a certificate for the hub name.
	const host = "hub-x.azure-devices.net"
	srvCA := certstest.Root(t, "Server Root", certstest.Options{})
	srv := srvCA.Leaf(t, host, certstest.Options{DNSNames: []string{host}})
	srvCert := tls.Certificate{Certificate: [][]byte{srv.Cert.Raw}, PrivateKey: srv.Key}
	srvCAFile := filepath.Join(t.TempDir(), "server-ca.pem")
	certstest.WriteCerts(t, srvCAFile, srvCA.Cert)
	roots, err := ServerRoots(srvCAFile)
	if err != nil {
		t.Fatal(err)
	}
	deviceRoots := x509.NewCertPool()
	deviceRoots.AddCert(device.root.Cert)

	t.Run("mutual TLS like IoT Hub", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, &tls.Config{
			Certificates: []tls.Certificate{srvCert},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    deviceRoots, // only the root: the intermediate must come from the device
		})
		if err := dial(s.addr, TLSConfig(id, roots, host)); err != nil {
			t.Fatalf("handshake: %v", err)
		}
		st := <-s.seen
		if st.ServerName != host {
			t.Errorf("server saw SNI %q; want %q", st.ServerName, host)
		}
		if len(st.VerifiedChains) != 1 || len(st.VerifiedChains[0]) != 3 || st.VerifiedChains[0][0].Subject.CommonName != id.RegistrationID {
			t.Errorf("server verified chains %v; want leaf %q → intermediate → root", st.VerifiedChains, id.RegistrationID)
		}
	})

	t.Run("server lists other CAs", func(t *testing.T) {
		t.Parallel()
		// The certificate request names an unrelated CA; the device
		// still presents its chain and lets the server decide.
		other := certstest.Root(t, "Some Other CA", certstest.Options{})
		otherPool := x509.NewCertPool()
		otherPool.AddCert(other.Cert)
		s := startServer(t, &tls.Config{
			Certificates: []tls.Certificate{srvCert},
			ClientAuth:   tls.RequireAnyClientCert,
			ClientCAs:    otherPool,
		})
		if err := dial(s.addr, TLSConfig(id, roots, host)); err != nil {
			t.Fatalf("handshake: %v", err)
		}
		if st := <-s.seen; len(st.PeerCertificates) != 2 {
			t.Errorf("server got %d client certificates; want leaf + intermediate", len(st.PeerCertificates))
		}
	})

	t.Run("refusals", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, &tls.Config{Certificates: []tls.Certificate{srvCert}})
		azure, err := ServerRoots("")
		if err != nil {
			t.Fatal(err)
		}
		var hostErr x509.HostnameError
		if err := dial(s.addr, TLSConfig(id, roots, "other.azure-devices.net")); !errors.As(err, &hostErr) {
			t.Errorf("wrong server name: %v; want a hostname error", err)
		}
		var authErr x509.UnknownAuthorityError
		if err := dial(s.addr, TLSConfig(id, azure, host)); !errors.As(err, &authErr) {
			t.Errorf("Azure roots against a test server: %v; want unknown authority", err)
		}
		old := startServer(t, &tls.Config{Certificates: []tls.Certificate{srvCert}, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
		if err := dial(old.addr, TLSConfig(id, roots, host)); err == nil || !strings.Contains(err.Error(), "protocol version") {
			t.Errorf("TLS 1.1 server: %v; want a protocol version error", err)
		}
	})
}
