package dps

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

func TestUsernameAndTopics(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, got, want string }{
		{"username", Username("0ne00ABCDEF", "sensor-thl-001"), "0ne00ABCDEF/registrations/sensor-thl-001/api-version=2019-03-31"},
		{"username with a csr", UsernameCSR("0ne00ABCDEF", "sensor-thl-001"), "0ne00ABCDEF/registrations/sensor-thl-001/api-version=2025-07-01-preview"},
		{"register", RegisterTopic("1"), "$dps/registrations/PUT/iotdps-register/?$rid=1"},
		{"poll", PollTopic("2", "4.d0a671905ea5b2c8.e7173b7b-0e54-4aa0-9d20-aeb1b89e6c7d"),
			"$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=4.d0a671905ea5b2c8.e7173b7b-0e54-4aa0-9d20-aeb1b89e6c7d"},
		{"poll escapes (a space is %20: \"+\" is a wildcard, not allowed in a topic name)", PollTopic("a b", "x&y=z"), "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=a%20b&operationId=x%26y%3Dz"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %q; want %q", tt.name, tt.got, tt.want)
		}
	}
}

func TestParseResponseTopic(t *testing.T) {
	t.Parallel()
	tests := []struct {
		topic   string
		want    response
		wantErr bool
	}{
		{"$dps/registrations/res/202/?$rid=1&retry-after=3", response{Status: 202, RID: "1", RetryAfter: 3 * time.Second}, false},
		{"$dps/registrations/res/200/?$rid=1", response{Status: 200, RID: "1"}, false},
		{"$dps/registrations/res/429/?retry-after=10&$rid=7", response{Status: 429, RID: "7", RetryAfter: 10 * time.Second}, false},
		{"$dps/registrations/res/401/?$rid=abc-def", response{Status: 401, RID: "abc-def"}, false},
		{"$dps/registrations/res/500/", response{Status: 500}, false},
		{"$dps/registrations/res/500/?$rid=1&retry-after=", response{Status: 500, RID: "1"}, false},
		{"$dps/registrations/res/abc/?$rid=1", response{}, true},
		{"$dps/registrations/res/200", response{}, true},
		{"$dps/registrations/res/20/?$rid=1", response{}, true},
		{"$dps/registrations/res/202/?$rid=1&retry-after=-1", response{}, true},
		{"$dps/registrations/res/202/?$rid=1&retry-after=soon", response{}, true},
		{"$iothub/twin/res/200/?$rid=1", response{}, true},
	}
	for _, tt := range tests {
		got, err := parseResponseTopic(tt.topic)
		if (err != nil) != tt.wantErr {
			t.Errorf("parseResponseTopic(%q) error = %v; want error %v", tt.topic, err, tt.wantErr)
			continue
		}
		if err == nil && fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("parseResponseTopic(%q) = %+v; want %+v", tt.topic, got, tt.want)
		}
	}
}

func TestRegisterBody(t *testing.T) {
	t.Parallel()
	tests := []struct {
		payload json.RawMessage
		csr     []byte
		want    string
	}{
		{nil, nil, `{"registrationId":"sensor-thl-001"}`},
		{json.RawMessage(`{"modelId":"dtmi:com:example:Thermostat;1"}`), nil, `{"registrationId":"sensor-thl-001","payload":{"modelId":"dtmi:com:example:Thermostat;1"}}`},
		// docs/protocol.md A.5: base64 of the DER, no PEM armour, no line breaks.
		{json.RawMessage(`{"modelId":"dtmi:reefer:tracker;1"}`), []byte{0x30, 0x82, 0x01, 0xff, 0xfe},
			`{"registrationId":"sensor-thl-001","csr":"MIIB//4=","payload":{"modelId":"dtmi:reefer:tracker;1"}}`},
	}
	for _, tt := range tests {
		got, err := registerBody("sensor-thl-001", tt.payload, tt.csr)
		if err != nil || string(got) != tt.want {
			t.Errorf("registerBody(%s) = %s, %v; want %s", tt.payload, got, err, tt.want)
		}
	}
}

// Bodies below are the docs/protocol.md A.4 examples.
const (
	body202          = `{"operationId":"4.d0a671905ea5b2c8.e7173b7b-0e54-4aa0-9d20-aeb1b89e6c7d","status":"assigning"}`
	body202WithState = `{"operationId":"4.a.b","status":"assigning","registrationState":{"registrationId":"dev-0001","status":"assigning"}}`
	body200          = `{ "operationId": "4.x.y", "status": "assigned",
  "registrationState": {
    "x509": { "enrollmentGroupId": "fleet-a",
              "certificateInfo": { "subjectName":"CN=dev-0001", "sha1Thumbprint":"AA", "sha256Thumbprint":"BB",
                                   "issuerName":"CN=ca", "notBeforeUtc":"2020-01-01T00:00:00Z", "notAfterUtc":"2030-01-01T00:00:00Z",
                                   "serialNumber":"01", "version":3 } },
    "registrationId": "dev-0001",
    "createdDateTimeUtc": "2020-04-10T03:11:13.0276997Z",
    "assignedHub": "contoso.azure-devices.net",
    "deviceId": "dev-0001",
    "status": "assigned",
    "substatus": "initialAssignment",
    "lastUpdatedDateTimeUtc": "2020-04-10T03:11:13.2096201Z",
    "etag": "IjYxMDA4ZDQ2LTAwMDAtMDEwMC0wMDAwLTVlOGZlM2QxMDAwMCI=",
    "payload": { } } }`
	bodyDisabled = `{"operationId":"4.x.y","status":"disabled","registrationState":{"registrationId":"dev-0001","status":"disabled"}}`
	bodyFailed   = `{"operationId":"4.x.y","status":"failed","registrationState":{"registrationId":"dev-0001","status":"failed","errorCode":400207,"errorMessage":"Custom allocation failed with status code: 400"}}`
	body401      = `{"errorCode":401002,"trackingId":"8ad0","message":"Invalid certificate.","timestampUtc":"2020-04-10T05:24:22.4718526Z","info":{}}`
)

func TestInterpretOperation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		status   int
		body     string
		wantDone bool
		wantOp   string
		wantHub  string
		wantErr  error
	}{
		{"202 assigning", 202, body202, false, "4.d0a671905ea5b2c8.e7173b7b-0e54-4aa0-9d20-aeb1b89e6c7d", "", nil},
		{"202 with state", 202, body202WithState, false, "4.a.b", "", nil},
		{"200 assigned", 200, body200, true, "", "contoso.azure-devices.net", nil},
		{"200 assigned with port", 200, `{"operationId":"o","status":"assigned","registrationState":{"assignedHub":"127.0.0.1:44321","deviceId":"d","status":"assigned"}}`, true, "", "127.0.0.1:44321", nil},
		{"status only in registrationState", 200, `{"operationId":"o","registrationState":{"assignedHub":"h","deviceId":"d","status":"assigned"}}`, true, "", "h", nil},
		{"200 still assigning", 200, body202, false, "4.d0a671905ea5b2c8.e7173b7b-0e54-4aa0-9d20-aeb1b89e6c7d", "", nil},
		{"disabled", 200, bodyDisabled, true, "", "", ErrDisabled},
		{"failed", 200, bodyFailed, true, "", "", ErrFailed},
		{"hub without device", 200, `{"operationId":"o","status":"assigned","registrationState":{"assignedHub":"h","status":"assigned"}}`, false, "", "", ErrMalformed},
		{"device without hub", 200, `{"operationId":"o","status":"assigning","registrationState":{"deviceId":"d"}}`, false, "", "", ErrMalformed},
		{"assigned without either", 200, `{"operationId":"o","status":"assigned"}`, false, "", "", ErrMalformed},
		{"assigning without operationId", 202, `{"status":"assigning"}`, false, "", "", ErrMalformed},
		{"no status", 200, `{"operationId":"o"}`, false, "", "", ErrMalformed},
		{"unknown status", 200, `{"operationId":"o","status":"exploded"}`, false, "", "", ErrMalformed},
		{"not json", 200, `<html>`, false, "", "", ErrMalformed},
		{"empty body", 202, ``, false, "", "", ErrMalformed},
		{"bad registrationState", 200, `{"operationId":"o","status":"assigned","registrationState":"x"}`, false, "", "", ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := interpretOperation("register", response{Status: tt.status, Body: []byte(tt.body)})
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("interpretOperation(%s) error = %v; want %v", tt.body, err, tt.wantErr)
			}
			if out.Done != tt.wantDone || out.OperationID != tt.wantOp {
				t.Errorf("interpretOperation(%s) = %+v; want done=%v op=%q", tt.body, out, tt.wantDone, tt.wantOp)
			}
			if tt.wantHub != "" && (out.Result == nil || out.Result.AssignedHub != tt.wantHub) {
				t.Errorf("interpretOperation(%s) result = %+v; want hub %q", tt.body, out.Result, tt.wantHub)
			}
		})
	}
}

func TestInterpretOperationDetails(t *testing.T) {
	t.Parallel()
	out, err := interpretOperation("poll", response{Status: 200, Body: []byte(body200)})
	if err != nil {
		t.Fatal(err)
	}
	r := out.Result
	if r.DeviceID != "dev-0001" || r.Status != "assigned" || r.Substatus != "initialAssignment" || r.OperationID != "4.x.y" {
		t.Errorf("result = %+v", r)
	}
	var rs map[string]any
	if err := json.Unmarshal(r.RegistrationState, &rs); err != nil || rs["etag"] == nil {
		t.Errorf("RegistrationState = %s (%v); want the raw object", r.RegistrationState, err)
	}

	_, err = interpretOperation("poll", response{Status: 200, Body: []byte(bodyFailed)})
	var de *Error
	if !errors.As(err, &de) || de.ErrorCode != 400207 || de.Message != "Custom allocation failed with status code: 400" || de.Op != "poll" {
		t.Errorf("failed error = %#v; want errorCode 400207 with message", err)
	}
}

func TestClassifyStatus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status int
		body   string
		want   error
		code   int
	}{
		{400, `{"errorCode":400004,"message":"bad"}`, ErrBadRequest, 400004},
		{401, body401, ErrUnauthorized, 401002},
		{403, ``, ErrUnauthorized, 0},
		{404, ``, ErrNotFound, 0},
		{409, ``, ErrBadRequest, 0},
		{412, ``, ErrBadRequest, 0},
		{415, ``, ErrBadRequest, 0},
		{429, `{"errorCode":429001}`, ErrThrottled, 429001},
		{500, `not json`, ErrTransient, 0},
		{503, ``, ErrTransient, 0},
		{204, ``, ErrMalformed, 0},
		{302, ``, ErrMalformed, 0},
	}
	for _, tt := range tests {
		err := classifyStatus("register", response{Status: tt.status, Body: []byte(tt.body), RetryAfter: time.Second})
		var de *Error
		if !errors.Is(err, tt.want) || !errors.As(err, &de) || de.ErrorCode != tt.code || de.Status != tt.status || de.RetryAfter != time.Second {
			t.Errorf("classifyStatus(%d, %s) = %#v; want %v with code %d", tt.status, tt.body, err, tt.want, tt.code)
		}
	}
	err := classifyStatus("register", response{Status: 401, Body: []byte(body401)})
	if got, want := err.Error(), "register: not authorized (status 401, errorCode 401002): Invalid certificate."; got != want {
		t.Errorf("Error() = %q; want %q", got, want)
	}
}

func TestRetriable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want bool
	}{
		{&Error{Kind: ErrThrottled}, true},
		{&Error{Kind: ErrTransient}, true},
		{&Error{Kind: ErrNotFound, Op: "poll"}, true},
		{&Error{Kind: ErrNotFound, Op: "register"}, false},
		{&Error{Kind: ErrUnauthorized}, false},
		{&Error{Kind: ErrDisabled}, false},
		{&Error{Kind: ErrFailed}, false},
		{&Error{Kind: ErrBadRequest}, false},
		{&Error{Kind: ErrMalformed}, false},
	}
	for _, tt := range tests {
		if got := retriable(tt.err); got != tt.want {
			t.Errorf("retriable(%v) = %v; want %v", tt.err, got, tt.want)
		}
	}
}

func TestClassifyConnect(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"connack 5", packets.ErrorRefusedNotAuthorised, ErrUnauthorized},
		{"connack 4", packets.ErrorRefusedBadUsernameOrPassword, ErrUnauthorized},
		{"connack 2", packets.ErrorRefusedIDRejected, ErrBadRequest},
		{"connack 3", packets.ErrorRefusedServerUnavailable, ErrTransient},
		{"tls alert", fmt.Errorf("%w : %w", packets.ErrorNetworkError, &net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")}), ErrUnauthorized},
		{"dial refused", fmt.Errorf("%w : %w", packets.ErrorNetworkError, &net.OpError{Op: "dial", Err: errors.New("connection refused")}), ErrTransient},
		{"other", errors.New("boom"), ErrTransient},
	}
	for _, tt := range tests {
		if got := classifyConnect(tt.err); got != tt.want {
			t.Errorf("classifyConnect(%s: %v) = %v; want %v", tt.name, tt.err, got, tt.want)
		}
	}
}

func TestValidRegistrationID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		id string
		ok bool
	}{
		{"sensor-thl-001", true},
		{"a.b_c:d-", true},
		{"Dev1", true},
		{"", false},
		{"dev/1", false},
		{"dev+1", false},
		{"dev#1", false},
		{"dev 1", false},
		{"dev.", false},
		{"dev_", false},
		{string(make([]byte, 129)), false},
	}
	for _, tt := range tests {
		if err := validRegistrationID(tt.id); (err == nil) != tt.ok {
			t.Errorf("validRegistrationID(%q) = %v; want ok=%v", tt.id, err, tt.ok)
		}
	}
}

func TestSplitEndpoint(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, host, port string
		wantErr        bool
	}{
		{"global.azure-devices-provisioning.net", "global.azure-devices-provisioning.net", "8883", false},
		{"global.azure-devices-provisioning.net:8883", "global.azure-devices-provisioning.net", "8883", false},
		{"127.0.0.1:40001", "127.0.0.1", "40001", false},
		{"[::1]:40001", "::1", "40001", false},
		{"", "", "", true},
		{":8883", "", "", true},
	}
	for _, tt := range tests {
		h, p, err := splitEndpoint(tt.in, "8883")
		if (err != nil) != tt.wantErr || h != tt.host || p != tt.port {
			t.Errorf("splitEndpoint(%q) = %q, %q, %v; want %q, %q, err=%v", tt.in, h, p, err, tt.host, tt.port, tt.wantErr)
		}
	}
}
