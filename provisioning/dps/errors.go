package dps

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/reefer/tracker/provisioning/internal/retry"
)

// Outcomes callers act on. Register wraps them (with *Error for details), so
// test with errors.Is.
var (
	// ErrDisabled: the most specific enrollment for this device is disabled
	// (terminal status "disabled", docs/protocol.md A.4, C). Retrying will not help until
	// an operator re-enables it; back off for a long time.
	ErrDisabled = errors.New("enrollment disabled")
	// ErrUnauthorized: attestation failed. No enrollment matches the chain,
	// an intermediate is missing, or the CA is unknown: 401/403, CONNACK 4/5
	// or a TLS alert from the server (docs/protocol.md A.4, G.2).
	ErrUnauthorized = errors.New("not authorized")
	// ErrThrottled: DPS answered 429. Error.RetryAfter carries its hint.
	ErrThrottled = errors.New("throttled")
	// ErrTransient: 5xx, network failure, timeout. Worth retrying later.
	ErrTransient = errors.New("transient failure")
	// ErrMalformed: a response that does not follow the protocol.
	ErrMalformed = errors.New("malformed response")
	// ErrFailed: the operation ended with status "failed"; Error.ErrorCode
	// and Error.Message say why (for example 400207 custom allocation failed).
	ErrFailed = errors.New("registration failed")
	// ErrBadRequest: 400 (and 409/412/415 and other 4xx not listed above):
	// the request itself is wrong; do not retry it unchanged.
	ErrBadRequest = errors.New("bad request")
	// ErrNotFound: 404 on register (unknown ID scope / instance). On a
	// status poll a 404 means the operation is gone and Register re-registers.
	ErrNotFound = errors.New("not found")
)

// Error carries the details of a failed DPS exchange. Unwrap yields both the
// outcome sentinel (Kind) and the underlying cause, if any.
type Error struct {
	Kind       error         // one of the Err* sentinels above
	Op         string        // "connect", "subscribe", "register" or "poll"
	Status     int           // status segment of the response topic; 0 if none
	ErrorCode  int           // DPS 6-digit errorCode (e.g. 401002), if sent
	Message    string        // DPS message / errorMessage, if sent
	TrackingID string        // DPS trackingId, if sent
	RetryAfter time.Duration // retry-after of the response, 0 if absent
	Err        error         // underlying cause (network error, CONNACK error)
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Op)
	b.WriteString(": ")
	b.WriteString(e.Kind.Error())
	if e.Status != 0 {
		fmt.Fprintf(&b, " (status %d", e.Status)
		if e.ErrorCode != 0 {
			fmt.Fprintf(&b, ", errorCode %d", e.ErrorCode)
		}
		b.WriteString(")")
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

// Unwrap lets errors.Is match both the sentinel and the cause.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// retriable reports whether Register should try again after a back-off.
// docs/protocol.md A.4: only 429, 5xx and network errors are retried; a 404 on a poll
// means the operation was forgotten, so the device registers again.
func retriable(err error) bool {
	if errors.Is(err, ErrThrottled) || errors.Is(err, ErrTransient) {
		return true
	}
	var e *Error
	return errors.As(err, &e) && e.Kind == ErrNotFound && e.Op == "poll"
}

// classifyConnect maps a paho Connect error to an outcome. CONNACK 4/5 and a
// TLS alert from the server mean the server refused our identity (docs/protocol.md A.4,
// G.2); CONNACK 1/2 a bad request; anything else on the way (DNS, TCP,
// timeouts, CONNACK 3, our own certificate checks) is transient.
func classifyConnect(err error) error {
	switch retry.ClassifyConnect(err) {
	case retry.Refused:
		return ErrUnauthorized
	case retry.Rejected:
		return ErrBadRequest
	default:
		return ErrTransient
	}
}
