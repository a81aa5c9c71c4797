// Package retry holds what the DPS and IoT Hub clients share about failing
// and trying again: capped exponential back-off with full jitter, and the
// classification of an MQTT CONNECT error into "the server refused our
// identity" versus "try again later".
package retry

import (
	"errors"
	"net"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// Backoff is the delay before retry number attempt (0 for the first retry):
// "full jitter", a uniform pick in [0, min(max, base·2^attempt)), so that a
// fleet coming back after an outage spreads out instead of stampeding.
//
// floor is the server's retry-after when it sent one (spec A.4: honour
// retry-after on 429); pass 0 for none. The jitter then goes on top of it,
// over a window at least as long as the floor: a throttled fleet is told the
// same retry-after, and waiting exactly that long would bring every device
// back in the same second, to be throttled again (bench/fleet measured
// exactly that). rnd is a sample from [0, 1).
func Backoff(attempt int, base, max, floor time.Duration, rnd float64) time.Duration {
	ceil := base
	// Doubling stops at max, so a huge attempt cannot overflow.
	for i := 0; i < attempt && ceil < max; i++ {
		ceil *= 2
	}
	if ceil > max {
		ceil = max
	}
	if floor <= 0 {
		return time.Duration(rnd * float64(ceil))
	}
	window := ceil
	if window < floor {
		window = floor
	}
	return floor + time.Duration(rnd*float64(window))
}

// ConnectOutcome is what a failed MQTT CONNECT says about retrying.
type ConnectOutcome int

const (
	// Transient: DNS, TCP, timeouts, CONNACK 3 (server unavailable), our own
	// certificate-verification failures. Worth retrying.
	Transient ConnectOutcome = iota
	// Refused: the server refused our identity: CONNACK 5 (not authorized),
	// CONNACK 4 (bad user name or password) or a TLS alert from the server
	// (spec A.4, B.7, G.2, G.3).
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
