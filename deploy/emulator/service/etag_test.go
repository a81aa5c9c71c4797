package service_test

import (
	"fmt"
	"strings"
	"testing"
)

// ifMatchForms are the If-Match values clients send for an entity whose
// body carries etag: the wildcard bare (REST reference) and quoted
// (official SDKs), and the etag bare, quoted and weak.
func ifMatchForms(etag string) []string {
	bare := strings.Trim(etag, `"`)
	return []string{"*", `"*"`, bare, `"` + bare + `"`, `W/"` + bare + `"`}
}

// Every route that takes If-Match reads it the same way.
func TestIfMatchEveryRoute(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dtok, htok := dpsToken(), hub1Token()
	ca := newRoot(t, "etag root")
	etagOf := func(what string, r resp) string {
		t.Helper()
		want(t, what, r, 200, 0)
		var m struct {
			ETag string `json:"etag"`
		}
		r.json(t, &m)
		if m.ETag == "" {
			t.Fatalf("%s: no etag in %s", what, r.body)
		}
		return m.ETag
	}
	device := func(id string) string {
		return etagOf("put device", e.do("PUT", hubPath("/devices/"+id), htok, selfSigned(id), "If-Match", "*"))
	}
	twin := func(id string) string {
		device(id)
		return etagOf("get twin", e.do("GET", hubPath("/twins/"+id), htok, nil))
	}
	group := func(id string) string {
		return etagOf("put group", e.do("PUT", dpsPath("/enrollmentGroups/"+id), dtok, groupBody(id, ca.PEM()), "If-Match", "*"))
	}
	enrollmentBody := func(id string) any { return map[string]any{"attestation": map[string]any{"type": "symmetricKey"}} }
	enrollment := func(id string) string {
		return etagOf("put enrollment", e.do("PUT", dpsPath("/enrollments/"+id), dtok, enrollmentBody(id), "If-Match", "*"))
	}
	certBody := func(string) any { return map[string]any{"certificate": ca.PEM()} }
	cert := func(id string) string {
		return etagOf("put certificate", e.do("PUT", dpsPath("/certificates/"+id), dtok, certBody(id), "If-Match", "*"))
	}
	noBody := func(string) any { return nil }
	routes := []struct {
		name   string
		tok    string
		setup  func(id string) string // makes id exist; returns the etag its body shows
		method string
		path   func(id string) string
		body   func(id string) any
		ok     int
	}{
		{"PUT device", htok, device, "PUT", func(id string) string { return hubPath("/devices/" + id) }, func(id string) any { return selfSigned(id) }, 200},
		{"DELETE device", htok, device, "DELETE", func(id string) string { return hubPath("/devices/" + id) }, noBody, 204},
		{"PATCH twin", htok, twin, "PATCH", func(id string) string { return hubPath("/twins/" + id) }, func(string) any { return `{"properties":{"desired":{"x":1}}}` }, 200},
		{"PUT twin", htok, twin, "PUT", func(id string) string { return hubPath("/twins/" + id) }, func(string) any { return `{"properties":{"desired":{"x":2}}}` }, 200},
		{"PUT enrollment group", dtok, group, "PUT", func(id string) string { return dpsPath("/enrollmentGroups/" + id) }, func(id string) any { return groupBody(id, ca.PEM()) }, 200},
		{"DELETE enrollment group", dtok, group, "DELETE", func(id string) string { return dpsPath("/enrollmentGroups/" + id) }, noBody, 204},
		{"PUT enrollment", dtok, enrollment, "PUT", func(id string) string { return dpsPath("/enrollments/" + id) }, enrollmentBody, 200},
		{"DELETE enrollment", dtok, enrollment, "DELETE", func(id string) string { return dpsPath("/enrollments/" + id) }, noBody, 204},
		{"PUT certificate", dtok, cert, "PUT", func(id string) string { return dpsPath("/certificates/" + id) }, certBody, 200},
		{"DELETE certificate", dtok, cert, "DELETE", func(id string) string { return dpsPath("/certificates/" + id) }, noBody, 204},
		{"POST generateVerificationCode", dtok, cert, "POST", func(id string) string { return dpsPath("/certificates/" + id + "/generateVerificationCode") }, noBody, 200},
	}
	for ri, rt := range routes {
		for fi := range ifMatchForms("x") {
			id := fmt.Sprintf("r%d-f%d", ri, fi)
			h := ifMatchForms(rt.setup(id))[fi]
			want(t, rt.name+" with If-Match: "+h, e.do(rt.method, rt.path(id), rt.tok, rt.body(id), "If-Match", h), rt.ok, 0)
		}
		id := fmt.Sprintf("r%d-stale", ri)
		rt.setup(id)
		want(t, rt.name+" with a stale etag", e.do(rt.method, rt.path(id), rt.tok, rt.body(id), "If-Match", `"c3RhbGU="`), 412, 412001)
	}

	// The quoted wildcard creates where the bare one does.
	want(t, `PUT new device with If-Match: "*"`, e.do("PUT", hubPath("/devices/fresh"), htok, selfSigned("fresh"), "If-Match", `"*"`), 200, 0)
	want(t, `PUT new enrollment with If-Match: "*"`, e.do("PUT", dpsPath("/enrollments/fresh"), dtok, enrollmentBody("fresh"), "If-Match", `"*"`), 200, 0)
}

func TestIfMatchDeleteRegistration(t *testing.T) {
	t.Parallel()
	forms := ifMatchForms("x")
	recs := map[string]string{"dev-stale": "fleet"}
	for i := range forms {
		recs[fmt.Sprintf("dev-%d", i)] = "fleet"
	}
	e := newEnvWithRegistrations(t, recs)
	tok := dpsToken()
	etag := func(id string) string {
		r := e.do("GET", dpsPath("/registrations/"+id), tok, nil)
		want(t, "get registration", r, 200, 0)
		var m struct {
			ETag string `json:"etag"`
		}
		r.json(t, &m)
		return m.ETag
	}
	for i := range forms {
		id := fmt.Sprintf("dev-%d", i)
		h := ifMatchForms(etag(id))[i]
		want(t, "DELETE registration with If-Match: "+h, e.do("DELETE", dpsPath("/registrations/"+id), tok, nil, "If-Match", h), 204, 0)
	}
	want(t, "DELETE registration with a stale etag", e.do("DELETE", dpsPath("/registrations/dev-stale"), tok, nil, "If-Match", `"c3RhbGU="`), 412, 412001)
}
