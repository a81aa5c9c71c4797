package emulator

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/reefer/tracker/deploy/emulator/store"
)

// LocalConfig is the configuration of a throwaway emulator for tests and
// tools: data in dataDir, every listener on 127.0.0.1 with a free port,
// DPS retry-after 0, no fsync. AZEMU_TEST_LOG=1 sends its debug log to
// stderr (default: discarded).
func LocalConfig(dataDir string) Config {
	return Config{
		DataDir:    dataDir,
		MQTTAddr:   "127.0.0.1:0",
		HTTPSAddr:  "127.0.0.1:0",
		RetryAfter: -1,
		NoSync:     true,
		Logger:     logFromEnv(),
	}
}

// StartLocal starts an emulator with LocalConfig(dataDir) adjusted by mod
// (e.g. Hubs, rate limits); test packages wrap it (package emulatortest).
func StartLocal(dataDir string, mod ...func(*Config)) (*Emulator, error) {
	cfg := LocalConfig(dataDir)
	for _, m := range mod {
		m(&cfg)
	}
	e, err := New(cfg)
	if err != nil {
		return nil, err
	}
	if err := e.Start(context.Background()); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

func logFromEnv() *slog.Logger {
	if os.Getenv("AZEMU_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// IDScope is the DPS ID scope.
func (e *Emulator) IDScope() string { return e.info.DPS.IDScope }

// DPSEndpoint is host:port of the DPS device endpoint.
func (e *Emulator) DPSEndpoint() string { return e.info.DPS.DeviceEndpoint }

// HubHost returns the host name of hub i (0 = hub1), as devices get it in
// assignedHub and dial it.
func (e *Emulator) HubHost(i int) string { return e.info.Hubs[i].HostName }

// ClientTLSConfig returns a TLS config a device would use against the
// emulator: the emulator CA as root, SNI "localhost" and the given client
// certificate (leaf + intermediates).
func (e *Emulator) ClientTLSConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{RootCAs: e.CACertPool(), ServerName: "localhost", Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
}

// TrustCA uploads ca to the DPS as a verified CA certificate ("verified on
// upload", docs/protocol.md C).
func (e *Emulator) TrustCA(name string, ca *x509.Certificate) error {
	_, err := e.store.PutCACertificate(store.DPSOwner, name, store.EncodeCertificatePEM(ca), true, "")
	return err
}

// EnrollGroup creates (or replaces) an X.509 enrollment group whose
// signing certificate is signer, and trusts signer as a verified DPS CA so
// chains ending there are accepted. mod may adjust the group before it is
// stored (hubs, policies, initial twin, status).
func (e *Emulator) EnrollGroup(id string, signer *x509.Certificate, mod func(*store.EnrollmentGroup)) (store.EnrollmentGroup, error) {
	if err := e.TrustCA("ca-"+strings.ToLower(id), signer); err != nil {
		return store.EnrollmentGroup{}, err
	}
	g := store.EnrollmentGroup{EnrollmentGroupID: id, Attestation: store.AttestationMechanism{Type: store.AttestationX509,
		X509: &store.X509Attestation{SigningCertificates: &store.X509Certificates{
			Primary: &store.X509CertificateWithInfo{Certificate: store.EncodeCertificatePEM(signer)}}}}}
	if mod != nil {
		mod(&g)
	}
	return e.store.PutEnrollmentGroup(g, "*")
}

// EnrollDevice creates (or replaces) an individual X.509 enrollment for a
// device leaf certificate; the registration id is the leaf CN.
func (e *Emulator) EnrollDevice(leaf *x509.Certificate, mod func(*store.IndividualEnrollment)) (store.IndividualEnrollment, error) {
	en := store.IndividualEnrollment{RegistrationID: leaf.Subject.CommonName, Attestation: store.AttestationMechanism{Type: store.AttestationX509,
		X509: &store.X509Attestation{ClientCertificates: &store.X509Certificates{
			Primary: &store.X509CertificateWithInfo{Certificate: store.EncodeCertificatePEM(leaf)}}}}}
	if mod != nil {
		mod(&en)
	}
	return e.store.PutIndividualEnrollment(en, "*")
}

// CreateCredentialPolicy creates (or changes the validity of) a credential
// policy whose issuing CA signs the csr of devices whose enrollment names
// it in CredentialPolicyName (docs/protocol.md A.5). validity 0 is the
// emulator's default (Config.IssuedCertValidity).
func (e *Emulator) CreateCredentialPolicy(name string, validity time.Duration) (store.CredentialPolicy, error) {
	return e.store.PutCredentialPolicy(store.CredentialPolicy{Name: name, ValiditySeconds: int64(validity / time.Second)}, "")
}

// CreateDevice creates a selfSigned hub identity keyed by the SHA-256
// thumbprint of leaf, as DPS would (docs/protocol.md B.1).
func (e *Emulator) CreateDevice(hub, id string, leaf *x509.Certificate) (store.Device, error) {
	tp := store.ThumbprintSHA256(leaf)
	return e.store.PutDevice(hub, store.Device{DeviceID: id, Authentication: store.AuthenticationMechanism{
		Type: store.AuthSelfSigned, X509Thumbprint: store.X509Thumbprint{PrimaryThumbprint: &tp}}}, "")
}

// SetDeviceStatus enables or disables a hub identity; disabling closes its
// connection at once (docs/protocol.md B.7).
func (e *Emulator) SetDeviceStatus(hub, id, status string) error {
	d, err := e.store.GetDevice(hub, id)
	if err != nil {
		return err
	}
	d.Status = status
	_, err = e.store.PutDevice(hub, d, "*")
	return err
}

// UpdateDesired merges desired properties into a device twin (null
// deletes) and returns the new desired $version; a connected, subscribed
// device is notified.
func (e *Emulator) UpdateDesired(hub, id string, desired map[string]any) (int64, error) {
	var p store.TwinPatch
	p.Properties.Desired = desired
	tw, err := e.store.UpdateTwin(hub, id, p, "")
	if err != nil {
		return 0, err
	}
	return tw.Properties.Desired.Version, nil
}

// SendC2D queues a cloud-to-device message and returns its message id.
func (e *Emulator) SendC2D(hub, id string, body []byte, props map[string]string) (string, error) {
	m, err := e.store.EnqueueC2D(hub, id, store.C2DMessage{Body: body, Properties: props})
	return m.MessageID, err
}

// Telemetry returns the messages recorded for a device, oldest first.
func (e *Emulator) Telemetry(hub, id string) []store.Message { return e.store.Telemetry(hub, id) }

// TelemetryCount is len(Telemetry(hub, id)) without the copy, for
// benchmarks that watch thousands of messages arrive.
func (e *Emulator) TelemetryCount(hub, id string) int { return e.store.TelemetryCount(hub, id) }

// WaitTelemetry waits until at least n messages are recorded for the
// device and returns them.
func (e *Emulator) WaitTelemetry(ctx context.Context, hub, id string, n int) ([]store.Message, error) {
	for {
		sig := e.store.TelemetrySignal()
		if m := e.store.Telemetry(hub, id); len(m) >= n {
			return m, nil
		}
		select {
		case <-sig:
		case <-ctx.Done():
			return e.store.Telemetry(hub, id), fmt.Errorf("wait for %d messages from %s on %s: %w", n, id, hub, ctx.Err())
		}
	}
}

// IsConnected reports whether the device has a live MQTT connection.
func (e *Emulator) IsConnected(hub, id string) bool { return e.hub.conn(hub, id) != nil }
