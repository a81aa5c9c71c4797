package service_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/reefer/tracker/deploy/emulator/service"
	"github.com/reefer/tracker/deploy/emulator/store"
)

const (
	dpsHost  = "dps.localhost"
	hub1     = "hub1.localhost"
	hub2     = "hub2.localhost:8884"
	dpsVer   = "2021-10-01"
	hubVer   = "2021-04-12"
	dpsOwner = "provisioningserviceowner"
	hubOwner = "iothubowner"
)

var (
	dpsKey  = base64.StdEncoding.EncodeToString([]byte("dps-owner-key-0123456789abcdef!!"))
	hub1Key = base64.StdEncoding.EncodeToString([]byte("hub1-owner-key-0123456789abcdef!"))
	hub2Key = base64.StdEncoding.EncodeToString([]byte("hub2-owner-key-0123456789abcdef!"))
	roKey   = base64.StdEncoding.EncodeToString([]byte("hub1-registry-read-key-012345678"))
)

// env is one emulator service API on a real TLS listener over a real store.
type env struct {
	t   *testing.T
	st  *store.Store
	svc *service.Service
	srv *httptest.Server
	now time.Time
}

type envOpt func(*service.Config)

func newEnv(t *testing.T, opts ...envOpt) *env {
	t.Helper()
	st, err := store.Open(t.TempDir(), store.Options{
		Hubs:   []store.Hub{{Name: "hub1", HostName: hub1}, {Name: "hub2", HostName: hub2}},
		NoSync: true,
	})
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	t.Cleanup(func() { st.Close() }) // before TempDir's removal: flushes telemetry
	cfg := service.Config{
		DPS: service.DPSConfig{HostName: dpsHost, IDScope: "0ne00000001", Policies: service.Policies{dpsOwner: dpsKey}},
		Hubs: map[string]service.Policies{
			hub1: {hubOwner: hub1Key, "registryRead": roKey},
			hub2: {hubOwner: hub2Key},
		},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, o := range opts {
		o(&cfg)
	}
	svc, err := service.New(st, cfg)
	if err != nil {
		t.Fatalf("service.New: %v", err)
	}
	return &env{t: t, st: st, svc: svc, srv: newTLSServer(t, svc), now: time.Now()}
}

// newTLSServer serves svc over TLS on 127.0.0.1 until the test ends.
func newTLSServer(t *testing.T, svc *service.Service) *httptest.Server {
	srv := httptest.NewTLSServer(svc)
	t.Cleanup(func() {
		svc.Close()
		srv.Close()
	})
	return srv
}

// inlineToken signs a token independently of service.SASToken, with the
// fields in a different order (docs/protocol.md D).
func inlineToken(sr, skn, key string, expiry time.Time) string {
	k, _ := base64.StdEncoding.DecodeString(key)
	mac := hmac.New(sha256.New, k)
	se := strconv.FormatInt(expiry.Unix(), 10)
	fmt.Fprintf(mac, "%s\n%s", url.QueryEscape(sr), se)
	sig := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	return fmt.Sprintf("SharedAccessSignature skn=%s&se=%s&sig=%s&sr=%s", skn, se, url.QueryEscape(sig), url.QueryEscape(sr))
}

func dpsToken() string  { return service.SASToken(dpsHost, dpsOwner, dpsKey, time.Now().Add(time.Hour)) }
func hub1Token() string { return service.SASToken(hub1, hubOwner, hub1Key, time.Now().Add(time.Hour)) }

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// errorCode extracts the 6-digit code from a DPS or hub error body.
func (r resp) errorCode(t *testing.T) int {
	t.Helper()
	var m map[string]any
	r.json(t, &m)
	if msg, ok := m["Message"].(string); ok {
		if err := json.Unmarshal([]byte(msg), &m); err != nil {
			t.Fatalf("hub error Message is not JSON: %q", msg)
		}
	}
	c, ok := m["errorCode"].(float64)
	if !ok {
		t.Fatalf("no errorCode in %s", r.body)
	}
	return int(c)
}

// do sends a request; body may be nil, a string, []byte or a value to
// encode as JSON. hdr is alternating header names and values.
func (e *env) do(method, path, token string, body any, hdr ...string) resp {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatalf("encode body: %v", err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatalf("new request: %v", err)
	}
	if token != "" {
		req.Header.Set("Authorization", token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatalf("read body: %v", err)
	}
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

// want checks status and, for errors, the 6-digit code.
func want(t *testing.T, what string, r resp, status, code int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: status = %d; want %d (body %s)", what, r.status, status, r.body)
	}
	if code != 0 {
		if got := r.errorCode(t); got != code {
			t.Fatalf("%s: errorCode = %d; want %d (body %s)", what, got, code, r.body)
		}
	}
}

func TestSASTokenMatchesInlineSignature(t *testing.T) {
	t.Parallel()
	exp := time.Unix(1900000000, 0)
	got := service.SASToken("hub1.localhost/devices/dev 1", "iothubowner", hub1Key, exp)
	k, _ := base64.StdEncoding.DecodeString(hub1Key)
	mac := hmac.New(sha256.New, k)
	mac.Write([]byte(url.QueryEscape("hub1.localhost/devices/dev 1") + "\n1900000000"))
	sig := url.QueryEscape(base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	for _, part := range []string{"SharedAccessSignature ", "sr=hub1.localhost%2Fdevices%2Fdev+1", "sig=" + sig, "se=1900000000", "skn=iothubowner"} {
		if !strings.Contains(got, part) {
			t.Errorf("SASToken(...) = %q; want it to contain %q", got, part)
		}
	}
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	future := time.Now().Add(time.Hour)
	okBody := "/devices?api-version=" + hubVer
	tests := []struct {
		name   string
		token  string
		path   string
		status int
		code   int
	}{
		{"SASToken hub", hub1Token(), okBody, 200, 0},
		{"inline token, other key order", inlineToken(hub1, hubOwner, hub1Key, future), okBody, 200, 0},
		{"second policy", inlineToken(hub1, "registryRead", roKey, future), okBody, 200, 0},
		{"policy name case-insensitive", inlineToken(hub1, "IoTHubOwner", hub1Key, future), okBody, 200, 0},
		{"hub with port in host name", inlineToken(hub2, hubOwner, hub2Key, future), okBody, 200, 0},
		{"device-scoped sr covers path", inlineToken(hub1+"/devices", hubOwner, hub1Key, future), okBody, 200, 0},
		{"sr prefix per segment only", inlineToken(hub1+"/dev", hubOwner, hub1Key, future), okBody, 401, 401002},
		{"sr for a sibling path", inlineToken(hub1+"/twins", hubOwner, hub1Key, future), okBody, 401, 401002},
		{"missing header", "", okBody, 401, 401002},
		{"not a SAS", "Bearer abc", okBody, 401, 401002},
		{"garbage fields", "SharedAccessSignature nonsense", okBody, 401, 401002},
		{"wrong signature", inlineToken(hub1, hubOwner, hub2Key, future), okBody, 401, 401002},
		{"expired", inlineToken(hub1, hubOwner, hub1Key, time.Now().Add(-time.Second)), okBody, 401, 401002},
		{"unknown policy", inlineToken(hub1, "nobody", hub1Key, future), okBody, 401, 401002},
		{"no skn", strings.Replace(inlineToken(hub1, hubOwner, hub1Key, future), "skn=iothubowner&", "", 1), okBody, 401, 401002},
		{"sr of another hub signed with hub1 key", inlineToken(hub2, hubOwner, hub1Key, future), okBody, 401, 401002},
		{"hub sr signed with DPS policy", inlineToken(hub1, dpsOwner, dpsKey, future), okBody, 401, 401002},
		{"unknown service", inlineToken("elsewhere.example", hubOwner, hub1Key, future), okBody, 401, 401002},
		{"DPS token on DPS path", dpsToken(), "/enrollmentGroups/nope?api-version=" + dpsVer, 404, 404202},
		{"DPS token routes to DPS even on a hub path", dpsToken(), "/devices/x?api-version=" + dpsVer, 404, 404000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do("GET", tc.path, tc.token, nil)
			want(t, tc.name, r, tc.status, tc.code)
		})
	}
}

func TestErrorShapes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// DPS: ProvisioningServiceErrorDetails plus x-ms-error-code.
	r := e.do("GET", "/enrollmentGroups/nope?api-version="+dpsVer, dpsToken(), nil)
	want(t, "DPS 404", r, 404, 404202)
	var d map[string]any
	r.json(t, &d)
	for _, k := range []string{"errorCode", "trackingId", "message", "timestampUtc"} {
		if _, ok := d[k]; !ok {
			t.Errorf("DPS error body %s lacks %q", r.body, k)
		}
	}
	if got := r.header.Get("x-ms-error-code"); got != "404202" {
		t.Errorf("x-ms-error-code = %q; want 404202", got)
	}
	// Hub: {"Message": "<json>", "ExceptionMessage": ""} plus iothub-errorcode.
	r = e.do("GET", "/devices/nope?api-version="+hubVer, hub1Token(), nil)
	want(t, "hub 404", r, 404, 404001)
	var h map[string]any
	r.json(t, &h)
	if _, ok := h["ExceptionMessage"]; !ok {
		t.Errorf("hub error body %s lacks ExceptionMessage", r.body)
	}
	if got := r.header.Get("iothub-errorcode"); got != "DeviceNotFound" {
		t.Errorf("iothub-errorcode = %q; want DeviceNotFound", got)
	}
	// Without a token, the Host header picks the shape: hub host -> hub.
	req, _ := http.NewRequest("GET", e.srv.URL+"/devices?api-version="+hubVer, nil)
	req.Host = hub1
	res, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 401 || res.Header.Get("iothub-errorcode") == "" {
		t.Errorf("no token, Host %s: status %d, iothub-errorcode %q; want 401 with hub error shape", hub1, res.StatusCode, res.Header.Get("iothub-errorcode"))
	}
}

func TestAPIVersion(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tests := []struct {
		name, token, path string
		status, code      int
	}{
		{"hub missing", hub1Token(), "/devices", 400, 400001},
		{"hub unsupported", hub1Token(), "/devices?api-version=2099-01-01", 400, 400001},
		{"hub DPS version", hub1Token(), "/devices?api-version=" + dpsVer, 400, 400001},
		{"hub 2021-04-12", hub1Token(), "/devices?api-version=2021-04-12", 200, 0},
		{"hub 2020-09-30", hub1Token(), "/devices?api-version=2020-09-30", 200, 0},
		{"hub 2018-06-30", hub1Token(), "/devices?api-version=2018-06-30", 200, 0},
		{"dps missing", dpsToken(), "/enrollmentGroups/x", 400, 400001},
		{"dps unsupported", dpsToken(), "/enrollmentGroups/x?api-version=2021-04-12", 400, 400001},
		{"dps 2021-10-01", dpsToken(), "/enrollmentGroups/x?api-version=2021-10-01", 404, 404202},
		{"dps 2026-04-01", dpsToken(), "/enrollmentGroups/x?api-version=2026-04-01", 404, 404202},
		{"dps 2025-07-01-preview", dpsToken(), "/enrollmentGroups/x?api-version=2025-07-01-preview", 404, 404202},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want(t, tc.name, e.do("GET", tc.path, tc.token, nil), tc.status, tc.code)
		})
	}
}

func TestInfoAndUnknownRoute(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.do("GET", "/$emulator?api-version="+dpsVer, dpsToken(), nil)
	want(t, "dps info", r, 200, 0)
	var info struct {
		Service, IDScope string
		IoTHubs          []string
	}
	r.json(t, &info)
	if info.Service != "dps" || info.IDScope != "0ne00000001" || len(info.IoTHubs) != 2 {
		t.Errorf("GET /$emulator = %s; want dps, id scope and 2 hubs", r.body)
	}
	want(t, "unknown route", e.do("GET", "/nothing/here?api-version="+hubVer, hub1Token(), nil), 404, 404000)
}

func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	st, err := store.Open(t.TempDir(), store.Options{Hubs: []store.Hub{{Name: "hub1", HostName: hub1}}, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  service.Config
	}{
		{"nothing configured", service.Config{}},
		{"hub not in store", service.Config{Hubs: map[string]service.Policies{"other": {"p": hub1Key}}}},
		{"key not base64", service.Config{Hubs: map[string]service.Policies{hub1: {"p": "not base64!"}}}},
		{"no policies", service.Config{Hubs: map[string]service.Policies{hub1: {}}}},
		{"DPS host clashes with hub", service.Config{DPS: service.DPSConfig{HostName: strings.ToUpper(hub1), Policies: service.Policies{"p": dpsKey}}, Hubs: map[string]service.Policies{hub1: {"p": hub1Key}}}},
	}
	for _, tc := range tests {
		if _, err := service.New(st, tc.cfg); err == nil {
			t.Errorf("New(%s) = nil error; want an error", tc.name)
		}
	}
	if _, err := service.New(nil, service.Config{}); err == nil {
		t.Errorf("New(nil store) = nil error; want an error")
	}
}

func TestBodyLimitsAndBadJSON(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *service.Config) { c.MaxBodyBytes = 1024 })
	want(t, "bad JSON", e.do("PUT", "/devices/d1?api-version="+hubVer, hub1Token(), `{"deviceId":`), 400, 400004)
	want(t, "wrong JSON type", e.do("PUT", "/devices/d1?api-version="+hubVer, hub1Token(), `{"deviceId":5}`), 400, 400004)
	want(t, "empty body", e.do("PUT", "/devices/d1?api-version="+hubVer, hub1Token(), ""), 400, 400004)
	big := `{"deviceId":"d1","statusReason":"` + strings.Repeat("x", 2000) + `"}`
	want(t, "oversized", e.do("PUT", "/devices/d1?api-version="+hubVer, hub1Token(), big), 413, 413001)
	want(t, "bad JSON DPS", e.do("PUT", "/enrollmentGroups/g?api-version="+dpsVer, dpsToken(), `[`), 400, 400004)
}

// tokenRaw signs msgSR and transmits sendSR, to model SDKs that encode sr
// differently (%2f vs %2F, or not at all).
func tokenRaw(sendSR, msgSR, skn, key string, se int64) string {
	k, _ := base64.StdEncoding.DecodeString(key)
	mac := hmac.New(sha256.New, k)
	fmt.Fprintf(mac, "%s\n%d", msgSR, se)
	sig := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	return fmt.Sprintf("SharedAccessSignature sr=%s&sig=%s&se=%d&skn=%s", sendSR, url.QueryEscape(sig), se, skn)
}

func TestSREncodingsAndExpiryBoundary(t *testing.T) {
	t.Parallel()
	now := time.Unix(2_000_000_000, 0)
	e := newEnv(t, func(c *service.Config) { c.Now = func() time.Time { return now } })
	se := now.Unix() + 60
	res := hub1 + "/devices"
	tests := []struct {
		name   string
		token  string
		status int
	}{
		{"upper-case escapes", tokenRaw("hub1.localhost%2Fdevices", "hub1.localhost%2Fdevices", hubOwner, hub1Key, se), 200},
		{"lower-case escapes", tokenRaw("hub1.localhost%2fdevices", "hub1.localhost%2fdevices", hubOwner, hub1Key, se), 200},
		{"unencoded sr, signed unencoded", tokenRaw(res, res, hubOwner, hub1Key, se), 200},
		{"unencoded sr, signed encoded", tokenRaw(res, url.QueryEscape(res), hubOwner, hub1Key, se), 200},
		{"signed over another resource", tokenRaw(res, url.QueryEscape(hub1+"/twins"), hubOwner, hub1Key, se), 401},
		{"expires in one second", tokenRaw(hub1, hub1, hubOwner, hub1Key, now.Unix()+1), 200},
		{"expires now", tokenRaw(hub1, hub1, hubOwner, hub1Key, now.Unix()), 401},
		{"SASToken against injected clock", service.SASToken(hub1, hubOwner, hub1Key, now.Add(time.Minute)), 200},
		{"SASToken valid by wall clock but expired by injected clock", service.SASToken(hub1, hubOwner, hub1Key, now.Add(-time.Minute)), 401},
	}
	for _, tc := range tests {
		r := e.do("GET", "/devices?api-version="+hubVer, tc.token, nil)
		if r.status != tc.status {
			t.Errorf("%s: status = %d; want %d (%s)", tc.name, r.status, tc.status, r.body)
		}
	}
}
