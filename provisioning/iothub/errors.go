package iothub

import (
	"errors"
	"fmt"

	"github.com/reefer/tracker/provisioning/internal/retry"
)

// Outcomes callers act on; test with errors.Is.
var (
	// ErrNotAuthorized: the hub refused the CONNECT (CONNACK 5, or 4, or a
	// TLS alert) NotAuthorizedLimit times in a row: the device is disabled,
	// deleted or unknown, or its certificate no longer matches (docs/protocol.md B.7,
	// B.1). The caller should go back to DPS.
	ErrNotAuthorized = errors.New("not authorized by IoT Hub")
	// ErrTakenOver: the connection keeps being closed by the hub shortly after
	// it was accepted, the pattern of another client connecting with the same
	// device id (docs/protocol.md B.7). A heuristic; see Client.
	ErrTakenOver = errors.New("connection repeatedly closed by the hub (another client with the same device id?)")
	// ErrNotConnected: no connection at the moment; the call sent nothing.
	ErrNotConnected = errors.New("not connected")
	// ErrConnectionLost: the connection dropped before the operation was
	// acknowledged; it may or may not have reached the hub.
	ErrConnectionLost = errors.New("connection lost")
	// ErrTimeout: no acknowledgement or response within OperationTimeout.
	ErrTimeout = errors.New("timed out")
	// ErrBadRequest: the hub answered 400, or the request is invalid locally.
	ErrBadRequest = errors.New("bad request")
	// ErrThrottled: the hub answered 429 (docs/protocol.md B.5, B.7).
	ErrThrottled = errors.New("throttled")
	// ErrServer: the hub answered 5xx; retry later.
	ErrServer = errors.New("server error")
	// ErrClosed: the client was closed.
	ErrClosed = errors.New("client closed")
)

// StatusError is a non-success status from a twin response topic.
type StatusError struct {
	Op     string // "twin get", "twin update reported"
	Status int
	Body   []byte
	Kind   error // ErrBadRequest, ErrThrottled, ErrServer, ErrTooLarge or nil
}

func (e *StatusError) Error() string {
	s := fmt.Sprintf("%s: status %d", e.Op, e.Status)
	if len(e.Body) > 0 {
		s += ": " + string(e.Body)
	}
	return s
}

func (e *StatusError) Unwrap() error { return e.Kind }

func statusError(op string, r twinResponse) error {
	e := &StatusError{Op: op, Status: r.Status, Body: r.Body}
	switch s := r.Status; {
	case s == 400:
		e.Kind = ErrBadRequest
	case s == 413: // docs/protocol.md G.5: the code for an oversized patch is unconfirmed
		e.Kind = ErrTooLarge
	case s == 429:
		e.Kind = ErrThrottled
	case s >= 500:
		e.Kind = ErrServer
	}
	return e
}

// classifyConnect sorts a paho Connect error: refusal of our identity
// (CONNACK 4/5 or a TLS alert, docs/protocol.md B.7), or nil for anything else, which
// the client treats as transient and retries.
func classifyConnect(err error) error {
	if retry.ClassifyConnect(err) == retry.Refused {
		return ErrNotAuthorized
	}
	return nil
}
