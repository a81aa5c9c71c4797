package dps

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/reefer/tracker/internal/faketime"
)

const (
	testScope = "0ne00ABCDEF"
	testRID   = "sensor-thl-001"
)

func resTopic(status int, rid string, extra string) string {
	return fmt.Sprintf("$dps/registrations/res/%d/?$rid=%s%s", status, rid, extra)
}

// newTestConfig returns a config wired to f, with recorded sleeps and a fixed jitter.
func newTestConfig(f *fakeDPS, s *faketime.Sleeps) Config {
	return Config{
		Endpoint:        "127.0.0.1:40001",
		IDScope:         testScope,
		RegistrationID:  testRID,
		TLS:             &tls.Config{},
		MaxWait:         10 * time.Second,
		ResponseTimeout: 5 * time.Second,
		Sleep:           s.Sleep,
		Rand:            func() float64 { return 0.5 },
		NewClient:       f.newClient,
	}
}

func TestRegisterAssignedAfterPolling(t *testing.T) {
	t.Parallel()
	f := &fakeDPS{respond: func(n int, topic string, _ []byte) reply {
		switch n {
		case 0:
			return reply{msgs: []fakeMsg{
				{resTopic(202, "999", ""), []byte(`{"operationId":"stray","status":"assigning"}`)}, // another request: ignored
				{resTopic(202, "1", "&retry-after=3"), []byte(body202)},
			}}
		case 1:
			return reply{msgs: []fakeMsg{{resTopic(202, "2", ""), []byte(body202)}}}
		default:
			return reply{msgs: []fakeMsg{{resTopic(200, fmt.Sprint(n+1), ""), []byte(body200)}}}
		}
	}}
	s := &faketime.Sleeps{}
	res, err := Register(context.Background(), newTestConfig(f, s))
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	if res.AssignedHub != "contoso.azure-devices.net" || res.DeviceID != "dev-0001" || res.Substatus != "initialAssignment" {
		t.Errorf("Register = %+v", res)
	}

	// Connection options (docs/protocol.md A.1).
	o := f.opts[0]
	if got := o.Servers[0].String(); got != "tls://127.0.0.1:40001" {
		t.Errorf("broker = %q; want tls://127.0.0.1:40001", got)
	}
	if o.ClientID != testRID || o.Username != testScope+"/registrations/"+testRID+"/api-version=2019-03-31" || o.Password != "" {
		t.Errorf("client id/user/password = %q/%q/%q", o.ClientID, o.Username, o.Password)
	}
	if !o.CleanSession || o.AutoReconnect || o.ProtocolVersion != 4 || o.Order {
		t.Errorf("clean=%v autoreconnect=%v protocol=%d order=%v; want true false 4 false", o.CleanSession, o.AutoReconnect, o.ProtocolVersion, o.Order)
	}
	if o.TLSConfig.ServerName != "127.0.0.1" {
		t.Errorf("ServerName = %q; want endpoint host", o.TLSConfig.ServerName)
	}

	// Exchange: subscribe first, register, two polls with the operation id.
	var got []string
	for _, e := range f.snapshot() {
		got = append(got, e.kind+" "+e.topic+" "+string(e.payload))
	}
	op := "4.d0a671905ea5b2c8.e7173b7b-0e54-4aa0-9d20-aeb1b89e6c7d"
	want := []string{
		"connect  ",
		"subscribe $dps/registrations/res/# ",
		`publish $dps/registrations/PUT/iotdps-register/?$rid=1 {"registrationId":"sensor-thl-001"}`,
		"publish $dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=" + op + " ",
		"publish $dps/registrations/GET/iotdps-get-operationstatus/?$rid=3&operationId=" + op + " ",
		"disconnect  ",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("exchange:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// retry-after 3 honoured, then the 2 s floor when none is given.
	if got, want := s.Got(), []time.Duration{3 * time.Second, 2 * time.Second}; !reflect.DeepEqual(got, want) {
		t.Errorf("sleeps = %v; want %v", got, want)
	}
}

func TestRegisterPollInterval(t *testing.T) {
	t.Parallel()
	tests := []struct {
		retryAfter string
		want       time.Duration
	}{
		{"", 2 * time.Second},
		{"&retry-after=0", 2 * time.Second},
		{"&retry-after=1", 2 * time.Second},
		{"&retry-after=5", 5 * time.Second},
		{"&retry-after=100000", 300 * time.Second},
	}
	for _, tt := range tests {
		f := &fakeDPS{respond: func(n int, _ string, _ []byte) reply {
			if n == 0 {
				return reply{msgs: []fakeMsg{{resTopic(202, "1", tt.retryAfter), []byte(body202)}}}
			}
			return reply{msgs: []fakeMsg{{resTopic(200, "2", ""), []byte(body200)}}}
		}}
		s := &faketime.Sleeps{}
		if _, err := Register(context.Background(), newTestConfig(f, s)); err != nil {
			t.Fatalf("Register(retry-after %q): %v", tt.retryAfter, err)
		}
		if got := s.Got(); len(got) != 1 || got[0] != tt.want {
			t.Errorf("Register(retry-after %q) slept %v; want [%s]", tt.retryAfter, got, tt.want)
		}
	}
}

func TestRegisterTerminalErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status int
		body   string
		want   error
	}{
		{"disabled", 200, bodyDisabled, ErrDisabled},
		{"failed", 200, bodyFailed, ErrFailed},
		{"unauthorized", 401, body401, ErrUnauthorized},
		{"bad request", 400, `{"errorCode":400004,"message":"Invalid request body"}`, ErrBadRequest},
		{"not found on register", 404, ``, ErrNotFound},
		{"malformed", 200, `{"status":"assigned","registrationState":{"assignedHub":"h"}}`, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeDPS{respond: func(int, string, []byte) reply {
				return reply{msgs: []fakeMsg{{resTopic(tt.status, "1", ""), []byte(tt.body)}}}
			}}
			s := &faketime.Sleeps{}
			_, err := Register(context.Background(), newTestConfig(f, s))
			if !errors.Is(err, tt.want) {
				t.Fatalf("Register = %v; want %v", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "dps register sensor-thl-001: ") {
				t.Errorf("error %q lacks context", err)
			}
			if f.sessions != 1 || len(s.Got()) != 0 {
				t.Errorf("sessions=%d sleeps=%v; want one session, no retry", f.sessions, s.Got())
			}
		})
	}
}

func TestRegisterConnackNotAuthorized(t *testing.T) {
	t.Parallel()
	f := &fakeDPS{connectErr: func(int) error { return packets.ErrorRefusedNotAuthorised }}
	s := &faketime.Sleeps{}
	_, err := Register(context.Background(), newTestConfig(f, s))
	if !errors.Is(err, ErrUnauthorized) || !errors.Is(err, packets.ErrorRefusedNotAuthorised) {
		t.Fatalf("Register = %v; want ErrUnauthorized wrapping the CONNACK error", err)
	}
	if f.sessions != 1 {
		t.Errorf("sessions = %d; want 1 (no retry)", f.sessions)
	}
}

func TestRegisterRetriesThrottleWithRetryAfterFloor(t *testing.T) {
	t.Parallel()
	f := &fakeDPS{respond: func(n int, _ string, _ []byte) reply {
		if n == 0 {
			return reply{msgs: []fakeMsg{{resTopic(429, "1", "&retry-after=7"), []byte(`{"errorCode":429001,"message":"throttled"}`)}}}
		}
		return reply{msgs: []fakeMsg{{resTopic(200, "1", ""), []byte(body200)}}}
	}}
	s := &faketime.Sleeps{}
	if _, err := Register(context.Background(), newTestConfig(f, s)); err != nil {
		t.Fatalf("Register: %v", err)
	}
	// retry-after 7 s is the floor; jitter 0.5 of a 7 s window goes on top
	// (the window is at least the floor, here larger than the 2 s base).
	if got, want := s.Got(), []time.Duration{7*time.Second + 3500*time.Millisecond}; !reflect.DeepEqual(got, want) {
		t.Errorf("sleeps = %v; want %v", got, want)
	}
	if f.sessions != 2 {
		t.Errorf("sessions = %d; want 2", f.sessions)
	}
}

// When MaxWait runs out during the back-off after a 429, the error must
// still say "throttled" and carry the retry-after: the caller's next
// attempt is what honours it (docs/protocol.md A.4). A plain transient timeout would
// let lifecycle retry after a short jitter and hammer a throttled DPS.
func TestRegisterMaxWaitDuringThrottleBackoffKeepsRetryAfter(t *testing.T) {
	t.Parallel()
	f := &fakeDPS{respond: func(int, string, []byte) reply {
		return reply{msgs: []fakeMsg{{resTopic(429, "1", "&retry-after=120"), []byte(`{"errorCode":429001,"message":"throttled"}`)}}}
	}}
	cfg := newTestConfig(f, &faketime.Sleeps{})
	cfg.MaxWait = 50 * time.Millisecond
	cfg.Sleep = func(ctx context.Context, _ time.Duration) error { <-ctx.Done(); return ctx.Err() }
	_, err := Register(context.Background(), cfg)
	var de *Error
	if !errors.Is(err, ErrThrottled) || !errors.As(err, &de) || de.RetryAfter != 120*time.Second {
		t.Fatalf("Register = %v; want ErrThrottled with RetryAfter 2m0s", err)
	}
	if !errors.Is(err, errMaxWait) {
		t.Errorf("Register = %v; want it to wrap errMaxWait too", err)
	}
}

func TestRegisterGivesUpAfterMaxAttempts(t *testing.T) {
	t.Parallel()
	f := &fakeDPS{respond: func(int, string, []byte) reply {
		return reply{msgs: []fakeMsg{{resTopic(503, "1", ""), nil}}}
	}}
	s := &faketime.Sleeps{}
	cfg := newTestConfig(f, s)
	cfg.MaxAttempts = 4
	cfg.BackoffBase, cfg.BackoffMax = time.Second, 3*time.Second
	jitter := []float64{0.5, 0.25, 0.9}
	cfg.Rand = func() float64 { v := jitter[0]; jitter = jitter[1:]; return v }
	_, err := Register(context.Background(), cfg)
	var de *Error
	if !errors.Is(err, ErrTransient) || !errors.As(err, &de) || de.Status != 503 {
		t.Fatalf("Register = %v; want ErrTransient with status 503", err)
	}
	if f.sessions != 4 {
		t.Errorf("sessions = %d; want 4", f.sessions)
	}
	// Full jitter over 1 s, 2 s, then 4 s capped to 3 s.
	want := []time.Duration{500 * time.Millisecond, 500 * time.Millisecond, 2700 * time.Millisecond}
	if got := s.Got(); !reflect.DeepEqual(got, want) {
		t.Errorf("sleeps = %v; want %v", got, want)
	}
}

func TestRegisterRetriesNetworkAndLostConnection(t *testing.T) {
	t.Parallel()
	f := &fakeDPS{
		connectErr: func(session int) error {
			if session == 1 {
				return fmt.Errorf("%w : dial tcp: connection refused", packets.ErrorNetworkError)
			}
			return nil
		},
		respond: func(n int, _ string, _ []byte) reply {
			if n == 0 {
				return reply{lose: io.EOF} // session 2 drops before answering
			}
			return reply{msgs: []fakeMsg{{resTopic(200, "1", ""), []byte(body200)}}}
		},
	}
	s := &faketime.Sleeps{}
	if _, err := Register(context.Background(), newTestConfig(f, s)); err != nil {
		t.Fatalf("Register: %v", err)
	}
	if f.sessions != 3 || len(s.Got()) != 2 {
		t.Errorf("sessions=%d sleeps=%v; want 3 sessions and 2 back-offs", f.sessions, s.Got())
	}
}

func TestRegisterPollThrottledPollsSameOperation(t *testing.T) {
	t.Parallel()
	op := "4.d0a671905ea5b2c8.e7173b7b-0e54-4aa0-9d20-aeb1b89e6c7d"
	f := &fakeDPS{respond: func(n int, topic string, _ []byte) reply {
		switch n {
		case 0:
			return reply{msgs: []fakeMsg{{resTopic(202, "1", "&retry-after=3"), []byte(body202)}}}
		case 1:
			return reply{msgs: []fakeMsg{{resTopic(429, "2", "&retry-after=1"), []byte(`{"errorCode":429002,"message":"too many polls"}`)}}}
		case 2:
			return reply{msgs: []fakeMsg{{resTopic(429, "3", "&retry-after=9"), []byte(`{"errorCode":429002,"message":"too many polls"}`)}}}
		default:
			return reply{msgs: []fakeMsg{{resTopic(200, "4", ""), []byte(body200)}}}
		}
	}}
	s := &faketime.Sleeps{}
	if _, err := Register(context.Background(), newTestConfig(f, s)); err != nil {
		t.Fatalf("Register: %v", err)
	}
	if f.sessions != 1 {
		t.Errorf("sessions = %d; want 1 (a throttled poll must not re-register)", f.sessions)
	}
	var registers, polls int
	for _, e := range f.snapshot() {
		switch {
		case strings.Contains(e.topic, "iotdps-register"):
			registers++
		case strings.Contains(e.topic, "operationId="+op):
			polls++
		}
	}
	if registers != 1 || polls != 3 {
		t.Errorf("registers, polls = %d, %d; want 1, 3", registers, polls)
	}
	// retry-after 3; then a growing floor (4 s, 8 s) unless retry-after is longer (9 s).
	if got, want := s.Got(), []time.Duration{3 * time.Second, 4 * time.Second, 9 * time.Second}; !reflect.DeepEqual(got, want) {
		t.Errorf("sleeps = %v; want %v", got, want)
	}
}

func TestRegisterReRegistersWhenOperationForgotten(t *testing.T) {
	t.Parallel()
	f := &fakeDPS{respond: func(n int, topic string, _ []byte) reply {
		switch n {
		case 0:
			return reply{msgs: []fakeMsg{{resTopic(202, "1", "&retry-after=3"), []byte(body202)}}}
		case 1:
			return reply{msgs: []fakeMsg{{resTopic(404, "2", ""), []byte(`{"errorCode":404002,"message":"operation not found"}`)}}}
		default:
			if !strings.Contains(topic, "iotdps-register") {
				return reply{}
			}
			return reply{msgs: []fakeMsg{{resTopic(200, "1", ""), []byte(body200)}}}
		}
	}}
	s := &faketime.Sleeps{}
	if _, err := Register(context.Background(), newTestConfig(f, s)); err != nil {
		t.Fatalf("Register: %v", err)
	}
	if f.sessions != 2 {
		t.Errorf("sessions = %d; want 2 (re-register after 404 on poll)", f.sessions)
	}
}

func TestRegisterResponseTimeout(t *testing.T) {
	t.Parallel()
	f := &fakeDPS{} // never answers
	s := &faketime.Sleeps{}
	cfg := newTestConfig(f, s)
	cfg.ResponseTimeout = 20 * time.Millisecond
	cfg.MaxAttempts = 2
	_, err := Register(context.Background(), cfg)
	if !errors.Is(err, ErrTransient) || !strings.Contains(err.Error(), "no response within") {
		t.Fatalf("Register = %v; want ErrTransient timeout", err)
	}
	if f.sessions != 2 {
		t.Errorf("sessions = %d; want 2", f.sessions)
	}
}

func TestRegisterMaxWait(t *testing.T) {
	t.Parallel()
	f := &fakeDPS{}
	cfg := newTestConfig(f, &faketime.Sleeps{})
	cfg.MaxWait = 30 * time.Millisecond
	cfg.ResponseTimeout = time.Minute
	start := time.Now()
	_, err := Register(context.Background(), cfg)
	if !errors.Is(err, ErrTransient) || !errors.Is(err, errMaxWait) {
		t.Fatalf("Register = %v; want ErrTransient caused by MaxWait", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Register took %s; MaxWait not honoured", d)
	}
}

func TestRegisterCancelled(t *testing.T) {
	t.Parallel()
	f := &fakeDPS{}
	cfg := newTestConfig(f, &faketime.Sleeps{})
	cfg.ResponseTimeout = time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	_, err := Register(ctx, cfg)
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrTransient) {
		t.Fatalf("Register = %v; want context.Canceled only", err)
	}
}

// A CONNECT abandoned half-way must still be torn down: paho finishes the
// handshake in the background and would otherwise leave a live connection
// (and its goroutines) behind.
func TestRegisterCancelledDuringConnectDisconnects(t *testing.T) {
	t.Parallel()
	f := &fakeDPS{connectTok: func(int) mqtt.Token { return &pendingToken{ch: make(chan struct{})} }}
	cfg := newTestConfig(f, &faketime.Sleeps{})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	if _, err := Register(ctx, cfg); !errors.Is(err, context.Canceled) {
		t.Fatalf("Register = %v; want context.Canceled", err)
	}
	var kinds []string
	for _, e := range f.snapshot() {
		kinds = append(kinds, e.kind)
	}
	if want := []string{"connect", "disconnect"}; !reflect.DeepEqual(kinds, want) {
		t.Errorf("events = %v; want %v", kinds, want)
	}
}

func TestRegisterConfigErrors(t *testing.T) {
	t.Parallel()
	base := newTestConfig(&fakeDPS{}, &faketime.Sleeps{})
	tests := []struct {
		name string
		mod  func(*Config)
	}{
		{"no scope", func(c *Config) { c.IDScope = "" }},
		{"bad rid", func(c *Config) { c.RegistrationID = "a/b" }},
		{"no tls", func(c *Config) { c.TLS = nil }},
		{"bad payload", func(c *Config) { c.Payload = []byte("{") }},
		{"bad endpoint", func(c *Config) { c.Endpoint = ":1" }},
	}
	for _, tt := range tests {
		cfg := base
		tt.mod(&cfg)
		if _, err := Register(context.Background(), cfg); err == nil {
			t.Errorf("Register(%s) = nil error", tt.name)
		}
	}
}

func TestRegisterSendsPayload(t *testing.T) {
	t.Parallel()
	f := &fakeDPS{respond: func(int, string, []byte) reply {
		return reply{msgs: []fakeMsg{{resTopic(200, "1", ""), []byte(body200)}}}
	}}
	cfg := newTestConfig(f, &faketime.Sleeps{})
	cfg.Payload = []byte(`{"modelId":"dtmi:reefer:tracker;1"}`)
	cfg.Endpoint = ""
	cfg.TLS = &tls.Config{ServerName: "override.example"}
	if _, err := Register(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	for _, e := range f.snapshot() {
		if e.kind == "publish" {
			if want := `{"registrationId":"sensor-thl-001","payload":{"modelId":"dtmi:reefer:tracker;1"}}`; string(e.payload) != want {
				t.Errorf("register body = %s; want %s", e.payload, want)
			}
		}
	}
	if got := f.opts[0].Servers[0].String(); got != "tls://global.azure-devices-provisioning.net:8883" {
		t.Errorf("default broker = %q", got)
	}
	if got := f.opts[0].TLSConfig.ServerName; got != "override.example" {
		t.Errorf("ServerName = %q; want the caller's override", got)
	}
	if cfg.TLS.ServerName != "override.example" {
		t.Error("caller's tls.Config was modified")
	}
}

// A registration with a CSR (docs/protocol.md A.5): the api-version of
// the user name is raised, the body carries the CSR as base64 DER, and the
// chain of the final answer comes back decoded, leaf first.
func TestRegisterWithCSR(t *testing.T) {
	t.Parallel()
	leaf, ca := []byte("leaf DER"), []byte("issuing CA DER")
	assigned := `{"operationId":"4.x.y","status":"assigned","registrationState":{"registrationId":"sensor-thl-001",` +
		`"assignedHub":"contoso.azure-devices.net","deviceId":"sensor-thl-001","status":"assigned","substatus":"initialAssignment",` +
		`"issuedCertificateChain":["` + base64.StdEncoding.EncodeToString(leaf) + `","` + base64.StdEncoding.EncodeToString(ca) + `"]}}`
	f := &fakeDPS{respond: func(n int, _ string, _ []byte) reply {
		if n == 0 {
			return reply{msgs: []fakeMsg{{resTopic(202, "1", ""), []byte(body202)}}}
		}
		return reply{msgs: []fakeMsg{{resTopic(200, "2", ""), []byte(assigned)}}}
	}}
	cfg := newTestConfig(f, &faketime.Sleeps{})
	cfg.CSR = []byte{0x30, 0x01, 0x02}
	res, err := Register(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.IssuedCertificateChain) != 2 || string(res.IssuedCertificateChain[0]) != "leaf DER" || string(res.IssuedCertificateChain[1]) != "issuing CA DER" {
		t.Errorf("IssuedCertificateChain = %q", res.IssuedCertificateChain)
	}
	if got, want := f.opts[0].Username, "0ne00ABCDEF/registrations/sensor-thl-001/api-version=2025-07-01-preview"; got != want {
		t.Errorf("user name %q; want %q", got, want)
	}
	pubs := 0
	for _, e := range f.snapshot() {
		if e.kind != "publish" {
			continue
		}
		pubs++
		if pubs == 1 && !strings.Contains(string(e.payload), `"csr":"MAEC"`) {
			t.Errorf("register body = %s; want the csr as base64", e.payload)
		}
		if pubs == 2 && len(e.payload) != 0 {
			t.Errorf("poll body = %s; want none", e.payload)
		}
	}

	// Without a CSR: the old api-version, no csr member.
	f2 := &fakeDPS{respond: func(int, string, []byte) reply {
		return reply{msgs: []fakeMsg{{resTopic(200, "1", ""), []byte(assigned)}}}
	}}
	if _, err := Register(context.Background(), newTestConfig(f2, &faketime.Sleeps{})); err != nil {
		t.Fatal(err)
	}
	if got := f2.opts[0].Username; !strings.HasSuffix(got, "api-version=2019-03-31") {
		t.Errorf("user name without a csr %q", got)
	}
	for _, e := range f2.snapshot() {
		if e.kind == "publish" && strings.Contains(string(e.payload), "csr") {
			t.Errorf("register body without a csr = %s", e.payload)
		}
	}
}

// A CSR answered with an assignment but no chain (or a broken one) is a
// malformed answer: the hub would refuse the onboarding certificate.
func TestRegisterWithCSRNeedsTheChain(t *testing.T) {
	t.Parallel()
	for name, body := range map[string]string{
		"no chain":   body200,
		"not base64": strings.Replace(body200, `"payload": { }`, `"payload": { }, "issuedCertificateChain": ["***"]`, 1),
	} {
		f := &fakeDPS{respond: func(int, string, []byte) reply {
			return reply{msgs: []fakeMsg{{resTopic(200, "1", ""), []byte(body)}}}
		}}
		cfg := newTestConfig(f, &faketime.Sleeps{})
		cfg.CSR = []byte{0x30}
		cfg.MaxAttempts = 1
		if _, err := Register(context.Background(), cfg); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v; want ErrMalformed", name, err)
		}
	}
}
