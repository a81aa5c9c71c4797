package dps

import (
	"errors"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/reefer/tracker/provisioning/internal/restopic"
)

// The DPS response topic and body come from the network (docs/protocol.md A.2, A.4).
// Seeds: testdata/fuzz/Fuzz*/, real topics and bodies of the C SDK traces'
// shape, plus the f.Add cases below.

// FuzzResponseTopic: parsing never panics; a parsed topic has an HTTP-like
// status and a non-negative retry-after; and re-encoding what was parsed
// the way DPS writes it parses back to the same values.
func FuzzResponseTopic(f *testing.F) {
	f.Add("$dps/registrations/res/202/?$rid=1&retry-after=3")
	f.Add("$dps/registrations/res/200/?$rid=4f9c")
	f.Add("$dps/registrations/res/429/?$rid=7&retry-after=60")
	f.Add("$dps/registrations/res/401/?$rid=1")
	f.Fuzz(func(t *testing.T, topic string) {
		r, err := parseResponseTopic(topic)
		if err != nil {
			if r.RetryAfter < 0 {
				t.Fatalf("error %v with negative retry-after %v", err, r.RetryAfter)
			}
			return
		}
		if r.Status < 100 || r.Status > 999 {
			t.Fatalf("parseResponseTopic(%q) status %d; want 100..999", topic, r.Status)
		}
		if r.RetryAfter < 0 || r.RetryAfter%time.Second != 0 {
			t.Fatalf("parseResponseTopic(%q) retry-after %v; want whole non-negative seconds", topic, r.RetryAfter)
		}
		again := responsePrefix + strconv.Itoa(r.Status) + "/?$rid=" + url.QueryEscape(r.RID)
		if r.RetryAfter > 0 {
			again += "&retry-after=" + strconv.Itoa(int(r.RetryAfter/time.Second))
		}
		r2, err := parseResponseTopic(again)
		if err != nil {
			t.Fatalf("re-encoded %q (from %q) does not parse: %v", again, topic, err)
		}
		if r2.Status != r.Status || r2.RID != r.RID || r2.RetryAfter != r.RetryAfter {
			t.Fatalf("round trip %q -> %+v -> %q -> %+v", topic, r, again, r2)
		}
	})
}

// FuzzRequestTopics: whatever the request id and operation id (the latter
// comes from DPS), the poll topic carries them unchanged to a server that
// reads its query, and stays one MQTT topic name (no wildcards).
func FuzzRequestTopics(f *testing.F) {
	f.Add("1", "4.d0a671905ea5b2c8.e7173b7b-0e54-4aa0-9d20-aeb1b89e6c7d")
	f.Add("a b&c=d", "x#y+z/")
	f.Fuzz(func(t *testing.T, rid, opID string) {
		for _, topic := range []string{RegisterTopic(rid), PollTopic(rid, opID)} {
			if strings.ContainsAny(topic, "#+\x00") {
				t.Fatalf("topic %q contains a wildcard or NUL", topic)
			}
		}
		_, q, _ := strings.Cut(PollTopic(rid, opID), "?")
		vals, err := url.ParseQuery(q)
		if err != nil {
			t.Fatalf("PollTopic(%q, %q) query %q: %v", rid, opID, q, err)
		}
		if vals.Get("$rid") != rid || vals.Get("operationId") != opID {
			t.Fatalf("PollTopic(%q, %q) carries $rid %q, operationId %q", rid, opID, vals.Get("$rid"), vals.Get("operationId"))
		}
	})
}

// FuzzOperationBody feeds a response body with the status it came with to
// the code that reads it (interpretOperation for 200/202, classifyStatus
// otherwise). Properties: no panic; every error is a *Error whose Kind is
// one of the sentinels and matches errors.Is; a finished assignment has a
// hub and a device id the hub client can use; an unfinished operation has
// an operation id to poll.
func FuzzOperationBody(f *testing.F) {
	f.Add(202, []byte(`{"operationId":"4.d0a671905ea5b2c8.e7173b7b","status":"assigning"}`))
	f.Add(200, []byte(`{"operationId":"4.x","status":"assigned","registrationState":{"registrationId":"sensor-thl-001","assignedHub":"hub-x.azure-devices.net","deviceId":"sensor-thl-001","status":"assigned","substatus":"initialAssignment"}}`))
	f.Add(200, []byte(`{"operationId":"4.x","status":"disabled","registrationState":{"registrationId":"sensor-thl-002","status":"disabled"}}`))
	f.Add(200, []byte(`{"operationId":"4.x","status":"failed","registrationState":{"errorCode":400207,"errorMessage":"Custom allocation failed"}}`))
	f.Add(401, []byte(`{"errorCode":401002,"trackingId":"8ad0","message":"Invalid certificate.","timestampUtc":"2020-04-10T05:24:22.4718526Z"}`))
	f.Add(429, []byte(``))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		r := response{Status: status, RID: "1", Body: body}
		if status == 200 || status == 202 {
			out, err := interpretOperation("poll", r)
			if err != nil {
				checkError(t, err, status)
				if !out.Done && out.OperationID != "" {
					t.Fatalf("error %v with a pending operation %q", err, out.OperationID)
				}
				return
			}
			switch {
			case out.Done && (out.Result == nil || out.Result.AssignedHub == "" || out.Result.DeviceID == ""):
				t.Fatalf("body %q: done without an assignment: %+v", body, out)
			case !out.Done && out.OperationID == "":
				t.Fatalf("body %q: pending without an operation id", body)
			case out.Result != nil && restopic.CheckDeviceID(out.Result.DeviceID) != nil:
				t.Fatalf("body %q: assigned a device id the hub client cannot use: %q", body, out.Result.DeviceID)
			}
			return
		}
		err := classifyStatus("poll", r)
		if err == nil {
			t.Fatalf("classifyStatus(%d) = nil", status)
		}
		checkError(t, err, status)
	})
}

var kinds = []error{ErrDisabled, ErrUnauthorized, ErrThrottled, ErrTransient, ErrMalformed, ErrFailed, ErrBadRequest, ErrNotFound}

func checkError(t *testing.T, err error, status int) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *dps.Error", err, err)
	}
	if e.Status != status {
		t.Fatalf("error status %d; the response had %d", e.Status, status)
	}
	for _, k := range kinds {
		if e.Kind == k {
			if !errors.Is(err, k) {
				t.Fatalf("errors.Is(%v, %v) = false", err, k)
			}
			return
		}
	}
	t.Fatalf("error %v has kind %v, not one of the sentinels", err, e.Kind)
}
