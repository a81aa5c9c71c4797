// Package emulatortest starts the local DPS + IoT Hub emulator for a test,
// so the emulator itself need not import package testing.
package emulatortest

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/reefer/tracker/deploy/emulator"
	"github.com/reefer/tracker/deploy/emulator/store"
)

// Start starts an emulator for a test: data in t.TempDir(), every listener
// on 127.0.0.1 with a free port, DPS retry-after 0 (emulator.LocalConfig),
// closed by t.Cleanup. mod may adjust the config (e.g. Hubs, rate limits).
// Set AZEMU_TEST_LOG=1 to see the emulator's debug log on stderr.
func Start(t testing.TB, mod ...func(*emulator.Config)) *emulator.Emulator {
	t.Helper()
	e, err := emulator.StartLocal(t.TempDir(), mod...)
	if err != nil {
		t.Fatalf("start emulator: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// Policy is a credential policy with its certificates parsed.
type Policy struct {
	store.CredentialPolicy
	// IssuingCA signs the issued leaves; Root is the emulator's credential
	// root above it. Roots is a pool holding Root, to verify an issued
	// chain.
	IssuingCA, Root *x509.Certificate
	Roots           *x509.CertPool
}

// CredentialPolicy creates a credential policy on e whose issued
// certificates are valid for validity (whole seconds; 0 is the emulator's
// default). Enrollments name it in CredentialPolicyName to have DPS sign
// the csr of registering devices (docs/protocol.md A.5):
//
//	pol := emulatortest.CredentialPolicy(t, e, "trackers", 2*time.Minute)
//	e.EnrollGroup("fleet", ca, func(g *store.EnrollmentGroup) { g.CredentialPolicyName = pol.Name })
func CredentialPolicy(t testing.TB, e *emulator.Emulator, name string, validity time.Duration) Policy {
	t.Helper()
	p, err := e.CreateCredentialPolicy(name, validity)
	if err != nil {
		t.Fatalf("credential policy %s: %v", name, err)
	}
	issuing, root, err := p.Certificates()
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	return Policy{CredentialPolicy: p, IssuingCA: issuing, Root: root, Roots: roots}
}
