package azrest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
)

// Enrollment and registration shapes of the DPS service API (docs/protocol.md D),
// with every field the service documents for them (up to
// DPSEnrollmentAPIVersion), so that a read-modify-write sends back what it
// read.

// X509CertificateWithInfo holds a PEM (or base64 DER) certificate; the
// service fills in Info.
type X509CertificateWithInfo struct {
	Certificate string          `json:"certificate,omitempty"`
	Info        json.RawMessage `json:"info,omitempty"`
}

// X509Certificates is a primary/secondary pair.
type X509Certificates struct {
	Primary   *X509CertificateWithInfo `json:"primary,omitempty"`
	Secondary *X509CertificateWithInfo `json:"secondary,omitempty"`
}

// X509CAReferences names CA certificates uploaded to the DPS.
type X509CAReferences struct {
	Primary   string `json:"primary,omitempty"`
	Secondary string `json:"secondary,omitempty"`
}

// X509Attestation is the x509 part of an attestation.
type X509Attestation struct {
	ClientCertificates  *X509Certificates `json:"clientCertificates,omitempty"`
	SigningCertificates *X509Certificates `json:"signingCertificates,omitempty"`
	CAReferences        *X509CAReferences `json:"caReferences,omitempty"`
}

// Attestation types (docs/protocol.md D).
const (
	AttestationX509         = "x509"
	AttestationSymmetricKey = "symmetricKey"
)

// Attestation is an enrollment's AttestationMechanism.
type Attestation struct {
	Type         string           `json:"type"`
	X509         *X509Attestation `json:"x509,omitempty"`
	SymmetricKey json.RawMessage  `json:"symmetricKey,omitempty"`
	TPM          json.RawMessage  `json:"tpm,omitempty"`
}

// InitialTwin is written into the hub twin on first assignment.
type InitialTwin struct {
	Tags       map[string]any `json:"tags,omitempty"`
	Properties struct {
		Desired map[string]any `json:"desired,omitempty"`
	} `json:"properties"`
}

// ReprovisionPolicy (docs/protocol.md C).
type ReprovisionPolicy struct {
	UpdateHubAssignment bool `json:"updateHubAssignment"`
	MigrateDeviceData   bool `json:"migrateDeviceData"`
}

// Provisioning statuses.
const (
	StatusEnabled  = "enabled"
	StatusDisabled = "disabled"
)

// Enrollment holds what enrollment groups and individual enrollments
// share (docs/protocol.md D).
type Enrollment struct {
	Attestation            Attestation        `json:"attestation"`
	IoTHubHostName         string             `json:"iotHubHostName,omitempty"`
	IoTHubs                []string           `json:"iotHubs,omitempty"`
	AllocationPolicy       string             `json:"allocationPolicy,omitempty"`
	InitialTwin            *InitialTwin       `json:"initialTwin,omitempty"`
	ProvisioningStatus     string             `json:"provisioningStatus,omitempty"`
	ReprovisionPolicy      *ReprovisionPolicy `json:"reprovisionPolicy,omitempty"`
	ETag                   string             `json:"etag,omitempty"`
	CreatedDateTimeUTC     string             `json:"createdDateTimeUtc,omitempty"`
	LastUpdatedDateTimeUTC string             `json:"lastUpdatedDateTimeUtc,omitempty"`
	Capabilities           json.RawMessage    `json:"capabilities,omitempty"`
	CustomAllocation       json.RawMessage    `json:"customAllocationDefinition,omitempty"`
	// CredentialPolicyName names the credential policy that issues the
	// devices' operational certificates when they register with a CSR
	// (docs/protocol.md A.5). It exists only from DPSEnrollmentAPIVersion
	// on, hence that version for every enrollment route.
	CredentialPolicyName string `json:"credentialPolicyName,omitempty"`
}

// EnrollmentGroup (docs/protocol.md D).
type EnrollmentGroup struct {
	EnrollmentGroupID string `json:"enrollmentGroupId"`
	Enrollment
}

// IndividualEnrollment (docs/protocol.md D).
type IndividualEnrollment struct {
	RegistrationID    string          `json:"registrationId"`
	DeviceID          string          `json:"deviceId,omitempty"`
	RegistrationState json.RawMessage `json:"registrationState,omitempty"`
	// OptionalDeviceInformation is kept as read (docs/protocol.md D).
	OptionalDeviceInformation json.RawMessage `json:"optionalDeviceInformation,omitempty"`
	Enrollment
}

// RegistrationState is a DPS registration record (DeviceRegistrationState).
type RegistrationState struct {
	RegistrationID         string `json:"registrationId"`
	CreatedDateTimeUTC     string `json:"createdDateTimeUtc,omitempty"`
	AssignedHub            string `json:"assignedHub,omitempty"`
	DeviceID               string `json:"deviceId,omitempty"`
	Status                 string `json:"status"`
	Substatus              string `json:"substatus,omitempty"`
	ErrorCode              int    `json:"errorCode,omitempty"`
	ErrorMessage           string `json:"errorMessage,omitempty"`
	LastUpdatedDateTimeUTC string `json:"lastUpdatedDateTimeUtc,omitempty"`
	ETag                   string `json:"etag,omitempty"`
}

// Bulk operation modes (docs/protocol.md D).
const (
	BulkCreate = "create"
	BulkUpdate = "update"
	BulkDelete = "delete"
)

// MaxBulk is the most enrollments one bulk operation takes: "Bulk device
// enrollment operation with maximum of 10 enrollments" (docs/protocol.md D).
const MaxBulk = 10

// BulkError is one failed item of a bulk operation.
type BulkError struct {
	RegistrationID string `json:"registrationId"`
	ErrorCode      int    `json:"errorCode"`
	ErrorStatus    string `json:"errorStatus"`
}

// BulkResult is BulkEnrollmentOperationResult.
type BulkResult struct {
	IsSuccessful bool        `json:"isSuccessful"`
	Errors       []BulkError `json:"errors"`
}

// DPS is a client of the DPS service API.
type DPS struct{ c *client }

// NewDPS returns a DPS client for a DPS service connection string.
func NewDPS(cs ConnectionString, o Options) (*DPS, error) {
	c, err := newClient("DPS", cs, DPSAPIVersion, o)
	if err != nil {
		return nil, err
	}
	return &DPS{c: c}, nil
}

// enrollment sends r with the enrollment routes' api-version
// (DPSEnrollmentAPIVersion): under the stable one the service neither
// returns nor keeps credentialPolicyName, so a read-modify-write would
// drop it (docs/protocol.md D "Enrollment api-version").
func (d *DPS) enrollment(ctx context.Context, r request) error {
	r.apiVersion = DPSEnrollmentAPIVersion
	return d.c.do(ctx, r)
}

// HostName is the DPS host the client signs for.
func (d *DPS) HostName() string { return d.c.cs.HostName }

// ifMatch is the If-Match header for an etag ("" sends none).
func ifMatch(etag string) map[string]string {
	if etag == "" {
		return nil
	}
	return map[string]string{"If-Match": etag}
}

// GetGroup is GET /enrollmentGroups/{id}.
func (d *DPS) GetGroup(ctx context.Context, id string) (EnrollmentGroup, error) {
	var g EnrollmentGroup
	err := d.enrollment(ctx, request{method: http.MethodGet, path: "/enrollmentGroups/" + escape(id), out: &g})
	return g, err
}

// PutGroup is PUT /enrollmentGroups/{id}: create (etag "") or replace
// (etag of the version read, or "*").
func (d *DPS) PutGroup(ctx context.Context, g EnrollmentGroup, etag string) (EnrollmentGroup, error) {
	var out EnrollmentGroup
	err := d.enrollment(ctx, request{method: http.MethodPut, path: "/enrollmentGroups/" + escape(g.EnrollmentGroupID), header: ifMatch(etag), body: g, out: &out})
	if d.c.opts.DryRun != nil {
		out = g
	}
	return out, err
}

// DeleteGroup is DELETE /enrollmentGroups/{id}.
func (d *DPS) DeleteGroup(ctx context.Context, id, etag string) error {
	return d.enrollment(ctx, request{method: http.MethodDelete, path: "/enrollmentGroups/" + escape(id), header: ifMatch(etag)})
}

// ListGroups is POST /enrollmentGroups/query {"query":"*"}, every page.
func (d *DPS) ListGroups(ctx context.Context) ([]EnrollmentGroup, error) {
	var out []EnrollmentGroup
	err := d.c.pages(ctx, request{path: "/enrollmentGroups/query", body: map[string]string{"query": "*"}, apiVersion: DPSEnrollmentAPIVersion}, func(raw json.RawMessage) error {
		var g EnrollmentGroup
		if err := json.Unmarshal(raw, &g); err != nil {
			return fmt.Errorf("DPS enrollment group query: %w", err)
		}
		out = append(out, g)
		return nil
	})
	return out, err
}

// GetEnrollment is GET /enrollments/{registrationId}.
func (d *DPS) GetEnrollment(ctx context.Context, id string) (IndividualEnrollment, error) {
	var e IndividualEnrollment
	err := d.enrollment(ctx, request{method: http.MethodGet, path: "/enrollments/" + escape(id), out: &e})
	return e, err
}

// PutEnrollment is PUT /enrollments/{registrationId}.
func (d *DPS) PutEnrollment(ctx context.Context, e IndividualEnrollment, etag string) (IndividualEnrollment, error) {
	var out IndividualEnrollment
	err := d.enrollment(ctx, request{method: http.MethodPut, path: "/enrollments/" + escape(e.RegistrationID), header: ifMatch(etag), body: e, out: &out})
	if d.c.opts.DryRun != nil {
		out = e
	}
	return out, err
}

// DeleteEnrollment is DELETE /enrollments/{registrationId}.
func (d *DPS) DeleteEnrollment(ctx context.Context, id, etag string) error {
	return d.enrollment(ctx, request{method: http.MethodDelete, path: "/enrollments/" + escape(id), header: ifMatch(etag)})
}

// Bulk is POST /enrollments {"enrollments":[...],"mode":...}: at most
// MaxBulk enrollments. Items that failed are in the result, not the error.
func (d *DPS) Bulk(ctx context.Context, mode string, es []IndividualEnrollment) (BulkResult, error) {
	if len(es) == 0 || len(es) > MaxBulk {
		return BulkResult{}, fmt.Errorf("a DPS bulk operation takes 1 to %d enrollments, not %d", MaxBulk, len(es))
	}
	body := struct {
		Enrollments []IndividualEnrollment `json:"enrollments"`
		Mode        string                 `json:"mode"`
	}{es, mode}
	res := BulkResult{IsSuccessful: true}
	err := d.enrollment(ctx, request{method: http.MethodPost, path: "/enrollments", body: body, out: &res})
	return res, err
}

// GetRegistration is GET /registrations/{registrationId}.
func (d *DPS) GetRegistration(ctx context.Context, id string) (RegistrationState, error) {
	var r RegistrationState
	err := d.c.do(ctx, request{method: http.MethodGet, path: "/registrations/" + escape(id), out: &r})
	return r, err
}

// DeleteRegistration is DELETE /registrations/{registrationId}.
func (d *DPS) DeleteRegistration(ctx context.Context, id, etag string) error {
	return d.c.do(ctx, request{method: http.MethodDelete, path: "/registrations/" + escape(id), header: ifMatch(etag)})
}

// ListRegistrations is POST /registrations/{groupId}/query, every page:
// the records of the devices a group provisioned.
func (d *DPS) ListRegistrations(ctx context.Context, group string) ([]RegistrationState, error) {
	var out []RegistrationState
	err := d.c.pages(ctx, request{path: "/registrations/" + escape(group) + "/query"}, func(raw json.RawMessage) error {
		var r RegistrationState
		if err := json.Unmarshal(raw, &r); err != nil {
			return fmt.Errorf("DPS registration query: %w", err)
		}
		out = append(out, r)
		return nil
	})
	return out, err
}
