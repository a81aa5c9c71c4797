package azrest

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseConnectionString(t *testing.T) {
	t.Parallel()
	cs, err := ParseConnectionString(" sharedaccesskey=a2V5;HostName=hub.example.net;SharedAccessKeyName=iothubowner; ")
	if err != nil || cs.HostName != "hub.example.net" || cs.KeyName != "iothubowner" || cs.Key != "a2V5" {
		t.Fatalf("ParseConnectionString = %+v, %v", cs, err)
	}
	if cs.String() != "HostName=hub.example.net;SharedAccessKeyName=iothubowner;SharedAccessKey=a2V5" {
		t.Errorf("String() = %q", cs.String())
	}
	for in, want := range map[string]string{
		"":           "empty",
		"HostName=h": "SharedAccessKeyName is missing",
		"HostName=https://h/x;SharedAccessKeyName=p;SharedAccessKey=a2V5": "not a URL",
		"HostName=h;SharedAccessKeyName=p;SharedAccessKey=a2V5;Foo=1":     `unknown key "Foo"`,
		"HostName=h;DeviceId=d;SharedAccessKey=a2V5":                      "device connection string",
		"HostName=h;SharedAccessKeyName=p;SharedAccessKey=%%%":            "not base64",
		"justtext": "not key=value",
	} {
		if _, err := ParseConnectionString(in); !errors.Is(err, ErrBadConnectionString) || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseConnectionString(%q) = %v; want %q", in, err, want)
		}
	}
}

// serve answers every request with status, headers and body, and records
// the last request.
func serve(t *testing.T, status int, hdr map[string]string, body string) (*httptest.Server, *http.Request) {
	t.Helper()
	var last http.Request
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		last = *r
		for k, v := range hdr {
			w.Header().Set(k, v)
		}
		w.WriteHeader(status)
		w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv, &last
}

func TestErrorShapes(t *testing.T) {
	t.Parallel()
	cs := ConnectionString{HostName: "svc.example.net", KeyName: "p", Key: "a2V5"}
	tests := []struct {
		name   string
		status int
		hdr    map[string]string
		body   string
		want   string
		is     error
	}{
		{"dps", 404, map[string]string{"x-ms-error-code": "404202"}, `{"errorCode":404202,"trackingId":"x","message":"Enrollment not found","timestampUtc":"t"}`, "404 404202: Enrollment not found", ErrNotFound},
		{"hub json in Message", 404, map[string]string{"iothub-errorcode": "DeviceNotFound"}, `{"Message":"{\"errorCode\":404001,\"message\":\"gone\"}","ExceptionMessage":""}`, "404 404001 DeviceNotFound: gone", ErrNotFound},
		{"hub text Message", 401, map[string]string{"iothub-errorcode": "IotHubUnauthorizedAccess"}, `{"Message":"ErrorCode:IotHubUnauthorizedAccess;Unauthorized","ExceptionMessage":"Tracking ID:x"}`, "refused the shared access signature", ErrUnauthorized},
		{"not json", 502, nil, `<html>bad gateway</html>`, "502: <html>bad gateway</html>", nil},
		{"throttled", 429, map[string]string{"Retry-After": "7"}, `{"errorCode":429001,"message":"slow down"}`, "429 429001", ErrThrottled},
	}
	for _, tt := range tests {
		srv, _ := serve(t, tt.status, tt.hdr, tt.body)
		d, err := NewDPS(cs, Options{BaseURL: srv.URL, HTTP: srv.Client()})
		if err != nil {
			t.Fatal(err)
		}
		_, err = d.GetGroup(context.Background(), "g")
		if err == nil || !strings.Contains(err.Error(), tt.want) || (tt.is != nil && !errors.Is(err, tt.is)) {
			t.Errorf("%s: %v; want %q (%v)", tt.name, err, tt.want, tt.is)
		}
		var ae *APIError
		if tt.name == "throttled" && (!errors.As(err, &ae) || ae.RetryAfter != 7*time.Second) {
			t.Errorf("Retry-After not read: %+v", ae)
		}
	}
}

func TestRequestShape(t *testing.T) {
	t.Parallel()
	srv, last := serve(t, 200, nil, `{"isSuccessful":true,"errors":[]}`)
	d, _ := NewDPS(ConnectionString{HostName: "dps.example.net", KeyName: "provisioningserviceowner", Key: "a2V5"}, Options{BaseURL: srv.URL, HTTP: srv.Client()})
	if _, err := d.Bulk(context.Background(), BulkDelete, []IndividualEnrollment{{RegistrationID: "a b"}}); err != nil {
		t.Fatal(err)
	}
	if last.Method != "POST" || last.URL.Path != "/enrollments" || last.URL.Query().Get("api-version") != DPSEnrollmentAPIVersion {
		t.Errorf("request %s %s", last.Method, last.URL)
	}
	auth := last.Header.Get("Authorization")
	if !strings.HasPrefix(auth, "SharedAccessSignature sr=dps.example.net&sig=") || !strings.Contains(auth, "&skn=provisioningserviceowner") {
		t.Errorf("Authorization = %q", auth)
	}
	if _, err := d.Bulk(context.Background(), BulkDelete, make([]IndividualEnrollment, MaxBulk+1)); err == nil {
		t.Error("Bulk with 11 items was sent")
	}
	h, _ := NewHub(ConnectionString{HostName: "hub.example.net", KeyName: "iothubowner", Key: "a2V5"}, Options{BaseURL: srv.URL, HTTP: srv.Client()})
	if err := h.DeleteDevice(context.Background(), "dev/1", ""); err != nil {
		t.Fatal(err)
	}
	if last.Method != "DELETE" || last.URL.EscapedPath() != "/devices/dev%2F1" || last.Header.Get("If-Match") != "*" || last.URL.Query().Get("api-version") != HubAPIVersion {
		t.Errorf("delete request %s %s If-Match %q", last.Method, last.URL.EscapedPath(), last.Header.Get("If-Match"))
	}
}

// Azure has no telemetry stream in this API: the tool says what to use.
func TestMonitorOnAzureIsUnsupported(t *testing.T) {
	t.Parallel()
	srv, _ := serve(t, 404, nil, `{"Message":"not found"}`)
	h, _ := NewHub(ConnectionString{HostName: "hub.example.net", KeyName: "iothubowner", Key: "a2V5"}, Options{BaseURL: srv.URL, HTTP: srv.Client()})
	err := h.Monitor(context.Background(), "", func(Event) bool { return true })
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "az iot hub monitor-events") {
		t.Errorf("Monitor on a 404 = %v; want ErrUnsupported naming az iot hub monitor-events", err)
	}
}

// Every enrollment route goes out under the preview api-version, the
// first with credentialPolicyName, so a read-modify-write keeps it; the
// other DPS routes stay on the stable one (docs/protocol.md D).
func TestDPSAPIVersionPerRoute(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	got := map[string]string{} // "METHOD path" -> api-version
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got[r.Method+" "+r.URL.Path] = r.URL.Query().Get("api-version")
		mu.Unlock()
		switch {
		case strings.HasSuffix(r.URL.Path, "/query"), r.URL.Path == "/credentialPolicies":
			w.Write([]byte(`[]`))
		case r.URL.Path == "/enrollments" && r.Method == http.MethodPost:
			w.Write([]byte(`{"isSuccessful":true,"errors":[]}`))
		default:
			w.Write([]byte(`{}`))
		}
	}))
	t.Cleanup(srv.Close)
	d, _ := NewDPS(ConnectionString{HostName: "dps.example.net", KeyName: "p", Key: "a2V5"}, Options{BaseURL: srv.URL, HTTP: srv.Client()})
	ctx := context.Background()
	calls := []func() error{
		func() error { _, err := d.GetGroup(ctx, "g"); return err },
		func() error { _, err := d.PutGroup(ctx, EnrollmentGroup{EnrollmentGroupID: "g"}, ""); return err },
		func() error { return d.DeleteGroup(ctx, "g", "") },
		func() error { _, err := d.ListGroups(ctx); return err },
		func() error { _, err := d.GetEnrollment(ctx, "e"); return err },
		func() error {
			_, err := d.PutEnrollment(ctx, IndividualEnrollment{RegistrationID: "e"}, "")
			return err
		},
		func() error { return d.DeleteEnrollment(ctx, "e", "") },
		func() error {
			_, err := d.Bulk(ctx, BulkUpdate, []IndividualEnrollment{{RegistrationID: "e"}})
			return err
		},
		func() error { _, err := d.GetRegistration(ctx, "e"); return err },
		func() error { return d.DeleteRegistration(ctx, "e", "") },
		func() error { _, err := d.ListRegistrations(ctx, "g"); return err },
		func() error { _, err := d.GetCredentialPolicy(ctx, "p"); return err },
		func() error { _, err := d.ListCredentialPolicies(ctx); return err },
	}
	for i, call := range calls {
		if err := call(); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	want := map[string]string{
		"GET /enrollmentGroups/g":      DPSEnrollmentAPIVersion,
		"PUT /enrollmentGroups/g":      DPSEnrollmentAPIVersion,
		"DELETE /enrollmentGroups/g":   DPSEnrollmentAPIVersion,
		"POST /enrollmentGroups/query": DPSEnrollmentAPIVersion,
		"GET /enrollments/e":           DPSEnrollmentAPIVersion,
		"PUT /enrollments/e":           DPSEnrollmentAPIVersion,
		"DELETE /enrollments/e":        DPSEnrollmentAPIVersion,
		"POST /enrollments":            DPSEnrollmentAPIVersion,
		"GET /registrations/e":         DPSAPIVersion,
		"DELETE /registrations/e":      DPSAPIVersion,
		"POST /registrations/g/query":  DPSAPIVersion,
		"GET /credentialPolicies/p":    DPSAPIVersion,
		"GET /credentialPolicies":      DPSAPIVersion,
	}
	if DPSEnrollmentAPIVersion != "2025-07-01-preview" {
		t.Errorf("DPSEnrollmentAPIVersion = %q; credentialPolicyName needs 2025-07-01-preview", DPSEnrollmentAPIVersion)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s sent api-version %q; want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("requests %v; want %d distinct", got, len(want))
	}
}

// The field is sent and read under its JSON name, and left out when empty
// (a stable-version body stays as it was).
func TestCredentialPolicyNameJSON(t *testing.T) {
	t.Parallel()
	b, _ := json.Marshal(EnrollmentGroup{EnrollmentGroupID: "g", Enrollment: Enrollment{CredentialPolicyName: "trackers"}})
	if !strings.Contains(string(b), `"credentialPolicyName":"trackers"`) {
		t.Errorf("group JSON %s lacks credentialPolicyName", b)
	}
	b, _ = json.Marshal(IndividualEnrollment{RegistrationID: "d"})
	if strings.Contains(string(b), "credentialPolicyName") {
		t.Errorf("empty credentialPolicyName sent: %s", b)
	}
	var e IndividualEnrollment
	if err := json.Unmarshal([]byte(`{"registrationId":"d","credentialPolicyName":"p1","optionalDeviceInformation":{"a":1}}`), &e); err != nil || e.CredentialPolicyName != "p1" || string(e.OptionalDeviceInformation) != `{"a":1}` {
		t.Errorf("decoded %+v, %v", e, err)
	}
}

// On Azure the credential policy routes do not exist: the tool says where
// policies live instead of a bare 404.
func TestCredentialPolicyOnAzureIsUnsupported(t *testing.T) {
	t.Parallel()
	srv, _ := serve(t, 404, nil, `{"errorCode":404000,"message":"not found"}`)
	d, _ := NewDPS(ConnectionString{HostName: "dps.example.net", KeyName: "p", Key: "a2V5"}, Options{BaseURL: srv.URL, HTTP: srv.Client()})
	_, err := d.PutCredentialPolicy(context.Background(), "p", 60, "")
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "Azure Device Registry") {
		t.Errorf("PutCredentialPolicy on Azure = %v; want ErrUnsupported naming Azure Device Registry", err)
	}
	// The emulator's own 404 (that policy is missing) stays a not-found.
	srv, _ = serve(t, 404, nil, `{"errorCode":404207,"message":"credential policy \"p\" not found"}`)
	d, _ = NewDPS(ConnectionString{HostName: "dps.example.net", KeyName: "p", Key: "a2V5"}, Options{BaseURL: srv.URL, HTTP: srv.Client()})
	if _, err := d.GetCredentialPolicy(context.Background(), "p"); !errors.Is(err, ErrNotFound) || errors.Is(err, ErrUnsupported) {
		t.Errorf("GetCredentialPolicy of a missing policy = %v; want ErrNotFound", err)
	}
}
