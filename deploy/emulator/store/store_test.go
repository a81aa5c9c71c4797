package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/reefer/tracker/deploy/emulator/pki"
)

var testHubs = []Hub{{Name: "hub1", HostName: "localhost:1"}, {Name: "hub2", HostName: "localhost:2"}}

func openTest(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir, Options{Hubs: testHubs, NoSync: true})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func ptr(s string) *string { return &s }

func selfSignedDevice(id, thumb string) Device {
	return Device{DeviceID: id, Authentication: AuthenticationMechanism{Type: AuthSelfSigned,
		X509Thumbprint: X509Thumbprint{PrimaryThumbprint: ptr(thumb)}}}
}

const thumb64 = "AABBCCDDEEFF00112233445566778899AABBCCDDEEFF00112233445566778899"

func TestDeviceLifecycle(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openTest(t, dir)
	var events []string
	var mu sync.Mutex
	s.AddObserver(ObserverFuncs{OnDevice: func(hub, id string, old, new *Device) {
		mu.Lock()
		defer mu.Unlock()
		events = append(events, fmt.Sprintf("%s/%s old=%v new=%v", hub, id, old != nil, new != nil))
	}})
	d, err := s.PutDevice("localhost:1", selfSignedDevice("dev-1", thumb64), "")
	if err != nil {
		t.Fatalf("PutDevice create: %v", err)
	}
	if d.GenerationID == "" || d.ETag == "" || d.Status != StatusEnabled || d.ConnectionState != Disconnected {
		t.Errorf("created device = %+v; want generationId, etag, enabled, Disconnected", d)
	}
	if _, err := s.PutDevice("localhost:1", selfSignedDevice("dev-1", thumb64), ""); !errors.Is(err, ErrDeviceExists) {
		t.Errorf("PutDevice existing without If-Match = %v; want ErrDeviceExists", err)
	}
	if _, err := s.PutDevice("localhost:1", selfSignedDevice("dev-1", thumb64), `"stale"`); !errors.Is(err, ErrPrecondition) {
		t.Errorf("PutDevice stale etag = %v; want ErrPrecondition", err)
	}
	if _, err := s.PutDevice("localhost:1", selfSignedDevice("nope", thumb64), `"x"`); !errors.Is(err, ErrDeviceNotFound) {
		t.Errorf("PutDevice etag on missing = %v; want ErrDeviceNotFound", err)
	}
	upd := selfSignedDevice("dev-1", thumb64)
	upd.Status = StatusDisabled
	d2, err := s.PutDevice("localhost:1", upd, `"`+d.ETag+`"`)
	if err != nil {
		t.Fatalf("PutDevice update: %v", err)
	}
	if d2.GenerationID != d.GenerationID || d2.ETag == d.ETag || d2.Status != StatusDisabled {
		t.Errorf("updated = %+v; want same generation, new etag, disabled", d2)
	}
	if _, err := s.GetDevice("localhost:2", "dev-1"); !errors.Is(err, ErrDeviceNotFound) {
		t.Errorf("GetDevice on other hub = %v; want ErrDeviceNotFound", err)
	}
	if _, err := s.GetDevice("nohub", "dev-1"); !errors.Is(err, ErrHubNotFound) {
		t.Errorf("GetDevice unknown hub = %v; want ErrHubNotFound", err)
	}
	for _, bad := range []Device{
		{DeviceID: "bad id"},
		{DeviceID: "x", Authentication: AuthenticationMechanism{Type: AuthSelfSigned}},
		{DeviceID: "x", Authentication: AuthenticationMechanism{Type: AuthSelfSigned, X509Thumbprint: X509Thumbprint{PrimaryThumbprint: ptr("zz")}}},
		{DeviceID: "x", Status: "weird"},
	} {
		if _, err := s.PutDevice("localhost:1", bad, "*"); !errors.Is(err, ErrInvalid) {
			t.Errorf("PutDevice(%+v) = %v; want ErrInvalid", bad, err)
		}
	}
	sas, err := s.PutDevice("localhost:1", Device{DeviceID: "sas-dev"}, "")
	if err != nil || sas.Authentication.Type != AuthSAS || sas.Authentication.SymmetricKey.PrimaryKey == nil {
		t.Errorf("PutDevice sas = %+v, %v; want generated keys", sas.Authentication, err)
	}

	// Restart keeps state.
	s2 := openTest(t, dir)
	got, err := s2.GetDevice("localhost:1", "dev-1")
	if err != nil || got.ETag != d2.ETag || got.Status != StatusDisabled {
		t.Errorf("after reopen GetDevice = %+v, %v; want %+v", got, err, d2)
	}
	if err := s2.DeleteDevice("localhost:1", "dev-1", `"wrong"`); !errors.Is(err, ErrPrecondition) {
		t.Errorf("DeleteDevice wrong etag = %v; want ErrPrecondition", err)
	}
	if err := s.DeleteDevice("localhost:1", "dev-1", "*"); err != nil {
		t.Fatalf("DeleteDevice: %v", err)
	}
	if _, err := openTest(t, dir).GetDevice("localhost:1", "dev-1"); !errors.Is(err, ErrDeviceNotFound) {
		t.Errorf("deleted device after reopen = %v; want ErrDeviceNotFound", err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{
		"localhost:1/dev-1 old=false new=true",
		"localhost:1/dev-1 old=true new=true",
		"localhost:1/sas-dev old=false new=true",
		"localhost:1/dev-1 old=true new=false",
	}
	if fmt.Sprint(events) != fmt.Sprint(want) {
		t.Errorf("device events = %q; want %q", events, want)
	}
}

func TestDeviceIDWithOddCharactersPersists(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openTest(t, dir)
	for _, id := range []string{"a.b", "A.b", "x%2F", "q?*!(),=@$'#", "..", "Dev-1"} {
		if _, err := s.PutDevice("localhost:1", selfSignedDevice(id, thumb64), ""); err != nil {
			t.Fatalf("PutDevice(%q): %v", id, err)
		}
	}
	list, err := openTest(t, dir).ListDevices("localhost:1")
	if err != nil || len(list) != 6 {
		t.Fatalf("ListDevices after reopen = %d devices, %v; want 6", len(list), err)
	}
}

func TestTwinDesiredAndReported(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openTest(t, dir)
	if _, err := s.PutDevice("localhost:1", selfSignedDevice("d", thumb64), ""); err != nil {
		t.Fatal(err)
	}
	type note struct {
		patch   string
		version int64
	}
	var notes []note
	s.AddObserver(ObserverFuncs{OnDesired: func(hub, id string, patch map[string]any, v int64) {
		b, _ := json.Marshal(patch)
		notes = append(notes, note{string(b), v})
	}})
	var p TwinPatch
	p.Tags = map[string]any{"site": "A"}
	p.Properties.Desired = map[string]any{"interval": 30, "nested": map[string]any{"a": 1, "b": 2}}
	tw, err := s.UpdateTwin("localhost:1", "d", p, "")
	if err != nil {
		t.Fatalf("UpdateTwin: %v", err)
	}
	if tw.Properties.Desired.Version != 2 || tw.Tags["site"] != "A" {
		t.Errorf("twin after patch: desired version %d tags %v; want 2, site=A", tw.Properties.Desired.Version, tw.Tags)
	}
	var p2 TwinPatch
	p2.Properties.Desired = map[string]any{"nested": map[string]any{"a": nil}, "interval": nil}
	if _, err := s.UpdateTwin("localhost:1", "d", p2, `"`+tw.ETag+`"`); err != nil {
		t.Fatalf("UpdateTwin 2: %v", err)
	}
	if _, err := s.UpdateTwin("localhost:1", "d", p2, `"`+tw.ETag+`"`); !errors.Is(err, ErrPrecondition) {
		t.Errorf("UpdateTwin stale etag = %v; want ErrPrecondition", err)
	}
	v, err := s.PatchReported("localhost:1", "d", map[string]any{"fw": "1.0", "temp": 4.5})
	if err != nil || v != 2 {
		t.Fatalf("PatchReported = %d, %v; want 2", v, err)
	}
	dv, err := s.GetDeviceTwin("localhost:1", "d")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(dv)
	want := `{"desired":{"$version":3,"nested":{"b":2}},"reported":{"$version":2,"fw":"1.0","temp":4.5}}`
	if string(b) != want {
		t.Errorf("device twin = %s; want %s", b, want)
	}
	wantNotes := []note{{`{"$version":2,"interval":30,"nested":{"a":1,"b":2}}`, 2}, {`{"$version":3,"interval":null,"nested":{"a":null}}`, 3}}
	if fmt.Sprint(notes) != fmt.Sprint(wantNotes) {
		t.Errorf("desired notifications = %v; want %v", notes, wantNotes)
	}

	// Service view carries $metadata with $lastUpdated.
	full, _ := s.GetTwin("localhost:1", "d")
	fb, _ := json.Marshal(full.Properties.Reported)
	var rep map[string]any
	_ = json.Unmarshal(fb, &rep)
	md, _ := rep["$metadata"].(map[string]any)
	if md["$lastUpdated"] == nil || md["fw"] == nil {
		t.Errorf("reported $metadata = %v; want $lastUpdated and fw", md)
	}

	// Replace drops keys not in the new document and notifies null.
	var rp TwinPatch
	rp.Properties.Desired = map[string]any{"mode": "eco"}
	if _, err := s.ReplaceTwin("localhost:1", "d", rp, ""); err != nil {
		t.Fatal(err)
	}
	last := notes[len(notes)-1]
	if last.patch != `{"$version":4,"mode":"eco","nested":null}` {
		t.Errorf("replace notification = %s; want nested:null, mode:eco", last.patch)
	}

	// Reopen keeps versions and values.
	dv2, err := openTest(t, dir).GetDeviceTwin("localhost:1", "d")
	b2, _ := json.Marshal(dv2)
	if err != nil || string(b2) != `{"desired":{"$version":4,"mode":"eco"},"reported":{"$version":2,"fw":"1.0","temp":4.5}}` {
		t.Errorf("twin after reopen = %s, %v", b2, err)
	}
}

func TestTwinValidation(t *testing.T) {
	t.Parallel()
	s := openTest(t, t.TempDir())
	if _, err := s.PutDevice("localhost:1", selfSignedDevice("d", thumb64), ""); err != nil {
		t.Fatal(err)
	}
	deep := map[string]any{"v": 1}
	for i := 0; i < 11; i++ {
		deep = map[string]any{"n": deep}
	}
	big := make([]byte, 5000)
	for i := range big {
		big[i] = 'x'
	}
	cases := []struct {
		name  string
		patch map[string]any
		want  error
	}{
		{"dot key", map[string]any{"a.b": 1}, ErrTwinInvalid},
		{"dollar key", map[string]any{"$x": 1}, ErrTwinInvalid},
		{"space key", map[string]any{"a b": 1}, ErrTwinInvalid},
		{"control key", map[string]any{"a\x01": 1}, ErrTwinInvalid},
		{"long string", map[string]any{"s": string(big)}, ErrTwinInvalid},
		{"too deep", deep, ErrTwinInvalid},
		{"int too big", map[string]any{"i": json.Number("4503599627370496")}, ErrTwinInvalid},
		{"ok", map[string]any{"i": json.Number("4503599627370495"), "arr": []any{1, "a"}}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := s.PatchReported("localhost:1", "d", c.patch)
			if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
				t.Errorf("PatchReported(%s) = %v; want %v", c.name, err, c.want)
			}
		})
	}
	// Section over 32 KB in 4 KB pieces.
	var err error
	for i := 0; i < 9 && err == nil; i++ {
		_, err = s.PatchReported("localhost:1", "d", map[string]any{fmt.Sprintf("k%d", i): string(big[:4000])})
	}
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("reported over 32 KB = %v; want ErrTooLarge", err)
	}
}

func TestC2DQueue(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var clockMu sync.Mutex
	clock := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }
	dir := t.TempDir()
	s, err := Open(dir, Options{Hubs: testHubs, NoSync: true, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutDevice("localhost:1", selfSignedDevice("d", thumb64), ""); err != nil {
		t.Fatal(err)
	}
	enq := 0
	s.AddObserver(ObserverFuncs{OnC2D: func(hub, id string) { enq++ }})
	if _, err := s.EnqueueC2D("localhost:1", "nope", C2DMessage{}); !errors.Is(err, ErrDeviceNotFound) {
		t.Errorf("EnqueueC2D unknown = %v; want ErrDeviceNotFound", err)
	}
	if _, err := s.EnqueueC2D("localhost:1", "d", C2DMessage{Body: make([]byte, MaxC2DBytes+1)}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("EnqueueC2D 64KB+1 = %v; want ErrTooLarge", err)
	}
	first, err := s.EnqueueC2D("localhost:1", "d", C2DMessage{Body: []byte("hi"), ExpiryTime: Time{now.Add(time.Minute)}})
	if err != nil || first.MessageID == "" || first.To != "/devices/d/messages/deviceBound" {
		t.Fatalf("EnqueueC2D = %+v, %v", first, err)
	}
	for i := 1; i < MaxC2DQueue; i++ {
		if _, err := s.EnqueueC2D("localhost:1", "d", C2DMessage{Body: []byte{byte(i)}}); err != nil {
			t.Fatalf("EnqueueC2D #%d: %v", i, err)
		}
	}
	if _, err := s.EnqueueC2D("localhost:1", "d", C2DMessage{}); !errors.Is(err, ErrQueueFull) {
		t.Errorf("EnqueueC2D #51 = %v; want ErrQueueFull", err)
	}
	if enq != MaxC2DQueue {
		t.Errorf("C2D notifications = %d; want %d", enq, MaxC2DQueue)
	}
	if err := s.CompleteC2D("localhost:1", "d", first.MessageID); err != nil {
		t.Fatalf("CompleteC2D: %v", err)
	}
	if err := s.CompleteC2D("localhost:1", "d", first.MessageID); !errors.Is(err, ErrMessageNotFound) {
		t.Errorf("CompleteC2D twice = %v; want ErrMessageNotFound", err)
	}
	d, _ := s.GetDevice("localhost:1", "d")
	if d.CloudToDeviceMessageCount != MaxC2DQueue-1 {
		t.Errorf("cloudToDeviceMessageCount = %d; want %d", d.CloudToDeviceMessageCount, MaxC2DQueue-1)
	}
	// Expiry: a message with a short TTL disappears.
	if _, err := s.EnqueueC2D("localhost:1", "d", C2DMessage{Body: []byte("short"), ExpiryTime: Time{now.Add(time.Minute)}}); err != nil {
		t.Fatal(err)
	}
	clockMu.Lock()
	now = now.Add(2 * time.Minute)
	clockMu.Unlock()
	p, _ := s.PendingC2D("localhost:1", "d")
	if len(p) != MaxC2DQueue-1 {
		t.Errorf("pending after expiry = %d; want %d", len(p), MaxC2DQueue-1)
	}
	s2, _ := Open(dir, Options{Hubs: testHubs, NoSync: true, Now: clock})
	p2, _ := s2.PendingC2D("localhost:1", "d")
	if len(p2) != len(p) || string(p2[0].Body) != string(p[0].Body) {
		t.Errorf("pending after reopen = %d; want %d", len(p2), len(p))
	}
	if n, err := s2.PurgeC2D("localhost:1", "d"); err != nil || n == 0 {
		t.Errorf("PurgeC2D = %d, %v", n, err)
	}
}

func TestTelemetryHistoryBounded(t *testing.T) {
	t.Parallel()
	s, err := Open(t.TempDir(), Options{Hubs: testHubs, NoSync: true, TelemetryHistory: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.PutDevice("localhost:1", selfSignedDevice("d", thumb64), ""); err != nil {
		t.Fatal(err)
	}
	sig := s.TelemetrySignal()
	for i := 0; i < 5; i++ {
		if err := s.RecordTelemetry(Message{Hub: "localhost:1", DeviceID: "d", Body: []byte{byte('0' + i)}}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-sig:
	default:
		t.Error("TelemetrySignal not closed after a message")
	}
	got := s.Telemetry("localhost:1", "d")
	if len(got) != 3 || string(got[0].Body) != "2" || got[2].EnqueuedTime.IsZero() {
		t.Errorf("history = %d msgs, first %q; want 3, first \"2\", enqueue time set", len(got), got[0].Body)
	}
	if err := s.RecordTelemetry(Message{Hub: "localhost:1", DeviceID: "ghost"}); !errors.Is(err, ErrDeviceNotFound) {
		t.Errorf("RecordTelemetry unknown device = %v; want ErrDeviceNotFound", err)
	}
}

func TestCAProofOfPossession(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openTest(t, dir)
	root, err := pki.NewRootCA("Test Root", pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	other, _ := pki.NewRootCA("Other Root", pki.Options{})
	c, err := s.PutCACertificate(DPSOwner, "my-root", root.PEM(), false, "")
	if err != nil {
		t.Fatalf("PutCACertificate: %v", err)
	}
	if c.Properties.IsVerified || c.Properties.Subject != "Test Root" || c.Properties.Thumbprint != ThumbprintSHA1(root.Cert) {
		t.Errorf("uploaded CA = %+v", c.Properties)
	}
	if _, err := s.VerifyCACertificate(DPSOwner, "my-root", root.PEM(), ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("verify before code = %v; want ErrInvalid", err)
	}
	c, err = s.GenerateVerificationCode(DPSOwner, "MY-ROOT", "")
	if err != nil || c.Properties.VerificationCode == "" {
		t.Fatalf("GenerateVerificationCode = %+v, %v", c.Properties, err)
	}
	code := c.Properties.VerificationCode
	wrongCN, _ := root.NewVerification("not-the-code")
	wrongKey, _ := other.NewVerification(code)
	for name, proof := range map[string]*pki.Cert{"wrong CN": wrongCN, "wrong key": wrongKey} {
		if _, err := s.VerifyCACertificate(DPSOwner, "my-root", proof.PEM(), ""); !errors.Is(err, ErrInvalid) {
			t.Errorf("VerifyCACertificate(%s) = %v; want ErrInvalid", name, err)
		}
	}
	good, _ := root.NewVerification(code)
	if _, err := s.VerifyCACertificate(DPSOwner, "my-root", good.PEM(), `"stale"`); !errors.Is(err, ErrPrecondition) {
		t.Errorf("verify stale etag = %v; want ErrPrecondition", err)
	}
	c, err = s.VerifyCACertificate(DPSOwner, "my-root", good.PEM(), "")
	if err != nil || !c.Properties.IsVerified || c.Properties.VerificationCode != "" {
		t.Fatalf("VerifyCACertificate = %+v, %v; want verified", c.Properties, err)
	}
	got, err := openTest(t, dir).GetCACertificate(DPSOwner, "my-root")
	if err != nil || !got.Properties.IsVerified {
		t.Errorf("after reopen = %+v, %v; want verified", got.Properties, err)
	}
	if _, err := s.PutCACertificate("nohub", "x", root.PEM(), true, ""); !errors.Is(err, ErrHubNotFound) {
		t.Errorf("PutCACertificate unknown owner = %v; want ErrHubNotFound", err)
	}
	if _, err := s.PutCACertificate("localhost:2", "hubca", root.PEM(), true, ""); err != nil {
		t.Errorf("PutCACertificate hub owner: %v", err)
	}
	if l := s.ListCACertificates("localhost:2"); len(l) != 1 {
		t.Errorf("hub CA list = %d; want 1", len(l))
	}
	if err := s.DeleteCACertificate(DPSOwner, "my-root", ""); err != nil {
		t.Errorf("DeleteCACertificate: %v", err)
	}
}

func TestEnrollmentsCRUD(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openTest(t, dir)
	root, _ := pki.NewRootCA("Root", pki.Options{})
	leaf, _ := root.NewClient("dev-9", pki.Options{})
	g := EnrollmentGroup{EnrollmentGroupID: "fleet-a", Attestation: AttestationMechanism{Type: AttestationX509,
		X509: &X509Attestation{SigningCertificates: &X509Certificates{Primary: &X509CertificateWithInfo{Certificate: root.PEM()}}}}}
	got, err := s.PutEnrollmentGroup(g, "")
	if err != nil {
		t.Fatalf("PutEnrollmentGroup: %v", err)
	}
	info := got.Attestation.X509.SigningCertificates.Primary.Info
	if info == nil || info.SHA256Thumbprint != ThumbprintSHA256(root.Cert) || got.ProvisioningStatus != StatusEnabled ||
		got.AllocationPolicy != AllocationHashed || got.ReprovisionPolicy == nil || !got.ReprovisionPolicy.MigrateDeviceData ||
		got.ETag == "" || got.CreatedDateTimeUTC == nil {
		t.Errorf("group defaults = %+v", got)
	}
	if _, err := s.PutEnrollmentGroup(g, `"nope"`); !errors.Is(err, ErrPrecondition) {
		t.Errorf("PutEnrollmentGroup stale = %v; want ErrPrecondition", err)
	}
	bad := []EnrollmentGroup{
		{EnrollmentGroupID: "x", Attestation: AttestationMechanism{Type: AttestationX509, X509: &X509Attestation{CAReferences: &X509CAReferences{Primary: "missing"}}}},
		{EnrollmentGroupID: "x", Attestation: AttestationMechanism{Type: AttestationX509, X509: &X509Attestation{}}},
		{EnrollmentGroupID: "x", Attestation: AttestationMechanism{Type: AttestationX509, X509: &X509Attestation{SigningCertificates: &X509Certificates{Primary: &X509CertificateWithInfo{Certificate: "junk"}}}}},
		{EnrollmentGroupID: "x", IoTHubs: []string{"elsewhere"}, Attestation: g.Attestation},
		{EnrollmentGroupID: "x", AllocationPolicy: AllocationStatic, IoTHubs: testHubsHosts(), Attestation: g.Attestation},
	}
	for i, b := range bad {
		if _, err := s.PutEnrollmentGroup(b, ""); !errors.Is(err, ErrInvalid) {
			t.Errorf("PutEnrollmentGroup(bad #%d) = %v; want ErrInvalid", i, err)
		}
	}
	e := IndividualEnrollment{RegistrationID: "dev-9", DeviceID: "custom-9", ProvisioningStatus: StatusDisabled,
		Attestation: AttestationMechanism{Type: AttestationX509, X509: &X509Attestation{ClientCertificates: &X509Certificates{Primary: &X509CertificateWithInfo{Certificate: leaf.PEM()}}}}}
	ge, err := s.PutIndividualEnrollment(e, "")
	if err != nil || ge.Attestation.X509.ClientCertificates.Primary.Info.SubjectName != "CN=dev-9" {
		t.Fatalf("PutIndividualEnrollment = %+v, %v", ge, err)
	}
	if _, err := s.PutIndividualEnrollment(IndividualEnrollment{RegistrationID: "bad id!"}, ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("PutIndividualEnrollment bad id = %v; want ErrInvalid", err)
	}
	s2 := openTest(t, dir)
	if l := s2.ListEnrollmentGroups(); len(l) != 1 || l[0].ETag != got.ETag {
		t.Errorf("groups after reopen = %+v", l)
	}
	if ie, err := s2.GetIndividualEnrollment("DEV-9"); err != nil || ie.DeviceID != "custom-9" {
		t.Errorf("GetIndividualEnrollment after reopen = %+v, %v", ie, err)
	}
	if err := s2.DeleteEnrollmentGroup("FLEET-A", got.ETag); err != nil {
		t.Errorf("DeleteEnrollmentGroup: %v", err)
	}
	if _, err := s2.GetEnrollmentGroup("fleet-a"); !errors.Is(err, ErrGroupNotFound) {
		t.Errorf("deleted group = %v; want ErrGroupNotFound", err)
	}
	if err := s2.DeleteIndividualEnrollment("dev-9", ""); err != nil {
		t.Errorf("DeleteIndividualEnrollment: %v", err)
	}
}

func testHubsHosts() []string { return []string{"localhost:1", "localhost:2"} }

func TestConcurrentTwinPatchesAreOrdered(t *testing.T) {
	t.Parallel()
	s := openTest(t, t.TempDir())
	if _, err := s.PutDevice("localhost:1", selfSignedDevice("d", thumb64), ""); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var versions []int64
	s.AddObserver(ObserverFuncs{OnDesired: func(_, _ string, _ map[string]any, v int64) {
		mu.Lock()
		versions = append(versions, v)
		mu.Unlock()
	}})
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			var p TwinPatch
			p.Properties.Desired = map[string]any{fmt.Sprintf("k%d", i): i}
			if _, err := s.UpdateTwin("localhost:1", "d", p, ""); err != nil {
				t.Error(err)
			}
			if _, err := s.PatchReported("localhost:1", "d", map[string]any{"r": i}); err != nil {
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	for i, v := range versions {
		if v != int64(i+2) {
			t.Fatalf("notification versions = %v; want 2..21 in order", versions)
		}
	}
}

func TestWriteFileAtomicLeavesNoTemp(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "sub", "f.json")
	for _, content := range []string{"one", "two"} {
		if err := WriteFileAtomic(p, []byte(content), true); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := os.ReadFile(p)
	ents, _ := os.ReadDir(filepath.Dir(p))
	if string(b) != "two" || len(ents) != 1 {
		t.Errorf("WriteFileAtomic: content %q, %d entries; want \"two\", 1", b, len(ents))
	}
}

func TestETagMatches(t *testing.T) {
	cases := []struct {
		ifMatch, etag string
		want          bool
	}{
		{"", "x", true}, {"*", "x", true}, {`"x"`, "x", true}, {`"x"`, `"x"`, true},
		{`W/"x"`, "x", true}, {`"y"`, "x", false}, {"x", `"x"`, true},
		// The wildcard as official SDKs send it, and RFC 7232 lists.
		{`"*"`, "x", true}, {` "*" `, `"x"`, true}, {`"y", "x"`, "x", true}, {`"y", W/"z"`, "x", false},
		{`"*x"`, "x", false}, {`""`, "x", true},
	}
	for _, c := range cases {
		if got := ETagMatches(c.ifMatch, c.etag); got != c.want {
			t.Errorf("ETagMatches(%q, %q) = %v; want %v", c.ifMatch, c.etag, got, c.want)
		}
	}
}
