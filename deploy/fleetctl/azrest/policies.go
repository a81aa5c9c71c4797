package azrest

import (
	"context"
	"encoding/json"
	"net/http"
)

// CredentialPolicy is an emulator credential policy: the issuing CA and
// validity behind an enrollment's credentialPolicyName (docs/protocol.md A.5).
// On Azure the policy is an Azure Device Registry resource managed through
// Azure Resource Manager, not a DPS route.
type CredentialPolicy struct {
	Name               string `json:"name"`
	ValiditySeconds    int64  `json:"validitySeconds"`
	IssuingCertificate string `json:"issuingCertificate,omitempty"` // PEM
	RootCertificate    string `json:"rootCertificate,omitempty"`    // PEM
	// IssuingCertificateInfo is the issuing CA's subject, thumbprints and
	// validity as the emulator reports them.
	IssuingCertificateInfo json.RawMessage `json:"issuingCertificateInfo,omitempty"`
	ETag                   string          `json:"etag,omitempty"`
	CreatedDateTimeUTC     string          `json:"createdDateTimeUtc,omitempty"`
	LastUpdatedDateTimeUTC string          `json:"lastUpdatedDateTimeUtc,omitempty"`
}

// policyErr says plainly that Azure has no such route.
func policyErr(err error) error {
	return emulatorOnly(err, "credential policies exist only on the emulator; on Azure they are Azure Device Registry resources managed through Azure Resource Manager (an ADR namespace's credential policy), which an enrollment names with --credential-policy")
}

// PutCredentialPolicy is PUT /credentialPolicies/{name} (emulator only):
// creates the policy (a new issuing CA) or changes its validity;
// validitySeconds 0 takes the emulator's default. etag "" sends no If-Match.
func (d *DPS) PutCredentialPolicy(ctx context.Context, name string, validitySeconds int64, etag string) (CredentialPolicy, error) {
	var p CredentialPolicy
	body := map[string]any{}
	if validitySeconds > 0 {
		body["validitySeconds"] = validitySeconds
	}
	err := d.c.do(ctx, request{method: http.MethodPut, path: "/credentialPolicies/" + escape(name), header: ifMatch(etag), body: body, out: &p})
	if d.c.opts.DryRun != nil {
		p = CredentialPolicy{Name: name, ValiditySeconds: validitySeconds}
	}
	return p, policyErr(err)
}

// GetCredentialPolicy is GET /credentialPolicies/{name} (emulator only).
func (d *DPS) GetCredentialPolicy(ctx context.Context, name string) (CredentialPolicy, error) {
	var p CredentialPolicy
	err := d.c.do(ctx, request{method: http.MethodGet, path: "/credentialPolicies/" + escape(name), out: &p})
	return p, policyErr(err)
}

// ListCredentialPolicies is GET /credentialPolicies (emulator only).
func (d *DPS) ListCredentialPolicies(ctx context.Context) ([]CredentialPolicy, error) {
	var ps []CredentialPolicy
	err := d.c.do(ctx, request{method: http.MethodGet, path: "/credentialPolicies", out: &ps})
	if err != nil {
		return nil, policyErr(err)
	}
	return ps, nil
}

// DeleteCredentialPolicy is DELETE /credentialPolicies/{name} (emulator only).
func (d *DPS) DeleteCredentialPolicy(ctx context.Context, name string) error {
	return policyErr(d.c.do(ctx, request{method: http.MethodDelete, path: "/credentialPolicies/" + escape(name)}))
}
