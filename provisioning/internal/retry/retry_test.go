package retry

import (
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

func TestBackoff(t *testing.T) {
	t.Parallel()
	base, capd := 2*time.Second, time.Minute
	tests := []struct {
		attempt int
		floor   time.Duration
		rnd     float64
		want    time.Duration
	}{
		{0, 0, 0.5, time.Second},
		{1, 0, 0.5, 2 * time.Second},
		{2, 0, 0.5, 4 * time.Second},
		{3, 0, 1 - 1e-9, 16*time.Second - 16},
		{4, 0, 0.999, time.Duration(0.999 * float64(32*time.Second))},
		{5, 0, 0.5, 30 * time.Second},  // 64 s capped to 60 s
		{50, 0, 0.5, 30 * time.Second}, // no overflow on huge attempts
		{1000, 0, 0.5, 30 * time.Second},
		{3, 0, 0, 0}, // full jitter may pick zero
		// With a retry-after floor the jitter goes on top, over a window of
		// at least the floor, so a throttled fleet does not return at once.
		{3, 7 * time.Second, 0, 7 * time.Second},
		{3, 7 * time.Second, 0.5, 7*time.Second + 8*time.Second},         // window: the 16 s ceiling
		{0, 7 * time.Second, 0.5, 7*time.Second + 3500*time.Millisecond}, // window: the 7 s floor
		{0, 5 * time.Minute, 0.5, 7*time.Minute + 30*time.Second},        // the floor may exceed max
	}
	for _, tt := range tests {
		if got := Backoff(tt.attempt, base, capd, tt.floor, tt.rnd); got != tt.want {
			t.Errorf("Backoff(%d, floor %s, rnd %v) = %s; want %s", tt.attempt, tt.floor, tt.rnd, got, tt.want)
		}
	}
}

// The back-off must stay inside [0, ceiling) for any sample, or a fleet
// would not spread out.
func TestBackoffBounds(t *testing.T) {
	t.Parallel()
	for attempt := range 12 {
		ceil := min(time.Second<<attempt, time.Minute)
		for _, rnd := range []float64{0, 0.25, 0.5, 0.75, 1 - 1e-12} {
			if got := Backoff(attempt, time.Second, time.Minute, 0, rnd); got < 0 || got >= ceil {
				t.Errorf("Backoff(%d, rnd %v) = %s; want in [0, %s)", attempt, rnd, got, ceil)
			}
		}
	}
}

func TestClassifyConnect(t *testing.T) {
	t.Parallel()
	tlsAlert := fmt.Errorf("%w : %w", packets.ErrorNetworkError, &net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")})
	tests := []struct {
		name string
		err  error
		want ConnectOutcome
	}{
		{"connack 5", packets.ErrorRefusedNotAuthorised, Refused},
		{"connack 4", packets.ErrorRefusedBadUsernameOrPassword, Refused},
		{"wrapped connack 5", fmt.Errorf("connect: %w", packets.ErrorRefusedNotAuthorised), Refused},
		{"tls alert", tlsAlert, Refused},
		{"connack 2", packets.ErrorRefusedIDRejected, Rejected},
		{"connack 1", packets.ErrorRefusedBadProtocolVersion, Rejected},
		{"connack 3", packets.ErrorRefusedServerUnavailable, Transient},
		{"dial refused", fmt.Errorf("%w : %w", packets.ErrorNetworkError, &net.OpError{Op: "dial", Err: errors.New("connection refused")}), Transient},
		{"eof", fmt.Errorf("%w : %w", packets.ErrorNetworkError, io.EOF), Transient},
		{"other", errors.New("boom"), Transient},
		{"nil", nil, Transient},
	}
	for _, tt := range tests {
		if got := ClassifyConnect(tt.err); got != tt.want {
			t.Errorf("ClassifyConnect(%s: %v) = %v; want %v", tt.name, tt.err, got, tt.want)
		}
	}
}

func TestConnectOutcomeString(t *testing.T) {
	t.Parallel()
	for o, want := range map[ConnectOutcome]string{Transient: "transient", Refused: "refused", Rejected: "rejected", 9: "outcome(?)"} {
		if got := o.String(); got != want {
			t.Errorf("ConnectOutcome(%d).String() = %q; want %q", int(o), got, want)
		}
	}
}
