package emulator

import (
	"errors"
	"sync"
	"time"
)

// errThrottled is the stop cause of a connection closed for D2C traffic
// over the hub's limit (docs/protocol.md F: 429001; docs/protocol.md B.2, B.7: over MQTT the hub
// closes the connection where AMQP would return the error).
var errThrottled = errors.New("429001 ThrottlingException: device-to-cloud send rate exceeded")

// tokenBucket is a rate limit on the emulator's clock: rate tokens per
// second, holding at most burst.
type tokenBucket struct {
	rate, burst float64
	tokens      float64
	last        time.Time
}

// take spends one token if there is one at now.
func (b *tokenBucket) take(now time.Time) bool {
	if b.last.IsZero() {
		b.tokens = b.burst
	} else if dt := now.Sub(b.last).Seconds(); dt > 0 {
		// A clock stepping back refills nothing (and is not remembered).
		b.tokens = min(b.burst, b.tokens+dt*b.rate)
	}
	if now.After(b.last) {
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// d2cLimiter is the per-hub device-to-cloud throttle (docs/protocol.md F "D2C sends").
type d2cLimiter struct {
	rate float64 // messages per second; 0 = unlimited
	now  func() time.Time

	mu      sync.Mutex
	buckets map[string]*tokenBucket // hub host -> bucket
}

func newD2CLimiter(perSecond int, now func() time.Time) *d2cLimiter {
	return &d2cLimiter{rate: float64(perSecond), now: now, buckets: map[string]*tokenBucket{}}
}

// allow reports whether hub may accept one more D2C message now. The
// bucket holds one second of traffic: a burst up to the limit is absorbed
// (the emulator's stand-in for the hub's traffic shaping, which queues
// excess before rejecting it), and beyond that messages are refused.
func (l *d2cLimiter) allow(hub string) bool {
	if l == nil || l.rate <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[hub]
	if b == nil {
		b = &tokenBucket{rate: l.rate, burst: max(1, l.rate)}
		l.buckets[hub] = b
	}
	return b.take(l.now())
}
