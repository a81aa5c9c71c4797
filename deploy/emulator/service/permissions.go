package service

import (
	"fmt"
	"net/http"
	"strings"
)

// Permission is a set of shared access policy rights. IoT Hub has
// RegistryRead, RegistryWrite, ServiceConnect and DeviceConnect (docs/protocol.md E;
// Azure's "Control access to IoT Hub"); DPS has ServiceConfig,
// EnrollmentRead, EnrollmentWrite, RegistrationStatusRead and
// RegistrationStatusWrite (docs/protocol.md D).
type Permission uint16

// The rights a policy can grant.
const (
	RegistryRead Permission = 1 << iota
	RegistryWrite
	ServiceConnect
	DeviceConnect
	ServiceConfig
	EnrollmentRead
	EnrollmentWrite
	RegistrationStatusRead
	RegistrationStatusWrite

	// HubAll and DPSAll are every right of a hub and of a DPS: what
	// iothubowner and provisioningserviceowner hold.
	HubAll = RegistryRead | RegistryWrite | ServiceConnect | DeviceConnect
	DPSAll = ServiceConfig | EnrollmentRead | EnrollmentWrite | RegistrationStatusRead | RegistrationStatusWrite
)

var permissionNames = []string{"RegistryRead", "RegistryWrite", "ServiceConnect", "DeviceConnect",
	"ServiceConfig", "EnrollmentRead", "EnrollmentWrite", "RegistrationStatusRead", "RegistrationStatusWrite"}

// String lists the rights, e.g. "RegistryRead|RegistryWrite".
func (p Permission) String() string {
	var names []string
	for i, n := range permissionNames {
		if p&(1<<i) != 0 {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, "|")
}

// BuiltinHubPolicies returns the shared access policies every new IoT hub
// has and their rights: iothubowner (all), service (ServiceConnect),
// device (DeviceConnect), registryRead (RegistryRead) and
// registryReadWrite (RegistryRead, RegistryWrite). The map is a copy.
func BuiltinHubPolicies() map[string]Permission {
	return map[string]Permission{
		"iothubowner":       HubAll,
		"service":           ServiceConnect,
		"device":            DeviceConnect,
		"registryRead":      RegistryRead,
		"registryReadWrite": RegistryRead | RegistryWrite,
	}
}

// BuiltinDPSPolicies returns the shared access policies a new DPS has:
// only provisioningserviceowner, with every right (docs/protocol.md D). The map is a
// copy.
func BuiltinDPSPolicies() map[string]Permission {
	return map[string]Permission{"provisioningserviceowner": DPSAll}
}

// resolvePermissions gives each policy of a service its rights: an
// explicit entry in perms, else the built-in policy of that name, else
// (a custom policy configured without rights, as before permissions were
// enforced) every right of the service. Names compare case-insensitively.
func resolvePermissions(k kind, names []string, perms map[string]Permission) map[string]Permission {
	builtin, all := BuiltinHubPolicies(), HubAll
	if k == kindDPS {
		builtin, all = BuiltinDPSPolicies(), DPSAll
	}
	lower := func(m map[string]Permission) map[string]Permission {
		out := make(map[string]Permission, len(m))
		for n, p := range m {
			out[strings.ToLower(n)] = p
		}
		return out
	}
	explicit, builtin := lower(perms), lower(builtin)
	out := make(map[string]Permission, len(names))
	for _, n := range names {
		n = strings.ToLower(n)
		p, ok := explicit[n]
		if !ok {
			p, ok = builtin[n]
		}
		if !ok {
			p = all
		}
		out[n] = p
	}
	return out
}

type grantKey struct{}

// grant is the authenticated policy of a request.
type grant struct {
	policy string
	perms  Permission
}

// need wraps h so that it only runs when the request's policy holds every
// right in p; otherwise it answers 401 401002 in the service's error shape,
// as IoT Hub and DPS do for a valid token of a policy without the right.
func (s *Service) need(p Permission, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		g, _ := r.Context().Value(grantKey{}).(grant)
		if g.perms&p != p {
			s.fail(w, r, errUnauthorizedE.With("Unauthorized: policy %q (%s) lacks %s, needed for %s %s",
				g.policy, g.perms, p&^g.perms, r.Method, r.URL.Path))
			return
		}
		h(w, r)
	}
}

// checkPermissions reports a policy name that perms names but policies
// lacks: a typo would otherwise silently keep the default rights.
func checkPermissions(host string, policies Policies, perms map[string]Permission) error {
	have := map[string]bool{}
	for n := range policies {
		have[strings.ToLower(n)] = true
	}
	for n := range perms {
		if !have[strings.ToLower(n)] {
			return fmt.Errorf("service: %s: permissions for unknown policy %q", host, n)
		}
	}
	return nil
}
