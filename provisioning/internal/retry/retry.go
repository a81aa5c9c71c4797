// Package retry holds what the DPS and IoT Hub clients share about failing
// and trying again: the classification of an MQTT CONNECT error into "the
// server refused our identity" versus "try again later". The waits between
// tries are internal/backoff's.
package retry

import (
	"errors"
	"net"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// ConnectOutcome is what a failed MQTT CONNECT says about retrying.
type ConnectOutcome int

const (
	// Transient: DNS, TCP, timeouts, CONNACK 3 (server unavailable), our own
	// certificate-verification failures. Worth retrying.
	Transient ConnectOutcome = iota
	// Refused: the server refused our identity: CONNACK 5 (not authorized),
	// CONNACK 4 (bad user name or password) or a TLS alert from the server
	// (docs/protocol.md A.4, B.7, G.2, G.3).
	Refused
	// Rejected: the server rejected the request itself: CONNACK 2 (client
	// id rejected) or 1 (protocol version).
	Rejected
)

func (o ConnectOutcome) String() string {
	switch o {
	case Transient:
		return "transient"
	case Refused:
		return "refused"
	case Rejected:
		return "rejected"
	}
	return "outcome(?)"
}

// ClassifyConnect sorts a paho Connect error. Verification failures on our
// side stay Transient on purpose: a board without an RTC boots in 1970 and
// sees a "not yet valid" server certificate until its clock syncs.
func ClassifyConnect(err error) ConnectOutcome {
	switch {
	case errors.Is(err, packets.ErrorRefusedNotAuthorised),
		errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword),
		IsRemoteTLSAlert(err):
		return Refused
	case errors.Is(err, packets.ErrorRefusedIDRejected),
		errors.Is(err, packets.ErrorRefusedBadProtocolVersion):
		return Rejected
	default:
		return Transient
	}
}

// IsRemoteTLSAlert reports a TLS alert sent by the server, which crypto/tls
// surfaces as *net.OpError{Op: "remote error"}; with TLS 1.3 a rejected
// client certificate shows up this way on the first read after the
// handshake.
func IsRemoteTLSAlert(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "remote error"
}
