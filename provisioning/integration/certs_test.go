package integration

import (
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reefer/tracker/deploy/emulator/emulatortest"
	"github.com/reefer/tracker/internal/faketime"
	"github.com/reefer/tracker/provisioning/certs"
	"github.com/reefer/tracker/provisioning/certs/certstest"
	"github.com/reefer/tracker/provisioning/dps"
	"github.com/reefer/tracker/provisioning/iothub"
)

// TestCertFilesEndToEnd runs the device the way the firmware does: the
// identity loaded from files on disk (provisioning/certs), the emulator CA
// from its PEM file as the server root, DPS, then IoT Hub.
func TestCertFilesEndToEnd(t *testing.T) {
	t.Parallel()
	e := emulatortest.Start(t)
	f := newFleet(t)
	enrollFleet(t, e, f, nil)
	dir := t.TempDir()
	leaf := f.device(t, "dev-files")
	certFile, keyFile := filepath.Join(dir, "dev-files-chain.pem"), filepath.Join(dir, "dev-files.key")
	certstest.WriteCerts(t, certFile, leaf.Cert, f.inter.Cert)
	certstest.WriteKey(t, keyFile, leaf.Key, certstest.SEC1)

	// A key readable by others is refused before anything is sent.
	if err := os.Chmod(keyFile, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := certs.LoadIdentity(certFile, keyFile, time.Now()); !errors.Is(err, certs.ErrKeyPermissions) {
		t.Fatalf("LoadIdentity(key 0644) = %v; want ErrKeyPermissions", err)
	}
	if err := os.Chmod(keyFile, 0o600); err != nil {
		t.Fatal(err)
	}
	id, err := certs.LoadIdentity(certFile, keyFile, time.Now())
	if err != nil {
		t.Fatalf("LoadIdentity: %v", err)
	}
	roots, err := certs.ServerRoots(e.Info().CACertPath)
	if err != nil {
		t.Fatalf("ServerRoots: %v", err)
	}
	cfg := dps.Config{
		Endpoint:       e.DPSEndpoint(),
		IDScope:        e.IDScope(),
		RegistrationID: id.RegistrationID,
		TLS:            certs.TLSConfig(id, roots, ""), // SNI from the endpoint host
		Sleep:          (&faketime.Sleeps{}).Sleep,
		MaxWait:        30 * time.Second,
	}
	res, err := dps.Register(testCtx(t), cfg)
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	// The identity DPS created holds the leaf's SHA-256 thumbprint (spec
	// B.1, G.11): the fingerprint the assignment cache is keyed on.
	dev, err := e.Store().GetDevice(res.AssignedHub, res.DeviceID)
	if err != nil {
		t.Fatal(err)
	}
	if tp := dev.Authentication.X509Thumbprint.PrimaryThumbprint; tp == nil || !strings.EqualFold(*tp, id.FingerprintSHA256) {
		t.Errorf("hub thumbprint = %v; want %s", tp, id.FingerprintSHA256)
	}
	c, err := iothub.New(iothub.Config{
		Hub: res.AssignedHub, DeviceID: res.DeviceID, TLS: certs.TLSConfig(id, roots, ""),
		Sleep: newGate().sleep, OperationTimeout: 10 * time.Second, ConnectTimeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Connect(testCtx(t)); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	if err := c.Send(testCtx(t), iothub.Message{Body: []byte("from files")}); err != nil {
		t.Fatalf("Send: %v", err)
	}
}

// TestCertRefusalsMatchTheService: what LoadIdentity refuses locally is
// what DPS would refuse remotely, so the device fails early with a fix
// instead of an opaque 401.
func TestCertRefusalsMatchTheService(t *testing.T) {
	t.Parallel()
	e := emulatortest.Start(t)
	f := newFleet(t)
	enrollFleet(t, e, f, nil)
	dir := t.TempDir()
	write := func(name string, leaf *certstest.Cert, withIntermediate bool) (certFile, keyFile string) {
		certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
		if withIntermediate {
			certstest.WriteCerts(t, certFile, leaf.Cert, f.inter.Cert)
		} else {
			certstest.WriteCerts(t, certFile, leaf.Cert)
		}
		certstest.WriteKey(t, keyFile, leaf.Key, certstest.PKCS8)
		return certFile, keyFile
	}
	now := time.Now()
	expired := f.inter.Leaf(t, "dev-expired", certstest.Options{NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)})
	future := f.inter.Leaf(t, "dev-future", certstest.Options{NotBefore: now.Add(time.Hour)})
	leafOnly := f.device(t, "dev-leafonly")
	tests := []struct {
		name     string
		cn       string
		leaf     *certstest.Cert
		withInt  bool
		wantLoad error
		wantDPS  error
	}{
		{"expired leaf", "dev-expired", expired, true, certs.ErrCertExpired, dps.ErrUnauthorized},
		{"leaf not yet valid", "dev-future", future, true, certs.ErrCertNotYetValid, dps.ErrUnauthorized},
		{"chain file without the intermediate", "dev-leafonly", leafOnly, false, certs.ErrMissingIntermediate, dps.ErrUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			certFile, keyFile := write(tt.cn, tt.leaf, tt.withInt)
			if _, err := certs.LoadIdentity(certFile, keyFile, now); !errors.Is(err, tt.wantLoad) {
				t.Errorf("LoadIdentity = %v; want %v", err, tt.wantLoad)
			}
			// A device that skipped the local check is refused by DPS.
			pair, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := dps.Register(testCtx(t), dpsConfig(e, tt.cn, pair, &faketime.Sleeps{})); !errors.Is(err, tt.wantDPS) {
				t.Errorf("Register = %v; want %v", err, tt.wantDPS)
			}
		})
	}
}
