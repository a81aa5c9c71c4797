package store

import (
	"encoding/json"
	"strings"
	"time"
)

// Time marshals as UTC with 7 fractional digits, the way the Azure services
// print timestamps (docs/protocol.md A.4). The zero value marshals as
// "0001-01-01T00:00:00Z", as IoT Hub does for never-set times.
type Time struct{ time.Time }

const azureTimeLayout = "2006-01-02T15:04:05.0000000Z"

// MarshalJSON implements json.Marshaler.
func (t Time) MarshalJSON() ([]byte, error) {
	if t.IsZero() {
		return []byte(`"0001-01-01T00:00:00Z"`), nil
	}
	return []byte(`"` + t.UTC().Format(azureTimeLayout) + `"`), nil
}

// UnmarshalJSON implements json.Unmarshaler; it accepts any RFC 3339 time.
func (t *Time) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		t.Time = time.Time{}
		return nil
	}
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return err
	}
	t.Time = v.UTC()
	return nil
}

// ---- DPS (docs/protocol.md C, D) ----

// X509CertificateInfo is filled in by the service from a certificate.
type X509CertificateInfo struct {
	SubjectName      string `json:"subjectName"`
	SHA1Thumbprint   string `json:"sha1Thumbprint"`
	SHA256Thumbprint string `json:"sha256Thumbprint"`
	IssuerName       string `json:"issuerName"`
	NotBeforeUTC     Time   `json:"notBeforeUtc"`
	NotAfterUTC      Time   `json:"notAfterUtc"`
	SerialNumber     string `json:"serialNumber"`
	Version          int    `json:"version"`
}

// X509CertificateWithInfo holds a PEM certificate as written by the client
// and the info the service derives from it.
type X509CertificateWithInfo struct {
	Certificate string               `json:"certificate,omitempty"`
	Info        *X509CertificateInfo `json:"info,omitempty"`
}

// X509Certificates is a primary/secondary pair.
type X509Certificates struct {
	Primary   *X509CertificateWithInfo `json:"primary,omitempty"`
	Secondary *X509CertificateWithInfo `json:"secondary,omitempty"`
}

// X509CAReferences names verified CA certificates uploaded to the DPS.
type X509CAReferences struct {
	Primary   string `json:"primary,omitempty"`
	Secondary string `json:"secondary,omitempty"`
}

// X509Attestation is the x509 part of an attestation mechanism.
type X509Attestation struct {
	ClientCertificates  *X509Certificates `json:"clientCertificates,omitempty"`
	SigningCertificates *X509Certificates `json:"signingCertificates,omitempty"`
	CAReferences        *X509CAReferences `json:"caReferences,omitempty"`
}

// Attestation types (docs/protocol.md D).
const (
	AttestationX509         = "x509"
	AttestationSymmetricKey = "symmetricKey"
	AttestationTPM          = "tpm"
	AttestationNone         = "none"
)

// AttestationMechanism is an enrollment's attestation. Only x509 is
// implemented by the emulator's DPS.
type AttestationMechanism struct {
	Type string           `json:"type"`
	X509 *X509Attestation `json:"x509,omitempty"`
	// SymmetricKey and TPM are kept verbatim so they round-trip.
	SymmetricKey json.RawMessage `json:"symmetricKey,omitempty"`
	TPM          json.RawMessage `json:"tpm,omitempty"`
}

// ReprovisionPolicy (docs/protocol.md C). Both fields default to true.
type ReprovisionPolicy struct {
	UpdateHubAssignment bool `json:"updateHubAssignment"`
	MigrateDeviceData   bool `json:"migrateDeviceData"`
}

// InitialTwinProperties holds the desired section of an initial twin.
type InitialTwinProperties struct {
	Desired map[string]any `json:"desired,omitempty"`
}

// InitialTwin is written into the hub twin on first assignment or reset.
type InitialTwin struct {
	Tags       map[string]any        `json:"tags,omitempty"`
	Properties InitialTwinProperties `json:"properties"`
}

// DeviceCapabilities of an enrollment or identity.
type DeviceCapabilities struct {
	IoTEdge bool `json:"iotEdge"`
}

// CustomAllocationDefinition is kept for round-tripping; the emulator does
// not call webhooks.
type CustomAllocationDefinition struct {
	WebhookURL string `json:"webhookUrl"`
	APIVersion string `json:"apiVersion"`
}

// Provisioning and allocation enums.
const (
	StatusEnabled  = "enabled"
	StatusDisabled = "disabled"

	AllocationHashed     = "hashed"
	AllocationStatic     = "static"
	AllocationGeoLatency = "geoLatency"
	AllocationCustom     = "custom"
)

// EnrollmentGroup (docs/protocol.md D).
type EnrollmentGroup struct {
	EnrollmentGroupID string               `json:"enrollmentGroupId"`
	Attestation       AttestationMechanism `json:"attestation"`
	// CredentialPolicyName names the credential policy whose issuing CA
	// signs the csr of a registering device (docs/protocol.md A.5).
	CredentialPolicyName       string                      `json:"credentialPolicyName,omitempty"`
	Capabilities               *DeviceCapabilities         `json:"capabilities,omitempty"`
	IoTHubHostName             string                      `json:"iotHubHostName,omitempty"`
	InitialTwin                *InitialTwin                `json:"initialTwin,omitempty"`
	ETag                       string                      `json:"etag,omitempty"`
	ProvisioningStatus         string                      `json:"provisioningStatus,omitempty"`
	ReprovisionPolicy          *ReprovisionPolicy          `json:"reprovisionPolicy,omitempty"`
	CreatedDateTimeUTC         *Time                       `json:"createdDateTimeUtc,omitempty"`
	LastUpdatedDateTimeUTC     *Time                       `json:"lastUpdatedDateTimeUtc,omitempty"`
	AllocationPolicy           string                      `json:"allocationPolicy,omitempty"`
	IoTHubs                    []string                    `json:"iotHubs,omitempty"`
	CustomAllocationDefinition *CustomAllocationDefinition `json:"customAllocationDefinition,omitempty"`
}

// IndividualEnrollment (docs/protocol.md D).
type IndividualEnrollment struct {
	RegistrationID string `json:"registrationId"`
	DeviceID       string `json:"deviceId,omitempty"`
	// CredentialPolicyName: as EnrollmentGroup's (docs/protocol.md A.5).
	CredentialPolicyName       string                      `json:"credentialPolicyName,omitempty"`
	RegistrationState          *DeviceRegistrationState    `json:"registrationState,omitempty"`
	Attestation                AttestationMechanism        `json:"attestation"`
	Capabilities               *DeviceCapabilities         `json:"capabilities,omitempty"`
	IoTHubHostName             string                      `json:"iotHubHostName,omitempty"`
	InitialTwin                *InitialTwin                `json:"initialTwin,omitempty"`
	ETag                       string                      `json:"etag,omitempty"`
	ProvisioningStatus         string                      `json:"provisioningStatus,omitempty"`
	ReprovisionPolicy          *ReprovisionPolicy          `json:"reprovisionPolicy,omitempty"`
	CreatedDateTimeUTC         *Time                       `json:"createdDateTimeUtc,omitempty"`
	LastUpdatedDateTimeUTC     *Time                       `json:"lastUpdatedDateTimeUtc,omitempty"`
	AllocationPolicy           string                      `json:"allocationPolicy,omitempty"`
	IoTHubs                    []string                    `json:"iotHubs,omitempty"`
	CustomAllocationDefinition *CustomAllocationDefinition `json:"customAllocationDefinition,omitempty"`
	OptionalDeviceInformation  map[string]any              `json:"optionalDeviceInformation,omitempty"`
}

// Registration statuses (docs/protocol.md A.4).
const (
	RegUnassigned = "unassigned"
	RegAssigning  = "assigning"
	RegAssigned   = "assigned"
	RegFailed     = "failed"
	RegDisabled   = "disabled"

	SubInitialAssignment = "initialAssignment"
	SubDataMigrated      = "deviceDataMigrated"
	SubDataReset         = "deviceDataReset"
	SubReprovisioned     = "reprovisionedToInitialAssignment"
)

// DeviceRegistrationState is a DPS registration record (service view, docs/protocol.md D).
type DeviceRegistrationState struct {
	RegistrationID         string          `json:"registrationId"`
	CreatedDateTimeUTC     *Time           `json:"createdDateTimeUtc,omitempty"`
	AssignedHub            string          `json:"assignedHub,omitempty"`
	DeviceID               string          `json:"deviceId,omitempty"`
	Status                 string          `json:"status"`
	Substatus              string          `json:"substatus,omitempty"`
	ErrorCode              int             `json:"errorCode,omitempty"`
	ErrorMessage           string          `json:"errorMessage,omitempty"`
	LastUpdatedDateTimeUTC *Time           `json:"lastUpdatedDateTimeUtc,omitempty"`
	ETag                   string          `json:"etag,omitempty"`
	Payload                json.RawMessage `json:"payload,omitempty"`
}

// X509RegistrationResult is the x509 part of the device-facing registration
// state (docs/protocol.md A.4).
type X509RegistrationResult struct {
	EnrollmentGroupID      string               `json:"enrollmentGroupId,omitempty"`
	CertificateInfo        *X509CertificateInfo `json:"certificateInfo,omitempty"`
	SigningCertificateInfo *X509CertificateInfo `json:"signingCertificateInfo,omitempty"`
}

// DeviceRegistrationResult is the registration state as a device sees it in
// a RegistrationOperationStatus (docs/protocol.md A.4).
type DeviceRegistrationResult struct {
	X509 *X509RegistrationResult `json:"x509,omitempty"`
	DeviceRegistrationState
	// IssuedCertificateChain is the certificate issued for the request's
	// csr and its issuers, leaf first, each base64 DER (docs/protocol.md
	// A.5). Only the operation status carries it, not the record.
	IssuedCertificateChain []string `json:"issuedCertificateChain,omitempty"`
}

// CACertificate is a CA certificate uploaded to the DPS (or a hub), shaped
// like the ARM CertificateResponse so it can be served as-is.
type CACertificate struct {
	Name       string                  `json:"name"`
	ETag       string                  `json:"etag"`
	Type       string                  `json:"type"`
	Properties CACertificateProperties `json:"properties"`
}

// CACertificateProperties is the ARM certificate properties bag.
type CACertificateProperties struct {
	Subject          string `json:"subject"`
	Expiry           Time   `json:"expiry"`
	Thumbprint       string `json:"thumbprint"` // SHA-1 hex upper case, as ARM shows it
	ThumbprintSHA256 string `json:"thumbprintSha256,omitempty"`
	IsVerified       bool   `json:"isVerified"`
	Certificate      string `json:"certificate"` // PEM
	Created          Time   `json:"created"`
	Updated          Time   `json:"updated"`
	// VerificationCode is set after GenerateVerificationCode and cleared
	// once the certificate is verified.
	VerificationCode string `json:"verificationCode,omitempty"`
}

// ---- IoT Hub (docs/protocol.md E) ----

// Device statuses and authentication types (docs/protocol.md E).
const (
	AuthSelfSigned           = "selfSigned"
	AuthCertificateAuthority = "certificateAuthority"
	AuthSAS                  = "sas"
	AuthNone                 = "none"

	Connected    = "Connected"
	Disconnected = "Disconnected"
)

// SymmetricKey of an identity.
type SymmetricKey struct {
	PrimaryKey   *string `json:"primaryKey"`
	SecondaryKey *string `json:"secondaryKey"`
}

// X509Thumbprint of a selfSigned identity: hex SHA-1 or SHA-256.
type X509Thumbprint struct {
	PrimaryThumbprint   *string `json:"primaryThumbprint"`
	SecondaryThumbprint *string `json:"secondaryThumbprint"`
}

// AuthenticationMechanism of an identity.
type AuthenticationMechanism struct {
	Type           string         `json:"type"`
	SymmetricKey   SymmetricKey   `json:"symmetricKey"`
	X509Thumbprint X509Thumbprint `json:"x509Thumbprint"`
}

// Device is a hub device identity (docs/protocol.md E).
type Device struct {
	DeviceID                   string                  `json:"deviceId"`
	GenerationID               string                  `json:"generationId"`
	ETag                       string                  `json:"etag"`
	Status                     string                  `json:"status"`
	StatusReason               *string                 `json:"statusReason"`
	StatusUpdatedTime          Time                    `json:"statusUpdatedTime"`
	ConnectionState            string                  `json:"connectionState"`
	ConnectionStateUpdatedTime Time                    `json:"connectionStateUpdatedTime"`
	LastActivityTime           Time                    `json:"lastActivityTime"`
	CloudToDeviceMessageCount  int                     `json:"cloudToDeviceMessageCount"`
	Authentication             AuthenticationMechanism `json:"authentication"`
	Capabilities               DeviceCapabilities      `json:"capabilities"`
	DeviceScope                *string                 `json:"deviceScope"`
}

// TwinProperties is the properties section of a twin.
type TwinProperties struct {
	Desired  TwinCollection `json:"desired"`
	Reported TwinCollection `json:"reported"`
}

// Twin is the service view of a device twin (docs/protocol.md E).
type Twin struct {
	DeviceID                  string             `json:"deviceId"`
	ETag                      string             `json:"etag"`
	DeviceETag                string             `json:"deviceEtag"`
	Status                    string             `json:"status"`
	StatusReason              *string            `json:"statusReason"`
	StatusUpdateTime          Time               `json:"statusUpdateTime"`
	ConnectionState           string             `json:"connectionState"`
	LastActivityTime          Time               `json:"lastActivityTime"`
	CloudToDeviceMessageCount int                `json:"cloudToDeviceMessageCount"`
	AuthenticationType        string             `json:"authenticationType"`
	X509Thumbprint            X509Thumbprint     `json:"x509Thumbprint"`
	ModelID                   string             `json:"modelId"`
	Version                   int64              `json:"version"`
	Tags                      map[string]any     `json:"tags,omitempty"`
	Properties                TwinProperties     `json:"properties"`
	Capabilities              DeviceCapabilities `json:"capabilities"`
}

// TwinPatch is the body of PATCH/PUT /twins/{id}: tags and desired
// properties. A nil map leaves that section alone.
type TwinPatch struct {
	Tags       map[string]any `json:"tags,omitempty"`
	Properties struct {
		Desired map[string]any `json:"desired,omitempty"`
	} `json:"properties"`
}

// Message is a device-to-cloud message as the hub recorded it (docs/protocol.md B.3).
type Message struct {
	DeviceID     string `json:"deviceId"`
	Hub          string `json:"hub"`
	Topic        string `json:"topic"`
	EnqueuedTime Time   `json:"enqueuedTime"`
	Body         []byte `json:"body"`
	MessageID    string `json:"messageId,omitempty"`
	// SystemProperties uses the long names: message-id, correlation-id,
	// user-id, content-type, content-encoding, iothub-creation-time-utc,
	// absolute-expiry-time, to, dt-subject, ..., and the hub's stamps
	// iothub-connection-device-id, iothub-connection-auth-generation-id,
	// iothub-connection-auth-method, iothub-enqueuedtime.
	SystemProperties map[string]string `json:"systemProperties"`
	// Properties are the application properties.
	Properties map[string]string `json:"properties"`
}

// C2DMessage is a queued cloud-to-device message (docs/protocol.md B.4).
type C2DMessage struct {
	MessageID       string            `json:"messageId"`
	CorrelationID   string            `json:"correlationId,omitempty"`
	UserID          string            `json:"userId,omitempty"`
	ContentType     string            `json:"contentType,omitempty"`
	ContentEncoding string            `json:"contentEncoding,omitempty"`
	To              string            `json:"to,omitempty"`
	Body            []byte            `json:"body"`
	Properties      map[string]string `json:"properties,omitempty"`
	EnqueuedTime    Time              `json:"enqueuedTime"`
	ExpiryTime      Time              `json:"expiryTime"`
}
