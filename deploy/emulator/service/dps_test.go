package service_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/reefer/tracker/deploy/emulator/pki"
	"github.com/reefer/tracker/deploy/emulator/service"
	"github.com/reefer/tracker/deploy/emulator/store"
)

func dpsPath(p string) string { return p + "?api-version=" + dpsVer }

func newRoot(t *testing.T, cn string) *pki.Cert {
	t.Helper()
	ca, err := pki.NewRootCA(cn, pki.Options{})
	if err != nil {
		t.Fatalf("NewRootCA: %v", err)
	}
	return ca
}

func groupBody(id, certPEM string) map[string]any {
	return map[string]any{
		"enrollmentGroupId": id,
		"attestation": map[string]any{"type": "x509", "x509": map[string]any{
			"signingCertificates": map[string]any{"primary": map[string]any{"certificate": certPEM}},
		}},
		"iotHubHostName": hub1,
		"initialTwin":    map[string]any{"tags": map[string]any{"site": "A"}, "properties": map[string]any{"desired": map[string]any{"interval": 30}}},
	}
}

func TestEnrollmentGroupLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ca := newRoot(t, "fleet root")
	tok := dpsToken()

	r := e.do("PUT", dpsPath("/enrollmentGroups/fleet-a"), tok, groupBody("fleet-a", ca.PEM()))
	want(t, "create group", r, 200, 0)
	var g store.EnrollmentGroup
	r.json(t, &g)
	if g.ETag == "" || g.ProvisioningStatus != "enabled" || g.AllocationPolicy != "hashed" || g.CreatedDateTimeUTC == nil {
		t.Errorf("created group = %s; want etag, enabled, hashed, created time", r.body)
	}
	info := g.Attestation.X509.SigningCertificates.Primary.Info
	if info == nil || info.SHA256Thumbprint != store.ThumbprintSHA256(ca.Cert) || !strings.Contains(info.SubjectName, "fleet root") {
		t.Errorf("signing certificate info = %+v; want the CA's thumbprint and subject", info)
	}
	if got := r.header.Get("ETag"); got != g.ETag {
		t.Errorf("ETag header = %q; want %q", got, g.ETag)
	}

	r = e.do("GET", dpsPath("/enrollmentGroups/FLEET-A"), tok, nil)
	want(t, "get group (case-insensitive id)", r, 200, 0)

	// Base64 DER (what the az CLI sends) is accepted as well.
	der := base64.StdEncoding.EncodeToString(ca.Cert.Raw)
	want(t, "create group with base64 DER", e.do("PUT", dpsPath("/enrollmentGroups/fleet-der"), tok, groupBody("fleet-der", der)), 200, 0)

	// ETag flows.
	b := groupBody("fleet-a", ca.PEM())
	b["provisioningStatus"] = "disabled"
	want(t, "update with stale If-Match", e.do("PUT", dpsPath("/enrollmentGroups/fleet-a"), tok, b, "If-Match", `"00000000-0000-0000-0000-000000000000"`), 412, 412001)
	r = e.do("PUT", dpsPath("/enrollmentGroups/fleet-a"), tok, b, "If-Match", g.ETag)
	want(t, "update with matching If-Match", r, 200, 0)
	var g2 store.EnrollmentGroup
	r.json(t, &g2)
	if g2.ETag == g.ETag || g2.ProvisioningStatus != "disabled" {
		t.Errorf("updated group = %s; want a new etag and disabled", r.body)
	}
	want(t, "update with star", e.do("PUT", dpsPath("/enrollmentGroups/fleet-a"), tok, b, "If-Match", "*"), 200, 0)
	want(t, "If-Match on a missing group", e.do("PUT", dpsPath("/enrollmentGroups/ghost"), tok, groupBody("ghost", ca.PEM()), "If-Match", `"x"`), 404, 404202)

	// Attestation mechanism.
	r = e.do("POST", dpsPath("/enrollmentGroups/fleet-a/attestationmechanism"), tok, nil)
	want(t, "attestationmechanism", r, 200, 0)
	var att store.AttestationMechanism
	r.json(t, &att)
	if att.Type != "x509" || att.X509 == nil || att.X509.SigningCertificates == nil {
		t.Errorf("attestationmechanism = %s; want the x509 signing certificates", r.body)
	}
	want(t, "attestationmechanism of missing group", e.do("POST", dpsPath("/enrollmentGroups/ghost/attestationmechanism"), tok, nil), 404, 404202)

	// Validation.
	bad := groupBody("other", ca.PEM())
	want(t, "id mismatch", e.do("PUT", dpsPath("/enrollmentGroups/fleet-b"), tok, bad), 400, 400004)
	bad = groupBody("fleet-b", "not a certificate")
	want(t, "bad certificate", e.do("PUT", dpsPath("/enrollmentGroups/fleet-b"), tok, bad), 400, 400004)
	bad = groupBody("fleet-b", ca.PEM())
	bad["iotHubHostName"] = "nowhere.example"
	want(t, "unlinked hub", e.do("PUT", dpsPath("/enrollmentGroups/fleet-b"), tok, bad), 400, 400004)
	bad = groupBody("fleet-b", ca.PEM())
	bad["attestation"] = map[string]any{"type": "x509", "x509": map[string]any{"caReferences": map[string]any{"primary": "no-such-ca"}}}
	want(t, "unknown CA reference", e.do("PUT", dpsPath("/enrollmentGroups/fleet-b"), tok, bad), 400, 400004)

	// Delete with etag checks.
	r = e.do("GET", dpsPath("/enrollmentGroups/fleet-a"), tok, nil)
	r.json(t, &g)
	want(t, "delete stale", e.do("DELETE", dpsPath("/enrollmentGroups/fleet-a"), tok, nil, "If-Match", `"nope"`), 412, 412001)
	want(t, "delete", e.do("DELETE", dpsPath("/enrollmentGroups/fleet-a"), tok, nil, "If-Match", g.ETag), 204, 0)
	want(t, "get deleted", e.do("GET", dpsPath("/enrollmentGroups/fleet-a"), tok, nil), 404, 404202)
	want(t, "delete again", e.do("DELETE", dpsPath("/enrollmentGroups/fleet-a"), tok, nil), 404, 404202)
}

func TestEnrollmentGroupWithCAReference(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ca := newRoot(t, "referenced root")
	tok := dpsToken()
	want(t, "upload CA", e.do("PUT", dpsPath("/certificates/my-root"), tok, map[string]any{"certificate": ca.PEM(), "isVerified": true}), 200, 0)
	b := groupBody("by-ref", "")
	b["attestation"] = map[string]any{"type": "x509", "x509": map[string]any{"caReferences": map[string]any{"primary": "my-root"}}}
	r := e.do("PUT", dpsPath("/enrollmentGroups/by-ref"), tok, b)
	want(t, "group by CA reference", r, 200, 0)
	var g store.EnrollmentGroup
	r.json(t, &g)
	if g.Attestation.X509.CAReferences == nil || g.Attestation.X509.CAReferences.Primary != "my-root" {
		t.Errorf("group = %s; want caReferences.primary my-root", r.body)
	}
}

func TestEnrollmentGroupQueryPaging(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ca := newRoot(t, "paging root")
	tok := dpsToken()
	var ids []string
	for i := 0; i < 5; i++ {
		id := fmt.Sprintf("group-%d", i)
		ids = append(ids, id)
		want(t, "create "+id, e.do("PUT", dpsPath("/enrollmentGroups/"+id), tok, groupBody(id, ca.PEM())), 200, 0)
	}
	for _, q := range []string{`{"query":"*"}`, `{"query":"SELECT * FROM enrollmentGroups"}`} {
		var got []string
		cont := ""
		pages := 0
		for {
			hdr := []string{"x-ms-max-item-count", "2"}
			if cont != "" {
				hdr = append(hdr, "x-ms-continuation", cont)
			}
			r := e.do("POST", dpsPath("/enrollmentGroups/query"), tok, q, hdr...)
			want(t, "query", r, 200, 0)
			if it := r.header.Get("x-ms-item-type"); it != "enrollmentGroup" {
				t.Errorf("x-ms-item-type = %q; want enrollmentGroup", it)
			}
			var page []store.EnrollmentGroup
			r.json(t, &page)
			if len(page) > 2 {
				t.Fatalf("page of %d items; want at most 2", len(page))
			}
			for _, g := range page {
				got = append(got, g.EnrollmentGroupID)
			}
			pages++
			cont = r.header.Get("x-ms-continuation")
			if cont == "" {
				break
			}
			if pages > 10 {
				t.Fatal("paging does not end")
			}
		}
		if strings.Join(got, ",") != strings.Join(ids, ",") || pages != 3 {
			t.Errorf("query %s paged = %v in %d pages; want %v in 3", q, got, pages, ids)
		}
	}
	r := e.do("POST", dpsPath("/enrollmentGroups/query"), tok, `{"query":"*"}`)
	var all []store.EnrollmentGroup
	r.json(t, &all)
	if len(all) != 5 || r.header.Get("x-ms-continuation") != "" {
		t.Errorf("unpaged query = %d items, continuation %q; want 5 and none", len(all), r.header.Get("x-ms-continuation"))
	}
	want(t, "bad continuation", e.do("POST", dpsPath("/enrollmentGroups/query"), tok, `{"query":"*"}`, "x-ms-continuation", "???"), 400, 400004)
	want(t, "bad max item count", e.do("POST", dpsPath("/enrollmentGroups/query"), tok, `{"query":"*"}`, "x-ms-max-item-count", "0"), 400, 400004)
	want(t, "unsupported query", e.do("POST", dpsPath("/enrollmentGroups/query"), tok, `{"query":"SELECT * FROM enrollmentGroups WHERE x = 1"}`), 400, 400004)
	want(t, "no body", e.do("POST", dpsPath("/enrollmentGroups/query"), tok, nil), 400, 400004)
}

func TestIndividualEnrollmentLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	leaf, err := pki.NewSelfSigned("dev-0001", pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tok := dpsToken()
	body := map[string]any{
		"registrationId": "dev-0001",
		"deviceId":       "dev-0001",
		"attestation": map[string]any{"type": "x509", "x509": map[string]any{
			"clientCertificates": map[string]any{"primary": map[string]any{"certificate": leaf.PEM()}},
		}},
		"provisioningStatus": "disabled",
	}
	r := e.do("PUT", dpsPath("/enrollments/dev-0001"), tok, body)
	want(t, "create enrollment", r, 200, 0)
	var en store.IndividualEnrollment
	r.json(t, &en)
	if en.ETag == "" || en.ProvisioningStatus != "disabled" || en.Attestation.X509.ClientCertificates.Primary.Info == nil {
		t.Errorf("enrollment = %s; want etag, disabled, certificate info", r.body)
	}
	want(t, "get", e.do("GET", dpsPath("/enrollments/dev-0001"), tok, nil), 200, 0)
	want(t, "stale update", e.do("PUT", dpsPath("/enrollments/dev-0001"), tok, body, "If-Match", `"stale"`), 412, 412001)
	want(t, "update", e.do("PUT", dpsPath("/enrollments/dev-0001"), tok, body, "If-Match", en.ETag), 200, 0)
	r = e.do("POST", dpsPath("/enrollments/dev-0001/attestationmechanism"), tok, nil)
	want(t, "attestationmechanism", r, 200, 0)
	if !strings.Contains(string(r.body), "clientCertificates") {
		t.Errorf("attestationmechanism = %s; want clientCertificates", r.body)
	}
	want(t, "bad registration id", e.do("PUT", dpsPath("/enrollments/bad%20id"), tok, map[string]any{"attestation": map[string]any{"type": "none"}}), 400, 400004)
	want(t, "x509 without client cert", e.do("PUT", dpsPath("/enrollments/dev-2"), tok, map[string]any{"attestation": map[string]any{"type": "x509", "x509": map[string]any{}}}), 400, 400004)

	for i := 3; i <= 5; i++ {
		id := fmt.Sprintf("dev-%d", i)
		want(t, "create "+id, e.do("PUT", dpsPath("/enrollments/"+id), tok, map[string]any{"attestation": map[string]any{"type": "symmetricKey"}}), 200, 0)
	}
	r = e.do("POST", dpsPath("/enrollments/query"), tok, `{"query":"SELECT * FROM enrollments"}`, "x-ms-max-item-count", "3")
	want(t, "query enrollments", r, 200, 0)
	var page []store.IndividualEnrollment
	r.json(t, &page)
	if len(page) != 3 || r.header.Get("x-ms-continuation") == "" || r.header.Get("x-ms-item-type") != "enrollment" {
		t.Errorf("query page = %d items, continuation %q, type %q; want 3, a token, enrollment", len(page), r.header.Get("x-ms-continuation"), r.header.Get("x-ms-item-type"))
	}
	r = e.do("POST", dpsPath("/enrollments/query"), tok, `{"query":"*"}`, "x-ms-max-item-count", "3", "x-ms-continuation", r.header.Get("x-ms-continuation"))
	r.json(t, &page)
	if len(page) != 1 || page[0].RegistrationID != "dev-5" {
		t.Errorf("second page = %s; want only dev-5", r.body)
	}

	want(t, "delete stale", e.do("DELETE", dpsPath("/enrollments/dev-0001"), tok, nil, "If-Match", `"stale"`), 412, 412001)
	want(t, "delete", e.do("DELETE", dpsPath("/enrollments/dev-0001"), tok, nil), 204, 0)
	want(t, "get deleted", e.do("GET", dpsPath("/enrollments/dev-0001"), tok, nil), 404, 404201)
}

// seedRegistrations writes registration records the way the store persists
// them, then reopens nothing: the records are loaded by a fresh env. The
// store creates records only when a device registers over MQTT, which is
// the emulator's device side, not this package.
func newEnvWithRegistrations(t *testing.T, recs map[string]string) *env {
	t.Helper()
	dir := t.TempDir()
	for id, group := range recs {
		rec := map[string]any{
			"state": map[string]any{
				"registrationId": id, "assignedHub": hub1, "deviceId": id, "status": "assigned",
				"substatus": "initialAssignment", "etag": base64.StdEncoding.EncodeToString([]byte(`"` + id + `-etag"`)),
				"createdDateTimeUtc": "2026-01-02T03:04:05.0000000Z",
			},
			"enrollmentGroupId": group,
			"individual":        group == "",
		}
		b, _ := json.Marshal(rec)
		p := filepath.Join(dir, "dps", "registrations", strings.ToLower(id)+".json")
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	st, err := store.Open(dir, store.Options{Hubs: []store.Hub{{Name: "hub1", HostName: hub1}}, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := service.New(st, service.Config{DPS: service.DPSConfig{HostName: dpsHost, Policies: service.Policies{dpsOwner: dpsKey}}})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, st: st, svc: svc}
	e.srv = newTLSServer(t, svc)
	return e
}

func TestRegistrationRecords(t *testing.T) {
	t.Parallel()
	e := newEnvWithRegistrations(t, map[string]string{"dev-a": "fleet", "dev-b": "fleet", "dev-c": "other", "dev-d": ""})
	tok := dpsToken()
	r := e.do("GET", dpsPath("/registrations/dev-a"), tok, nil)
	want(t, "get registration", r, 200, 0)
	var st store.DeviceRegistrationState
	r.json(t, &st)
	if st.RegistrationID != "dev-a" || st.AssignedHub != hub1 || st.Status != "assigned" {
		t.Errorf("registration = %s; want dev-a assigned to %s", r.body, hub1)
	}
	want(t, "missing registration", e.do("GET", dpsPath("/registrations/nobody"), tok, nil), 404, 404203)

	// The group need not exist: its records outlive it (docs/protocol.md C).
	r = e.do("POST", dpsPath("/registrations/fleet/query"), tok, nil)
	want(t, "query group registrations", r, 200, 0)
	var list []store.DeviceRegistrationState
	r.json(t, &list)
	if len(list) != 2 || list[0].RegistrationID != "dev-a" || list[1].RegistrationID != "dev-b" {
		t.Errorf("registrations of fleet = %s; want dev-a, dev-b", r.body)
	}
	if r.header.Get("x-ms-item-type") != "deviceRegistration" {
		t.Errorf("x-ms-item-type = %q; want deviceRegistration", r.header.Get("x-ms-item-type"))
	}
	r = e.do("POST", dpsPath("/registrations/fleet/query"), tok, `{"query":"*"}`, "x-ms-max-item-count", "1")
	r.json(t, &list)
	if len(list) != 1 || r.header.Get("x-ms-continuation") == "" {
		t.Errorf("paged registrations = %s (continuation %q); want one and a token", r.body, r.header.Get("x-ms-continuation"))
	}
	r = e.do("POST", dpsPath("/registrations/none/query"), tok, nil)
	want(t, "empty group", r, 200, 0)
	if strings.TrimSpace(string(r.body)) != "[]" {
		t.Errorf("registrations of unknown group = %s; want []", r.body)
	}

	want(t, "delete stale", e.do("DELETE", dpsPath("/registrations/dev-a"), tok, nil, "If-Match", `"stale"`), 412, 412001)
	want(t, "delete with etag", e.do("DELETE", dpsPath("/registrations/dev-a"), tok, nil, "If-Match", st.ETag), 204, 0)
	want(t, "get deleted", e.do("GET", dpsPath("/registrations/dev-a"), tok, nil), 404, 404203)
	want(t, "delete missing", e.do("DELETE", dpsPath("/registrations/dev-a"), tok, nil), 404, 404203)
}

func TestBulkEnrollmentOperations(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ca := newRoot(t, "bulk root")
	tok := dpsToken()
	groups := func(mode string, gs ...map[string]any) map[string]any {
		return map[string]any{"mode": mode, "enrollmentGroups": gs}
	}
	type result struct {
		IsSuccessful bool
		Errors       []struct {
			EnrollmentGroupID string
			RegistrationID    string
			ErrorCode         int
		}
	}
	var res result
	r := e.do("POST", dpsPath("/enrollmentGroups"), tok, groups("create", groupBody("b1", ca.PEM()), groupBody("b2", ca.PEM())))
	want(t, "bulk create", r, 200, 0)
	r.json(t, &res)
	if !res.IsSuccessful || len(res.Errors) != 0 {
		t.Fatalf("bulk create = %s; want success", r.body)
	}
	r = e.do("POST", dpsPath("/enrollmentGroups"), tok, groups("create", groupBody("b2", ca.PEM()), groupBody("b3", ca.PEM())))
	r.json(t, &res)
	if res.IsSuccessful || len(res.Errors) != 1 || res.Errors[0].EnrollmentGroupID != "b2" || res.Errors[0].ErrorCode/1000 != 409 {
		t.Errorf("bulk create of an existing group = %s; want one 409 error for b2", r.body)
	}
	if _, err := e.st.GetEnrollmentGroup("b3"); err != nil {
		t.Errorf("b3 not created by the partially failing bulk call: %v", err)
	}
	stale := groupBody("b1", ca.PEM())
	stale["etag"] = `"stale"`
	r = e.do("POST", dpsPath("/enrollmentGroups"), tok, groups("updateIfMatchETag", stale))
	r.json(t, &res)
	if res.IsSuccessful || len(res.Errors) != 1 || res.Errors[0].ErrorCode != 412001 {
		t.Errorf("bulk update with stale etag = %s; want 412001", r.body)
	}
	g, _ := e.st.GetEnrollmentGroup("b1")
	fresh := groupBody("b1", ca.PEM())
	fresh["etag"] = g.ETag
	fresh["provisioningStatus"] = "disabled"
	r = e.do("POST", dpsPath("/enrollmentGroups"), tok, groups("updateIfMatchETag", fresh))
	r.json(t, &res)
	if g, _ := e.st.GetEnrollmentGroup("b1"); !res.IsSuccessful || g.ProvisioningStatus != "disabled" {
		t.Errorf("bulk update with etag = %s, status %s; want success and disabled", r.body, g.ProvisioningStatus)
	}
	r = e.do("POST", dpsPath("/enrollmentGroups"), tok, groups("delete", map[string]any{"enrollmentGroupId": "b1"}, map[string]any{"enrollmentGroupId": "b2"}))
	r.json(t, &res)
	if !res.IsSuccessful || len(e.st.ListEnrollmentGroups()) != 1 {
		t.Errorf("bulk delete = %s, %d groups left; want success and 1 left", r.body, len(e.st.ListEnrollmentGroups()))
	}
	var eleven []map[string]any
	for i := 0; i < 11; i++ {
		eleven = append(eleven, groupBody(fmt.Sprintf("x%d", i), ca.PEM()))
	}
	want(t, "more than 10", e.do("POST", dpsPath("/enrollmentGroups"), tok, groups("create", eleven...)), 400, 400004)
	want(t, "bad mode", e.do("POST", dpsPath("/enrollmentGroups"), tok, groups("upsert", groupBody("b9", ca.PEM()))), 400, 400004)

	r = e.do("POST", dpsPath("/enrollments"), tok, map[string]any{"mode": "update", "enrollments": []map[string]any{
		{"registrationId": "i1", "attestation": map[string]any{"type": "symmetricKey"}},
		{"registrationId": "bad id", "attestation": map[string]any{"type": "symmetricKey"}},
	}})
	want(t, "bulk enrollments", r, 200, 0)
	r.json(t, &res)
	if res.IsSuccessful || len(res.Errors) != 1 || res.Errors[0].RegistrationID != "bad id" || res.Errors[0].ErrorCode != 400004 {
		t.Errorf("bulk enrollments = %s; want one 400004 error for 'bad id'", r.body)
	}
	if _, err := e.st.GetIndividualEnrollment("i1"); err != nil {
		t.Errorf("i1 not created: %v", err)
	}
}
