package retry

import (
	"errors"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

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
