package doctor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/reefer/tracker/provisioning/iothub"
)

// Resolver looks host names up; *net.Resolver is one.
type Resolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// Dialer opens connections; *net.Dialer is one.
type Dialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// DefaultTimeout bounds each network check.
const DefaultTimeout = 10 * time.Second

// settle is how long to wait after a TLS 1.3 handshake for the server's
// verdict on our certificate: in TLS 1.3 the client finishes first, and a
// server that rejects the client certificate says so with an alert right
// after. A server that accepts it waits silently for MQTT CONNECT.
const settle = 500 * time.Millisecond

const firewallFix = "outbound TCP 8883 must be open (mobile APN, ship's firewall); check the network with: ping -c1 8.8.8.8"

// CheckDPS resolves the DPS endpoint (host:port) and makes a TLS handshake
// with it using tlsCfg (the device certificate and trust roots the tracker
// uses, ServerName set). It sends no MQTT at all: registering is billable
// (docs/protocol.md F), and a handshake is enough to prove DNS, the route, the server's
// certificate against our roots, and the clock.
func CheckDPS(ctx context.Context, endpoint string, tlsCfg *tls.Config, r Resolver, d Dialer, timeout time.Duration) Check {
	ck := Check{Name: "dps endpoint"}
	host, port, err := net.SplitHostPort(endpoint)
	if err != nil {
		ck.Status, ck.Detail, ck.Fix = Fail, fmt.Sprintf("dpsEndpoint %q: %v", endpoint, err), `set dpsEndpoint to host:port, e.g. "global.azure-devices-provisioning.net:8883"`
		return ck
	}
	if r == nil {
		r = net.DefaultResolver
	}
	if d == nil {
		d = &net.Dialer{}
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	addrs, err := r.LookupHost(ctx, host)
	if err != nil || len(addrs) == 0 {
		ck.Status = Fail
		ck.Detail = fmt.Sprintf("cannot resolve %s: %v", host, err)
		ck.Fix = "check the network and DNS (resolvectl status; cat /etc/resolv.conf), and the dpsEndpoint host name"
		return ck
	}
	var conn net.Conn
	var dialErr error
	for _, a := range addrs {
		if conn, dialErr = d.DialContext(ctx, "tcp", net.JoinHostPort(a, port)); dialErr == nil {
			break
		}
	}
	if dialErr != nil {
		ck.Status = Fail
		ck.Detail = fmt.Sprintf("%s resolves to %s but TCP port %s does not answer: %v", host, strings.Join(addrs, ", "), port, dialErr)
		ck.Fix = firewallFix
		return ck
	}
	defer conn.Close()
	cfg := tlsCfg.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		ck.Status = Fail
		ck.Detail, ck.Fix = tlsProblem(endpoint, err)
		return ck
	}
	st := tc.ConnectionState()
	// Wait briefly for a post-handshake rejection of our certificate.
	_ = tc.SetReadDeadline(time.Now().Add(min(settle, timeout)))
	var one [1]byte
	_, err = tc.Read(one[:])
	var ne net.Error
	switch {
	case err == nil, errors.As(err, &ne) && ne.Timeout():
	case errors.Is(err, io.EOF):
		ck.Status = Fail
		ck.Detail = fmt.Sprintf("%s closed the connection right after the TLS handshake", endpoint)
		ck.Fix = "the server dropped our client certificate: check that the device certificate chain is enrolled in DPS"
		return ck
	default:
		ck.Status = Fail
		ck.Detail, ck.Fix = tlsProblem(endpoint, err)
		return ck
	}
	ck.Status = OK
	ck.Detail = fmt.Sprintf("%s (%s): %s, server %q trusted, our certificate accepted", endpoint, conn.RemoteAddr(), tls.VersionName(st.Version), st.PeerCertificates[0].Subject.CommonName)
	return ck
}

// tlsProblem explains a handshake failure.
func tlsProblem(endpoint string, err error) (detail, fix string) {
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var host x509.HostnameError
	var alert tls.AlertError
	var op *net.OpError
	switch {
	case errors.As(err, &unknown):
		return fmt.Sprintf("TLS to %s: the server's certificate is not signed by a root we trust: %v", endpoint, err),
			"leave caFile out to trust Azure's roots; with the emulator, caFile must be its CA (ca.pem)"
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return fmt.Sprintf("TLS to %s: %v", endpoint, err), "check the clock (see clock): the server certificate looks expired or not yet valid"
	case errors.As(err, &host):
		return fmt.Sprintf("TLS to %s: %v", endpoint, err), "check the dpsEndpoint host name"
	case errors.As(err, &alert), errors.As(err, &op) && op.Op == "remote error":
		return fmt.Sprintf("TLS to %s: the server refused our client certificate: %v", endpoint, err),
			"check that the certificate chain file holds the device certificate and its intermediate, and that the CA is uploaded and verified in DPS"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("TLS to %s: no answer in time: %v", endpoint, err), firewallFix
	}
	return fmt.Sprintf("TLS to %s: %v", endpoint, err), firewallFix
}

// ErrHubRefused means the hub answered CONNECT with "not authorized"
// (CONNACK 5, or 4): the identity is deleted or disabled, or holds another
// certificate's thumbprint (docs/protocol.md B.7). It is iothub's refusal.
var ErrHubRefused = iothub.ErrNotAuthorized

// HubProbe makes one connection attempt to hub as deviceID and closes it;
// it returns an error wrapping ErrHubRefused when the hub refuses the
// device. iothub.Probe is the real one.
type HubProbe func(ctx context.Context, hub, deviceID string, tlsCfg *tls.Config) error

// CheckHub probes the hub of the cached assignment with the device's TLS
// config. probe nil means iothub.Probe.
func CheckHub(ctx context.Context, hub, deviceID string, tlsCfg *tls.Config, probe HubProbe, timeout time.Duration) Check {
	ck := Check{Name: "hub"}
	if probe == nil {
		probe = iothub.Probe
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := probe(ctx, hub, deviceID, tlsCfg)
	switch {
	case err == nil:
		ck.Status, ck.Detail = OK, fmt.Sprintf("%s accepts device %q", hub, deviceID)
	case errors.Is(err, ErrHubRefused):
		ck.Status = Fail
		ck.Detail = fmt.Sprintf("hub refuses the device: deleted or disabled identity (%s answered %q to device %q)", hub, refusal(err), deviceID)
		ck.Fix = "the tracker will re-provision by itself through DPS; if DPS refuses too, check the device's enrollment (enabled, CA verified)"
	default:
		ck.Status = Fail
		ck.Detail = fmt.Sprintf("cannot reach %s: %v", hub, err)
		ck.Fix = firewallFix
	}
	return ck
}

// refusal is what the hub answered: the innermost error under the
// refusal, e.g. paho's "not Authorized".
func refusal(err error) error {
	for {
		var next error
		switch e := err.(type) {
		case interface{ Unwrap() error }:
			next = e.Unwrap()
		case interface{ Unwrap() []error }:
			// fmt.Errorf("%w: %w", kind, cause): the cause is the last.
			if errs := e.Unwrap(); len(errs) > 0 {
				next = errs[len(errs)-1]
			}
		}
		if next == nil {
			return err
		}
		err = next
	}
}
