package service

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/reefer/tracker/deploy/emulator/store"
	"github.com/reefer/tracker/internal/sas"
)

// The emulator's service API is reachable by anyone with a socket to it;
// its Authorization header and bodies are untrusted. Seeds:
// testdata/fuzz/Fuzz*/ (az CLI and SDK style tokens, the bodies the
// reference flow sends).

var fuzzKey = base64.StdEncoding.EncodeToString([]byte("fuzz-owner-key-0123456789abcdef!"))

// FuzzParseSAS: any Authorization header parses or is refused with
// errNoToken or errBadToken; a parsed token has a resource, a signature
// and an expiry; checking it against a policy set and a request path never
// panics, and it verifies only when its policy is known and it has not
// expired.
func FuzzParseSAS(f *testing.F) {
	now := time.Date(2026, 12, 3, 18, 0, 0, 0, time.UTC)
	f.Add(SASToken("dps.localhost", "provisioningserviceowner", fuzzKey, now.Add(time.Hour)))
	f.Add("SharedAccessSignature sr=hub1.localhost%2Fdevices%2Fd&sig=abc%3D&se=1&skn=iothubowner")
	f.Add("sharedaccesssignature se=99999999999&skn=x&sig=+/=&sr=https%3A%2F%2Fh")
	keys := map[string][]byte{"provisioningserviceowner": sas.DecodeKey(fuzzKey)}
	f.Fuzz(func(t *testing.T, header string) {
		tok, err := parseSAS(header)
		if err != nil {
			if !errors.Is(err, errNoToken) && !errors.Is(err, errBadToken) {
				t.Fatalf("parseSAS error %v is neither errNoToken nor errBadToken", err)
			}
			return
		}
		if tok.resource == "" || tok.sig == "" {
			t.Fatalf("accepted %q without resource or signature: %+v", header, tok)
		}
		_ = tok.host()
		_ = tok.covers("dps.localhost", "/enrollmentGroups/g")
		if err := tok.verify(keys, now); err == nil {
			if _, ok := keys[strings.ToLower(tok.policy)]; !ok || now.Unix() >= tok.expiry {
				t.Fatalf("verified %q: policy %q, expiry %d", header, tok.policy, tok.expiry)
			}
		}
	})
}

// FuzzSASRoundTrip: a token SASToken makes for any resource and policy
// parses back to them, verifies with the key until it expires and not a
// second after, fails with another key, and covers its own resource.
func FuzzSASRoundTrip(f *testing.F) {
	f.Add("dps.localhost", "provisioningserviceowner", int64(1_800_000_000))
	f.Add("hub1.localhost/devices/sensor-thl-001", "registryReadWrite", int64(1))
	f.Add("mydps.azure-devices-provisioning.net/enrollmentGroups/a b", "p&q=r", int64(4_102_444_800))
	other := sas.DecodeKey(base64.StdEncoding.EncodeToString([]byte("another-key-0123456789abcdef!!!!")))
	f.Fuzz(func(t *testing.T, resource, policy string, se int64) {
		if resource == "" || policy == "" || se <= 0 || se > 1<<40 {
			return
		}
		header := SASToken(resource, policy, fuzzKey, time.Unix(se, 0))
		tok, err := parseSAS(header)
		if err != nil {
			t.Fatalf("our token %q does not parse: %v", header, err)
		}
		want := resource
		for _, scheme := range []string{"https://", "http://"} {
			if len(want) > len(scheme) && strings.EqualFold(want[:len(scheme)], scheme) {
				want = want[len(scheme):]
			}
		}
		if tok.resource != want || tok.policy != policy || tok.expiry != se {
			t.Fatalf("token for %q/%q/%d parsed as %+v", resource, policy, se, tok)
		}
		keys := map[string][]byte{strings.ToLower(policy): sas.DecodeKey(fuzzKey)}
		if err := tok.verify(keys, time.Unix(se-1, 0)); err != nil {
			t.Fatalf("token %q does not verify before expiry: %v", header, err)
		}
		if err := tok.verify(keys, time.Unix(se, 0)); !errors.Is(err, errExpired) {
			t.Fatalf("token %q at its expiry: %v; want errExpired", header, err)
		}
		if err := tok.verify(map[string][]byte{strings.ToLower(policy): other}, time.Unix(se-1, 0)); !errors.Is(err, errBadSig) {
			t.Fatalf("token %q with another key: %v; want errBadSig", header, err)
		}
		host, path, _ := strings.Cut(want, "/")
		if !tok.covers(host, "/"+path) {
			t.Fatalf("token for %q does not cover its own resource", want)
		}
	})
}

// FuzzServiceBodies sends a fuzzed body to each write endpoint of the DPS
// and hub service APIs (the selector picks one) with a valid token, the
// way az and the SDKs call them. Properties: no internal error (5xx) and
// no panic whatever the body; every answer is JSON, errors in the
// service's documented error shape with a code (docs/protocol.md D, E); and what a
// PUT or PATCH accepted is what a GET returns afterwards.
func FuzzServiceBodies(f *testing.F) {
	f.Add(uint8(0), []byte(`{"enrollmentGroupId":"g","attestation":{"type":"x509","x509":{"caReferences":{"primary":"groupCA-sensors"}}},"provisioningStatus":"enabled","initialTwin":{"properties":{"desired":{"telemetryDelay":1}}}}`))
	f.Add(uint8(1), []byte(`{"registrationId":"sensor-thl-002","attestation":{"type":"x509","x509":{"clientCertificates":{"primary":{"certificate":"not a pem"}}}},"provisioningStatus":"disabled"}`))
	f.Add(uint8(2), []byte(`{"deviceId":"d1","status":"enabled","authentication":{"type":"selfSigned","x509Thumbprint":{"primaryThumbprint":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}}}`))
	f.Add(uint8(3), []byte(`{"properties":{"desired":{"telemetryDelay":3}}}`))
	f.Add(uint8(4), []byte(`{"tags":{"site":"A"},"properties":{"desired":{"telemetryDelay":null}}}`))
	f.Add(uint8(5), []byte(`{"methodName":"getStatus","responseTimeoutInSeconds":5,"payload":{}}`))
	f.Add(uint8(6), []byte(`{"mode":"create","enrollmentGroups":[{"enrollmentGroupId":"b1","attestation":{"type":"x509"}}]}`))
	f.Add(uint8(8), []byte(`{"query":"*"}`))
	env := newFuzzService(f)
	f.Fuzz(func(t *testing.T, sel uint8, body []byte) {
		ep := fuzzEndpoints[int(sel)%len(fuzzEndpoints)]
		rec := env.do(ep.method, ep.host, ep.path, body, "")
		checkAnswer(t, ep.method+" "+ep.path, rec, ep.host != fuzzDPS)
		if ep.readBack == "" || rec.Code/100 != 2 {
			if ep.cleanup != "" {
				env.do("DELETE", ep.host, ep.cleanup, nil, "*")
			}
			return
		}
		back := env.do("GET", ep.host, ep.readBack, nil, "")
		if back.Code != http.StatusOK {
			t.Fatalf("%s %s accepted %s (%d) but GET %s is %d: %s", ep.method, ep.path, body, rec.Code, ep.readBack, back.Code, back.Body)
		}
		if !sameJSON(rec.Body.Bytes(), back.Body.Bytes(), ep.volatile) {
			t.Fatalf("%s %s answered\n%s\nbut GET %s answers\n%s", ep.method, ep.path, rec.Body, ep.readBack, back.Body)
		}
		if ep.cleanup != "" {
			if del := env.do("DELETE", ep.host, ep.cleanup, nil, "*"); del.Code != http.StatusNoContent {
				t.Fatalf("DELETE %s: %d %s", ep.cleanup, del.Code, del.Body)
			}
		}
	})
}

const (
	fuzzDPS = "dps.localhost"
	fuzzHub = "hub1.localhost"
)

type fuzzEndpoint struct {
	method, host, path string
	readBack           string   // GET path that must return what was accepted
	cleanup            string   // DELETE path that resets the store
	volatile           []string // top-level members that may differ on read
}

var fuzzEndpoints = []fuzzEndpoint{
	{"PUT", fuzzDPS, "/enrollmentGroups/g", "/enrollmentGroups/g", "/enrollmentGroups/g", nil},
	{"PUT", fuzzDPS, "/enrollments/sensor-thl-002", "/enrollments/sensor-thl-002", "/enrollments/sensor-thl-002", nil},
	{"PUT", fuzzHub, "/devices/d1", "/devices/d1", "/devices/d1", []string{"connectionStateUpdatedTime", "lastActivityTime"}},
	{"PATCH", fuzzHub, "/twins/d0", "/twins/d0", "", []string{"connectionState", "lastActivityTime"}},
	{"PUT", fuzzHub, "/twins/d0", "/twins/d0", "", []string{"connectionState", "lastActivityTime"}},
	{"POST", fuzzHub, "/twins/d0/methods", "", "", nil},
	{"POST", fuzzDPS, "/enrollmentGroups", "", "/enrollmentGroups/b1", nil},
	{"POST", fuzzDPS, "/enrollments", "", "/enrollments/b1", nil},
	{"POST", fuzzDPS, "/enrollmentGroups/query", "", "", nil},
	{"POST", fuzzHub, "/devices/query", "", "", nil},
	{"POST", fuzzHub, "/devices/d0/messages/deviceBound", "", "", nil},
}

type fuzzService struct {
	svc      *Service
	dpsToken string
	hubToken string
}

func newFuzzService(tb testing.TB) *fuzzService {
	st, err := store.Open(tb.TempDir(), store.Options{Hubs: []store.Hub{{Name: "hub1", HostName: fuzzHub}}, NoSync: true})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	svc, err := New(st, Config{
		DPS:    DPSConfig{HostName: fuzzDPS, IDScope: "0ne00000001", Policies: Policies{"provisioningserviceowner": fuzzKey}},
		Hubs:   map[string]Policies{fuzzHub: {"iothubowner": fuzzKey}},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { svc.Close() })
	e := &fuzzService{
		svc:      svc,
		dpsToken: SASToken(fuzzDPS, "provisioningserviceowner", fuzzKey, time.Now().Add(24*time.Hour)),
		hubToken: SASToken(fuzzHub, "iothubowner", fuzzKey, time.Now().Add(24*time.Hour)),
	}
	if rec := e.do("PUT", fuzzHub, "/devices/d0", []byte(`{"deviceId":"d0"}`), ""); rec.Code != http.StatusOK {
		tb.Fatalf("create d0: %d %s", rec.Code, rec.Body)
	}
	return e
}

func (e *fuzzService) do(method, host, path string, body []byte, ifMatch string) *httptest.ResponseRecorder {
	ver, tok := "2021-04-12", e.hubToken
	if host == fuzzDPS {
		ver, tok = "2021-10-01", e.dpsToken
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	r := httptest.NewRequest(method, "https://"+host+path+"?api-version="+ver, rd)
	r.Header.Set("Authorization", tok)
	r.Header.Set("Content-Type", "application/json")
	if ifMatch != "" {
		r.Header.Set("If-Match", ifMatch)
	}
	rec := httptest.NewRecorder()
	e.svc.ServeHTTP(rec, r)
	return rec
}

// checkAnswer: not a server error, JSON when there is a body, and an error
// in the DPS (errorCode) or hub (Message holding the details) shape.
func checkAnswer(t *testing.T, what string, rec *httptest.ResponseRecorder, hub bool) {
	t.Helper()
	body := rec.Body.Bytes()
	if rec.Code >= 500 && !(strings.HasSuffix(what, "/methods") && rec.Code == http.StatusGatewayTimeout) {
		t.Fatalf("%s: %d %s", what, rec.Code, body)
	}
	if len(body) > 0 && !json.Valid(body) {
		t.Fatalf("%s: %d answer is not JSON: %q", what, rec.Code, body)
	}
	if rec.Code < 400 {
		return
	}
	var details dpsErrorBody
	if hub {
		var h hubErrorBody
		if json.Unmarshal(body, &h) != nil || json.Unmarshal([]byte(h.Message), &details) != nil {
			t.Fatalf("%s: %d hub error body %q", what, rec.Code, body)
		}
	} else if json.Unmarshal(body, &details) != nil {
		t.Fatalf("%s: %d DPS error body %q", what, rec.Code, body)
	}
	if details.ErrorCode/1000 != rec.Code {
		t.Fatalf("%s: status %d with errorCode %d", what, rec.Code, details.ErrorCode)
	}
}

// sameJSON compares two JSON objects, ignoring the volatile members.
func sameJSON(a, b []byte, volatile []string) bool {
	var x, y map[string]any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	for _, k := range volatile {
		delete(x, k)
		delete(y, k)
	}
	ja, _ := json.Marshal(x)
	jb, _ := json.Marshal(y)
	return bytes.Equal(ja, jb)
}
