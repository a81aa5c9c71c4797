package service

import (
	"net/http"

	"github.com/reefer/tracker/deploy/emulator/store"
)

// policyRoutes registers the emulator's credential policies
// (docs/protocol.md A.5), its stand-in for the Azure Device Registry
// policies that enrollments name in credentialPolicyName. In Azure those
// are ARM resources of the ADR namespace, not DPS data-plane routes, so
// these routes are emulator-specific; like CA certificates they need the
// DPS's ServiceConfig right.
func (s *Service) policyRoutes(m *http.ServeMux) {
	m.HandleFunc("GET /credentialPolicies", s.need(ServiceConfig, s.listPolicies))
	m.HandleFunc("PUT /credentialPolicies/{name}", s.need(ServiceConfig, s.putPolicy))
	m.HandleFunc("GET /credentialPolicies/{name}", s.need(ServiceConfig, s.getPolicy))
	m.HandleFunc("DELETE /credentialPolicies/{name}", s.need(ServiceConfig, s.deletePolicy))
}

// putPolicy creates a policy (a new issuing CA) or changes its validity:
// body {"validitySeconds": N}, empty or 0 for the emulator's default.
func (s *Service) putPolicy(w http.ResponseWriter, r *http.Request) {
	var p store.CredentialPolicy
	b, err := readBody(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if len(b) > 0 {
		if err := jsonUnmarshal(b, &p); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	if p.Name != "" && p.Name != r.PathValue("name") {
		s.fail(w, r, store.ErrInvalid.With("name %q in the body does not match %q in the path", p.Name, r.PathValue("name")))
		return
	}
	p.Name = r.PathValue("name")
	out, err := s.st.PutCredentialPolicy(p, r.Header.Get("If-Match"))
	s.reply(w, r, out, out.ETag, err)
}

func (s *Service) getPolicy(w http.ResponseWriter, r *http.Request) {
	out, err := s.st.GetCredentialPolicy(r.PathValue("name"))
	s.reply(w, r, out, out.ETag, err)
}

func (s *Service) listPolicies(w http.ResponseWriter, r *http.Request) {
	out := s.st.ListCredentialPolicies()
	if out == nil {
		out = []store.CredentialPolicy{}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Service) deletePolicy(w http.ResponseWriter, r *http.Request) {
	s.replyDeleted(w, r, s.st.DeleteCredentialPolicy(r.PathValue("name"), r.Header.Get("If-Match")))
}
