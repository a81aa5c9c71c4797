package store

import (
	"errors"
	"fmt"
)

// Error is a domain error carrying an Azure 6-digit error code (docs/protocol.md D, E).
// The HTTP-like status is Code/1000, as the SDKs derive it (docs/protocol.md A.4).
type Error struct {
	Code    int    // e.g. 404001
	Name    string // e.g. "DeviceNotFound"
	Message string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("%d %s", e.Code, e.Name)
	}
	return fmt.Sprintf("%d %s: %s", e.Code, e.Name, e.Message)
}

// Status is the HTTP status that goes with the code.
func (e *Error) Status() int { return e.Code / 1000 }

// Is makes errors.Is match any *Error with the same code, so a sentinel
// matches a copy that carries a more specific message.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// With returns a copy of e with a specific message.
func (e *Error) With(format string, args ...any) *Error {
	c := *e
	c.Message = fmt.Sprintf(format, args...)
	return &c
}

// CodeOf returns the Azure code of err, or 500000 when err is not an *Error.
func CodeOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 500000
}

// Sentinel errors. Compare with errors.Is.
var (
	ErrInvalid             = &Error{Code: 400004, Name: "ArgumentInvalid"}
	ErrTwinInvalid         = &Error{Code: 400004, Name: "InvalidTwinPatch"}
	ErrUnauthorized        = &Error{Code: 401002, Name: "Unauthorized"}
	ErrQueueFull           = &Error{Code: 403004, Name: "DeviceMaximumQueueDepthExceeded"}
	ErrDeviceNotFound      = &Error{Code: 404001, Name: "DeviceNotFound"}
	ErrEnrollmentNotFound  = &Error{Code: 404201, Name: "EnrollmentNotFound"}
	ErrGroupNotFound       = &Error{Code: 404202, Name: "EnrollmentGroupNotFound"}
	ErrRegistrationMissing = &Error{Code: 404203, Name: "DeviceRegistrationNotFound"}
	ErrCANotFound          = &Error{Code: 404204, Name: "CertificateNotFound"}
	ErrHubNotFound         = &Error{Code: 404205, Name: "IotHubNotFound"}
	ErrMessageNotFound     = &Error{Code: 404206, Name: "MessageNotFound"}
	ErrDeviceNotOnline     = &Error{Code: 404103, Name: "DeviceNotOnline"}
	ErrDeviceExists        = &Error{Code: 409001, Name: "DeviceAlreadyExists"}
	ErrConflict            = &Error{Code: 409201, Name: "Conflict"}
	ErrPrecondition        = &Error{Code: 412001, Name: "PreconditionFailed"}
	ErrTooLarge            = &Error{Code: 413001, Name: "MessageTooLarge"}
	ErrThrottled           = &Error{Code: 429001, Name: "ThrottlingException"}
	ErrInternal            = &Error{Code: 500001, Name: "ServerError"}
	// ErrCredentialPolicyNotFound: no emulator credential policy of that
	// name (docs/protocol.md A.5; emulator-specific resource).
	ErrCredentialPolicyNotFound = &Error{Code: 404207, Name: "CredentialPolicyNotFound"}

	// Refusals of a register request with a csr (docs/protocol.md A.5).
	// Azure documents no codes for them (docs/protocol.md G.9): these
	// are the emulator's choice.
	ErrCSRAPIVersion      = &Error{Code: 400301, Name: "CsrNotSupportedByApiVersion"}
	ErrCSRInvalid         = &Error{Code: 400302, Name: "InvalidCertificateSigningRequest"}
	ErrCSRSubject         = &Error{Code: 400303, Name: "CertificateSigningRequestSubjectMismatch"}
	ErrNoCredentialPolicy = &Error{Code: 400304, Name: "CredentialPolicyNotConfigured"}
	// ErrMethodTimeout is the direct-method timeout. docs/protocol.md G.6: 504101 is
	// widely cited but unconfirmed; we use it.
	ErrMethodTimeout = &Error{Code: 504101, Name: "GatewayTimeout"}
)
