package service_test

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/reefer/tracker/deploy/emulator/service"
)

// policyKey derives a distinct valid key per policy name.
func policyKey(name string) string {
	return base64.StdEncoding.EncodeToString([]byte("key-of-" + name + "-0123456789abcdef"))
}

// route is one representative request of a permission class.
type route struct {
	name   string
	method string
	path   string // without api-version
	body   any
	need   service.Permission // 0: any valid policy
	ok     int                // status when the policy holds need
}

func TestHubPolicyPermissions(t *testing.T) {
	t.Parallel()
	builtin := service.BuiltinHubPolicies()
	pols := service.Policies{}
	for n := range builtin {
		pols[n] = policyKey(n)
	}
	e := newEnv(t, func(c *service.Config) { c.Hubs[hub1] = pols })
	owner := service.SASToken(hub1, "iothubowner", pols["iothubowner"], time.Now().Add(time.Hour))
	want(t, "seed device", e.do("PUT", hubPath("/devices/dev-1"), owner, selfSigned("dev-1")), 200, 0)

	routes := []route{
		{"get identity", "GET", "/devices/dev-1", nil, service.RegistryRead, 200},
		{"list identities", "GET", "/devices?top=10", nil, service.RegistryRead, 200},
		{"query", "POST", "/devices/query", map[string]any{"query": "SELECT * FROM devices"}, service.RegistryRead, 200},
		{"create identity", "PUT", "/devices/new-%s", selfSigned(""), service.RegistryWrite, 200},
		{"delete identity", "DELETE", "/devices/ghost", nil, service.RegistryWrite, 404},
		{"get twin", "GET", "/twins/dev-1", nil, service.ServiceConnect, 200},
		{"patch twin", "PATCH", "/twins/dev-1", map[string]any{"tags": map[string]any{"site": "A"}}, service.ServiceConnect, 200},
		{"invoke method", "POST", "/twins/dev-1/methods", map[string]any{"methodName": "reboot", "responseTimeoutInSeconds": 5}, service.ServiceConnect, 404},
		{"send C2D", "POST", "/devices/dev-1/messages/deviceBound", "hello", service.ServiceConnect, 200},
		{"read telemetry", "GET", "/devices/dev-1/messages/events", nil, service.ServiceConnect, 200},
		{"CA certificates", "GET", "/certificates", nil, service.HubAll, 200},
		{"emulator info", "GET", "/$emulator", nil, 0, 200},
	}
	for policy, perms := range builtin {
		for _, rt := range routes {
			t.Run(policy+"/"+rt.name, func(t *testing.T) {
				tok := service.SASToken(hub1, policy, pols[policy], time.Now().Add(time.Hour))
				path := strings.ReplaceAll(rt.path, "%s", strings.ToLower(policy))
				body := rt.body
				if rt.method == "PUT" {
					body = selfSigned(strings.TrimPrefix(path, "/devices/"))
				}
				r := e.do(rt.method, hubPath(path), tok, body)
				if perms&rt.need == rt.need {
					if r.status != rt.ok {
						t.Fatalf("%s %s with %s (%s): status = %d; want %d (body %s)", rt.method, path, policy, perms, r.status, rt.ok, r.body)
					}
					return
				}
				want(t, policy+" "+rt.name, r, 401, 401002)
				if got := r.header.Get("iothub-errorcode"); got != "IotHubUnauthorizedAccess" {
					t.Errorf("iothub-errorcode = %q; want IotHubUnauthorizedAccess", got)
				}
			})
		}
	}
}

func TestDPSPolicyPermissions(t *testing.T) {
	t.Parallel()
	// A new DPS only has provisioningserviceowner (docs/protocol.md D); the others
	// are custom policies with one right each.
	perms := map[string]service.Permission{
		"provisioningserviceowner": service.DPSAll,
		"config":                   service.ServiceConfig,
		"enrollRead":               service.EnrollmentRead,
		"enrollWrite":              service.EnrollmentWrite,
		"regRead":                  service.RegistrationStatusRead,
		"regWrite":                 service.RegistrationStatusWrite,
	}
	pols := service.Policies{}
	for n := range perms {
		pols[n] = policyKey(n)
	}
	delete(perms, "provisioningserviceowner") // built-in: resolved by name
	e := newEnv(t, func(c *service.Config) {
		c.DPS.Policies = pols
		c.DPS.Permissions = perms
	})
	perms["provisioningserviceowner"] = service.DPSAll
	root := newRoot(t, "perm-root")

	routes := []route{
		{"query groups", "POST", "/enrollmentGroups/query", map[string]any{"query": "*"}, service.EnrollmentRead, 200},
		{"get group", "GET", "/enrollmentGroups/nope", nil, service.EnrollmentRead, 404},
		{"attestation", "POST", "/enrollments/nope/attestationmechanism", nil, service.EnrollmentRead, 404},
		{"create group", "PUT", "/enrollmentGroups/g-%s", nil, service.EnrollmentWrite, 200},
		{"delete enrollment", "DELETE", "/enrollments/nope", nil, service.EnrollmentWrite, 404},
		{"get registration", "GET", "/registrations/nope", nil, service.RegistrationStatusRead, 404},
		{"query registrations", "POST", "/registrations/fleet/query", nil, service.RegistrationStatusRead, 200},
		{"delete registration", "DELETE", "/registrations/nope", nil, service.RegistrationStatusWrite, 404},
		{"CA certificates", "GET", "/certificates", nil, service.ServiceConfig, 200},
		{"emulator info", "GET", "/$emulator", nil, 0, 200},
	}
	for policy, p := range perms {
		for _, rt := range routes {
			t.Run(policy+"/"+rt.name, func(t *testing.T) {
				tok := service.SASToken(dpsHost, policy, pols[policy], time.Now().Add(time.Hour))
				path := strings.ReplaceAll(rt.path, "%s", strings.ToLower(policy))
				body := rt.body
				if rt.method == "PUT" {
					body = groupBody(strings.TrimPrefix(path, "/enrollmentGroups/"), root.PEM())
				}
				r := e.do(rt.method, dpsPath(path), tok, body)
				if p&rt.need == rt.need {
					if r.status != rt.ok {
						t.Fatalf("%s %s with %s (%s): status = %d; want %d (body %s)", rt.method, path, policy, p, r.status, rt.ok, r.body)
					}
					return
				}
				want(t, policy+" "+rt.name, r, 401, 401002)
				if got := r.header.Get("x-ms-error-code"); got != "401002" {
					t.Errorf("x-ms-error-code = %q; want 401002", got)
				}
			})
		}
	}
}

func TestPermissionConfigErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tests := []struct {
		name string
		cfg  service.Config
	}{
		{"rights for a policy the DPS lacks", service.Config{DPS: service.DPSConfig{HostName: dpsHost, Policies: service.Policies{dpsOwner: dpsKey},
			Permissions: map[string]service.Permission{"typo": service.EnrollmentRead}}}},
		{"rights for an unconfigured hub", service.Config{Hubs: map[string]service.Policies{hub1: {hubOwner: hub1Key}},
			HubPermissions: map[string]map[string]service.Permission{hub2: {hubOwner: service.HubAll}}}},
	}
	for _, tc := range tests {
		if _, err := service.New(e.st, tc.cfg); err == nil {
			t.Errorf("New(%s) = nil error; want one", tc.name)
		}
	}
}

func TestPermissionString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		p    service.Permission
		want string
	}{
		{0, "none"},
		{service.RegistryRead | service.RegistryWrite, "RegistryRead|RegistryWrite"},
		{service.DPSAll, "ServiceConfig|EnrollmentRead|EnrollmentWrite|RegistrationStatusRead|RegistrationStatusWrite"},
	}
	for _, tc := range tests {
		if got := tc.p.String(); got != tc.want {
			t.Errorf("Permission(%d).String() = %q; want %q", tc.p, got, tc.want)
		}
	}
}
