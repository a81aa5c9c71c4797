package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/reefer/tracker/deploy/emulator"
	"github.com/reefer/tracker/internal/syncbuf"
)

func TestRunServesAndStops(t *testing.T) {
	orig := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(orig) })
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	var out syncbuf.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--data", dir, "--mqtt", "127.0.0.1:0", "--https", "127.0.0.1:0", "--hubs", "2", "--id-scope", "0ne00TEST", "--log-level", "debug", "--telemetry-per-second", "100",
			"--credential-policy", "trackers", "--credential-policy", "spare", "--issued-cert-validity", "10m", "--memory-limit", "900MiB"}, &out)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(out.String(), "msg=ready") {
		if time.Now().After(deadline) {
			t.Fatalf("no ready line; log:\n%s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(out.String(), `msg="soft memory limit 900MiB"`) || debug.SetMemoryLimit(-1) != 900<<20 {
		t.Errorf("--memory-limit 900MiB: runtime limit %d; log:\n%s", debug.SetMemoryLimit(-1), out.String())
	}
	b, err := os.ReadFile(filepath.Join(dir, "emulator.json"))
	if err != nil {
		t.Fatal(err)
	}
	var info emulator.Info
	if err := json.Unmarshal(b, &info); err != nil {
		t.Fatal(err)
	}
	if info.DPS.IDScope != "0ne00TEST" || len(info.Hubs) != 2 || !strings.HasPrefix(info.Hubs[0].ConnectionString, "HostName="+info.Hubs[0].HostName+";SharedAccessKeyName=iothubowner;SharedAccessKey=") ||
		len(info.Hubs[1].Policies) != 5 || info.Hubs[1].Policies["service"] == "" {
		t.Errorf("emulator.json = %s", b)
	}
	// docs/protocol.md A.5: the credential policies asked for exist, with
	// the validity of the flag, and the credential root is published.
	if strings.Join(info.CredentialPolicies, ",") != "spare,trackers" || info.IssuedCertificateValidity != "10m0s" {
		t.Errorf("emulator.json credential policies %v, validity %q", info.CredentialPolicies, info.IssuedCertificateValidity)
	}
	if rootPEM, err := os.ReadFile(info.CredentialRootCertPath); err != nil || !strings.Contains(string(rootPEM), "BEGIN CERTIFICATE") {
		t.Errorf("credential root %s: %v", info.CredentialRootCertPath, err)
	}
	// Every listener completes a TLS handshake with the published CA.
	caPEM, _ := os.ReadFile(info.CACertPath)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	for _, addr := range []string{info.Hubs[0].MQTTAddress, info.Hubs[1].MQTTAddress, info.ServiceAddress} {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "localhost"})
		if err != nil {
			// MQTT listeners require a client certificate; the
			// server certificate must still verify.
			if !strings.Contains(err.Error(), "certificate") || strings.Contains(err.Error(), "x509") {
				t.Errorf("TLS to %s: %v", addr, err)
			}
			continue
		}
		conn.Close()
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run = %v; want nil after cancel", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return after cancel")
	}
}

func TestRunErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"port taken", []string{"--data", t.TempDir(), "--mqtt", ln.Addr().String(), "--https", "-"}, "already in use"},
		{"bad level", []string{"--log-level", "loud"}, "--log-level"},
		{"bad hubs", []string{"--hubs", "0"}, "--hubs"},
		{"negative telemetry rate", []string{"--telemetry-per-second", "-1"}, "--telemetry-per-second"},
		{"issued validity too short", []string{"--issued-cert-validity", "100ms"}, "--issued-cert-validity"},
		{"bad credential policy name", []string{"--data", t.TempDir(), "--mqtt", "127.0.0.1:0", "--https", "-", "--credential-policy", "no spaces"}, "credential policy"},
		{"bad memory limit", []string{"--memory-limit", "1GB"}, "memory-limit"},
		{"memory limit too low", []string{"--data", t.TempDir(), "--memory-limit", "1MiB"}, "--memory-limit: memory limit below 64MiB"},
		{"extra args", []string{"--data", t.TempDir(), "extra"}, "unexpected"},
		{"unknown flag", []string{"--nope"}, "not defined"},
	}
	for _, c := range cases {
		var out syncbuf.Buffer
		err := run(context.Background(), c.args, &out)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("run(%s) = %v; want error containing %q", c.name, err, c.want)
		}
	}
}
