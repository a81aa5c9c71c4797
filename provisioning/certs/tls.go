package certs

import (
	"crypto/tls"
	"crypto/x509"
	"embed"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// Azure's server roots (docs/protocol.md A.1, B.1): DigiCert Global Root G2 and
// Microsoft RSA Root Certificate Authority 2017 for DPS and IoT Hub, and
// DigiCert Global Root G3 for hubs with ECC certificates. Copied from
// Debian's ca-certificates. Intermediates and leaves are not pinned: Azure
// rotates them (docs/protocol.md A.1).
//
//go:embed roots/*.pem
var rootsFS embed.FS

// ServerRoots returns the pool the device trusts for DPS and IoT Hub
// server certificates. With caFile empty it is Azure's roots, embedded in
// the binary so that trust doesn't depend on the board's CA bundle. A
// caFile REPLACES them (for the local emulator, or a future Azure root
// migration): it must hold at least one PEM certificate.
func ServerRoots(caFile string) (*x509.CertPool, error) {
	if caFile == "" {
		certs, err := embeddedRoots()
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		for _, c := range certs {
			pool.AddCert(c)
		}
		return pool, nil
	}
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("server CA file: %w; %s", err, caFileFix)
	}
	certs, err := ParsePEMCerts(data)
	if err != nil {
		return nil, fmt.Errorf("server CA file %s is not usable: %w; %s", caFile, err, caFileFix)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// caFileFix is what to do about an unusable caFile.
const caFileFix = "caFile must hold the PEM certificate(s) (-----BEGIN CERTIFICATE-----) of the CA that signs " +
	"the DPS and IoT Hub server certificates: copy the right file there, or remove caFile from the config " +
	"to trust the built-in Azure roots"

func embeddedRoots() ([]*x509.Certificate, error) {
	files, err := fs.Glob(rootsFS, "roots/*.pem")
	if err != nil {
		return nil, err
	}
	var all []*x509.Certificate
	for _, f := range files {
		data, err := rootsFS.ReadFile(f)
		if err != nil {
			return nil, err
		}
		certs, err := ParsePEMCerts(data)
		if err != nil {
			return nil, fmt.Errorf("embedded %s: %w", f, err)
		}
		all = append(all, certs...)
	}
	return all, nil
}

// ParsePEMCerts parses every CERTIFICATE block of data, in order, skipping
// other block types. It fails when there is none.
func ParsePEMCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no CERTIFICATE PEM block")
	}
	return certs, nil
}

// TLSConfig is the client configuration for DPS and IoT Hub: TLS 1.2 or
// later (docs/protocol.md A.1, B.1), the server verified against roots, SNI and name
// check against serverName (docs/protocol.md A.1: send SNI), and the device chain as
// client certificate (mutual TLS, docs/protocol.md B.1). It never skips verification.
// id may be nil for a connection without a client certificate.
func TLSConfig(id *Identity, roots *x509.CertPool, serverName string) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    roots,
		ServerName: serverName,
	}
	if id != nil {
		cert := id.Cert
		cfg.Certificates = []tls.Certificate{cert}
		// Present the chain whatever CA names the server lists in its
		// certificate request: with Certificates alone, crypto/tls sends
		// nothing when the list doesn't name our issuer, and the server
		// (not the device) should be the one to decide.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &cert, nil
		}
	}
	return cfg
}
