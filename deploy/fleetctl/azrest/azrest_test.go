package azrest

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
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
	if last.Method != "POST" || last.URL.Path != "/enrollments" || last.URL.Query().Get("api-version") != DPSAPIVersion {
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
