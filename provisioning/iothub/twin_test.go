package iothub

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"strings"
	"testing"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

func versions(ds []Desired) string {
	var parts []string
	for _, d := range ds {
		if d.Full {
			parts = append(parts, fmt.Sprintf("full%d", d.Version))
		} else {
			parts = append(parts, fmt.Sprint(d.Version))
		}
	}
	return strings.Join(parts, ",")
}

func TestDesiredSeq(t *testing.T) {
	t.Parallel()
	// Each step is "g<v>" (twin GET result), "p<v>" (patch) or "r" (reconnect).
	tests := []struct {
		name       string
		steps      []string
		want       string // delivered, in order
		wantResync bool   // after the last step
		wantHeld   []int64
	}{
		{"get then patches", []string{"g12", "p13", "p14"}, "full12,13,14", false, nil},
		{"patch before get is held", []string{"p13", "g12"}, "full12,13", false, nil},
		{"patch included in get is dropped", []string{"p12", "g12"}, "full12", false, nil},
		{"stale patch dropped", []string{"g12", "p12", "p11", "p13", "p13"}, "full12,13", false, nil},
		{"out of order then filled", []string{"g12", "p14", "p13"}, "full12,13,14", false, nil},
		{"gap requests resync", []string{"g12", "p14"}, "full12", true, []int64{14}},
		{"resync closes gap", []string{"g12", "p14", "g14"}, "full12,full14", false, nil},
		{"resync newer than held", []string{"g12", "p14", "p16", "g15"}, "full12,full15,16", false, nil},
		{"reconnect same version not redelivered", []string{"g12", "p13", "r", "g13"}, "full12,13", false, nil},
		{"reconnect newer version delivered", []string{"g12", "r", "g20", "p21"}, "full12,full20,21", false, nil},
		{"reconnect holds until get", []string{"g12", "r", "p14", "p13"}, "full12", false, []int64{13, 14}},
		{"reconnect held then get", []string{"g12", "r", "p14", "p13", "g13"}, "full12,full13,14", false, nil},
		{"older get after newer patches ignored", []string{"g12", "p13", "p14", "r", "g13"}, "full12,13,14", false, nil},
		{"first get always delivered", []string{"g0"}, "full0", false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var q desiredSeq
			var got []Desired
			var resync bool
			for _, s := range tt.steps {
				var v int64
				fmt.Sscanf(s[1:], "%d", &v)
				var out []Desired
				switch s[0] {
				case 'g':
					out, resync = q.full(v, json.RawMessage(fmt.Sprintf(`{"$version":%d}`, v)))
				case 'p':
					out, resync = q.patch(v, json.RawMessage(fmt.Sprintf(`{"k":%d,"$version":%d}`, v, v)))
				case 'r':
					q.reset()
					out, resync = nil, false
				}
				got = append(got, out...)
			}
			if versions(got) != tt.want || resync != tt.wantResync {
				t.Errorf("steps %v delivered %q resync=%v; want %q resync=%v", tt.steps, versions(got), resync, tt.want, tt.wantResync)
			}
			if held := q.pendingVersions(); !reflect.DeepEqual(held, tt.wantHeld) && !(len(held) == 0 && tt.wantHeld == nil) {
				t.Errorf("steps %v held %v; want %v", tt.steps, held, tt.wantHeld)
			}
			for _, d := range got {
				if !d.Full && string(d.Props) != fmt.Sprintf(`{"k":%d,"$version":%d}`, d.Version, d.Version) {
					t.Errorf("patch %d carries %s", d.Version, d.Props)
				}
			}
		})
	}
}

func TestProperties(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{`{"telemetryDelay":3,"$version":4,"$metadata":{"x":1}}`, `{"telemetryDelay":3}`},
		{`{"$version":1}`, `{}`},
		{`{"a":null,"$version":2}`, `{"a":null}`},
		{`null`, `null`},
		{`[1]`, `[1]`},
	}
	for _, tt := range tests {
		if got := string(properties(json.RawMessage(tt.in))); got != tt.want {
			t.Errorf("properties(%s) = %s; want %s", tt.in, got, tt.want)
		}
	}
}

func TestParseTwin(t *testing.T) {
	t.Parallel()
	body := `{"desired":{"telemetrySendFrequency":"5m","$version":12},"reported":{"batteryLevel":55,"$version":123}}`
	tw, err := parseTwin([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if tw.DesiredVersion != 12 || tw.ReportedVersion != 123 || !strings.Contains(string(tw.Desired), "5m") || !strings.Contains(string(tw.Reported), "55") {
		t.Errorf("parseTwin = %+v", tw)
	}
	if tw, err := parseTwin([]byte(`{"desired":{"$version":1}}`)); err != nil || tw.ReportedVersion != 0 {
		t.Errorf("parseTwin(no reported) = %+v, %v", tw, err)
	}
	for _, bad := range []string{``, `[]`, `{"reported":{"$version":1}}`, `{"desired":{"a":1}}`, `{"desired":{"$version":"x"}}`, `{"desired":{"$version":1},"reported":{"a":1}}`} {
		if _, err := parseTwin([]byte(bad)); err == nil {
			t.Errorf("parseTwin(%s) = nil error", bad)
		}
	}
}

func TestReportedPatch(t *testing.T) {
	t.Parallel()
	big := map[string]string{"blob": strings.Repeat("x", MaxReportedSize)}
	tests := []struct {
		name    string
		patch   any
		want    string
		wantErr error
	}{
		{"struct", struct {
			TelemetryDelay int `json:"telemetryDelay"`
		}{3}, `{"telemetryDelay":3}`, nil},
		{"raw", json.RawMessage(`{"a":null}`), `{"a":null}`, nil},
		{"bytes", []byte(`{"a":{"b":1}}`), `{"a":{"b":1}}`, nil},
		{"array", []int{1}, "", ErrBadRequest},
		{"null", json.RawMessage(`null`), "", ErrBadRequest},
		{"not json", []byte(`{`), "", ErrBadRequest},
		{"dollar key", map[string]int{"$version": 1}, "", ErrBadRequest},
		{"dot key", map[string]int{"a.b": 1}, "", ErrBadRequest},
		{"space key", map[string]int{"a b": 1}, "", ErrBadRequest},
		{"too large", big, "", ErrTooLarge},
	}
	for _, tt := range tests {
		got, err := reportedPatch(tt.patch)
		if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && (err != nil || string(got) != tt.want)) {
			t.Errorf("reportedPatch(%s) = %s, %v; want %s, %v", tt.name, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestStatusError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status int
		want   error
	}{
		{400, ErrBadRequest}, {413, ErrTooLarge}, {429, ErrThrottled}, {500, ErrServer}, {503, ErrServer}, {404, nil},
	}
	for _, tt := range tests {
		err := statusError("twin get", twinResponse{Status: tt.status, Body: []byte(`{"message":"m"}`)})
		var se *StatusError
		if !errors.As(err, &se) || se.Status != tt.status || (tt.want != nil && !errors.Is(err, tt.want)) {
			t.Errorf("statusError(%d) = %v; want %v", tt.status, err, tt.want)
		}
		if !strings.Contains(err.Error(), fmt.Sprint(tt.status)) {
			t.Errorf("statusError(%d).Error() = %q lacks the status", tt.status, err)
		}
	}
}

func TestClassifyConnect(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want error
	}{
		{packets.ErrorRefusedNotAuthorised, ErrNotAuthorized},
		{packets.ErrorRefusedBadUsernameOrPassword, ErrNotAuthorized},
		{fmt.Errorf("%w : %w", packets.ErrorNetworkError, &net.OpError{Op: "remote error", Err: errors.New("tls: certificate required")}), ErrNotAuthorized},
		{packets.ErrorRefusedServerUnavailable, nil},
		{fmt.Errorf("%w : %w", packets.ErrorNetworkError, io.EOF), nil},
	}
	for _, tt := range tests {
		if got := classifyConnect(tt.err); got != tt.want {
			t.Errorf("classifyConnect(%v) = %v; want %v", tt.err, got, tt.want)
		}
	}
}
