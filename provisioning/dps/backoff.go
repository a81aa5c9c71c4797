package dps

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// backoff is the delay before retry number attempt (0 for the first retry):
// "full jitter", a uniform pick in [0, min(max, base·2^attempt)), so that a
// fleet coming back after an outage spreads out instead of stampeding. The
// server's retry-after is a floor (spec A.4: honour retry-after on 429).
// rnd is a sample from [0, 1).
func backoff(attempt int, base, max, floor time.Duration, rnd float64) time.Duration {
	ceil := base
	for i := 0; i < attempt && ceil < max; i++ {
		ceil *= 2
	}
	if ceil > max {
		ceil = max
	}
	d := time.Duration(rnd * float64(ceil))
	if d < floor {
		d = floor
	}
	return d
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// classifyConnect maps a paho Connect error to an outcome. CONNACK 4/5 and a
// TLS alert from the server mean the server refused our identity (spec A.4,
// G.2); anything else on the way (DNS, TCP, timeouts, CONNACK 3) is transient.
// Our own certificate-verification failures stay transient on purpose: a
// board without an RTC boots in 1970 and sees a "not yet valid" server cert
// until the clock syncs.
func classifyConnect(err error) error {
	switch {
	case errors.Is(err, packets.ErrorRefusedNotAuthorised),
		errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword),
		isRemoteTLSAlert(err):
		return ErrUnauthorized
	case errors.Is(err, packets.ErrorRefusedIDRejected),
		errors.Is(err, packets.ErrorRefusedBadProtocolVersion):
		return ErrBadRequest
	default:
		return ErrTransient
	}
}

// isRemoteTLSAlert reports a TLS alert sent by the server, which crypto/tls
// surfaces as *net.OpError{Op: "remote error"}; with TLS 1.3 a rejected
// client certificate shows up this way on the first read after the handshake.
func isRemoteTLSAlert(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "remote error"
}
