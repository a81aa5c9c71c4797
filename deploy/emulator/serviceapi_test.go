package emulator

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/reefer/tracker/deploy/emulator/service"
)

// svcClient calls the emulator's HTTPS service API as an operator would:
// trusting ca.pem, with a SAS token made from emulator.json's keys.
type svcClient struct {
	t    *testing.T
	http *http.Client
	base string
}

func newSvcClient(t *testing.T, e *Emulator) *svcClient {
	return &svcClient{t: t, base: e.Info().ServiceURL, http: &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.CACertPool()}},
	}}
}

func (c *svcClient) do(method, path, sr, policy, key string, body any) (int, []byte) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", service.SASToken(sr, policy, key, time.Now().Add(time.Hour)))
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestServiceAPIMounted drives the reference flow's operator steps over the
// mounted HTTPS API against devices speaking MQTT: a group enrollment
// created over REST admits a device, a desired patch over REST reaches it,
// and a direct method over REST is answered by it.
func TestServiceAPIMounted(t *testing.T) {
	t.Parallel()
	e := StartForTest(t)
	inf := e.Info()
	if inf.ServiceURL == "" {
		t.Fatal("no service URL in emulator.json")
	}
	svc := newSvcClient(t, e)
	dps := inf.DPS
	hub := inf.Hubs[0]

	// A wrong key is refused: the API is really SAS-protected.
	if code, _ := svc.do("GET", "/enrollmentGroups/nope?api-version=2021-10-01", dps.ServiceHostName, dps.SharedAccessKeyName, hub.SharedAccessKey, nil); code != http.StatusUnauthorized {
		t.Errorf("GET with the wrong key = %d; want 401", code)
	}

	// Reference flow step 2: upload the root CA and prove possession of its key.
	f := newFleet(t)
	if code, b := svc.do("PUT", "/certificates/groupCA-sensors?api-version=2021-10-01", dps.ServiceHostName, dps.SharedAccessKeyName, dps.SharedAccessKey,
		map[string]any{"certificate": string(f.root.PEM())}); code != http.StatusOK {
		t.Fatalf("upload CA = %d %s", code, b)
	}
	code, b := svc.do("POST", "/certificates/groupCA-sensors/generateVerificationCode?api-version=2021-10-01", dps.ServiceHostName, dps.SharedAccessKeyName, dps.SharedAccessKey, nil)
	var vc struct {
		Properties struct {
			VerificationCode string `json:"verificationCode"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(b, &vc); code != http.StatusOK || err != nil || vc.Properties.VerificationCode == "" {
		t.Fatalf("generateVerificationCode = %d %s", code, b)
	}
	proof, err := f.root.NewVerification(vc.Properties.VerificationCode)
	if err != nil {
		t.Fatal(err)
	}
	if code, b := svc.do("POST", "/certificates/groupCA-sensors/verify?api-version=2021-10-01", dps.ServiceHostName, dps.SharedAccessKeyName, dps.SharedAccessKey,
		map[string]any{"certificate": string(proof.PEM())}); code != http.StatusOK || !strings.Contains(string(b), `"isVerified":true`) {
		t.Fatalf("verify = %d %s; want 200 and isVerified", code, b)
	}

	group := map[string]any{
		"enrollmentGroupId": "enrollgroup-sensors",
		"attestation": map[string]any{"type": "x509", "x509": map[string]any{
			"signingCertificates": map[string]any{"primary": map[string]any{"certificate": string(f.inter.PEM())}}}},
		"provisioningStatus": "enabled",
		"allocationPolicy":   "static",
		"iotHubs":            []string{hub.HostName},
		"initialTwin":        map[string]any{"properties": map[string]any{"desired": map[string]any{"telemetryDelay": 1}}},
	}
	if code, b := svc.do("PUT", "/enrollmentGroups/enrollgroup-sensors?api-version=2021-10-01", dps.ServiceHostName, dps.SharedAccessKeyName, dps.SharedAccessKey, group); code != http.StatusOK {
		t.Fatalf("PUT enrollment group = %d %s; want 200", code, b)
	}

	leaf := f.leaf(t, "sensor-thl-001")
	d := dpsDial(t, e, "sensor-thl-001", leaf.TLS())
	res := provision(t, d, "sensor-thl-001")
	d.close()
	if res["status"] != "assigned" {
		t.Fatalf("registration = %v; want assigned", res)
	}

	c := mustHubDial(t, e, 0, "sensor-thl-001", leaf.TLS())
	defer c.close()
	c.subscribe(t, "$iothub/twin/PATCH/properties/desired/#")
	c.subscribe(t, "$iothub/methods/POST/#")

	code, b = svc.do("PATCH", "/twins/sensor-thl-001?api-version=2021-04-12", hub.HostName, hub.SharedAccessKeyName, hub.SharedAccessKey,
		map[string]any{"properties": map[string]any{"desired": map[string]any{"telemetryDelay": 3}}})
	if code != http.StatusOK {
		t.Fatalf("PATCH twin = %d %s", code, b)
	}
	m := c.next(t)
	if !strings.HasPrefix(m.Topic(), "$iothub/twin/PATCH/properties/desired/?$version=") || !strings.Contains(string(m.Payload()), `"telemetryDelay":3`) {
		t.Errorf("desired notification = %s %s", m.Topic(), m.Payload())
	}

	// The device answers the method the operator invokes over REST.
	type result struct {
		code int
		body []byte
	}
	done := make(chan result, 1)
	go func() {
		code, b := svc.do("POST", "/twins/sensor-thl-001/methods?api-version=2021-04-12", hub.HostName, hub.SharedAccessKeyName, hub.SharedAccessKey,
			map[string]any{"methodName": "getStatus", "payload": map[string]any{}, "responseTimeoutInSeconds": 5})
		done <- result{code, b}
	}()
	req := c.next(t)
	rid := req.Topic()[strings.Index(req.Topic(), "$rid=")+len("$rid="):]
	if err := c.publish(t, "$iothub/methods/res/200/?$rid="+rid, 0, []byte(`{"queueDepth":0}`)); err != nil {
		t.Fatal(err)
	}
	r := <-done
	var mr struct {
		Status  int             `json:"status"`
		Payload json.RawMessage `json:"payload"`
	}
	if err := json.Unmarshal(r.body, &mr); r.code != http.StatusOK || err != nil || mr.Status != 200 || string(mr.Payload) != `{"queueDepth":0}` {
		t.Errorf("method over REST = %d %s; want 200 with the device's payload", r.code, r.body)
	}
}

// TestServiceAPIPolicies uses every policy listed in emulator.json with a
// real SAS token: each reaches exactly the routes its rights allow.
func TestServiceAPIPolicies(t *testing.T) {
	t.Parallel()
	e := StartForTest(t)
	inf := e.Info()
	hub := inf.Hubs[0]
	builtin := service.BuiltinHubPolicies()
	if len(hub.Policies) != len(builtin) {
		t.Fatalf("hub policies = %v; want the %d built-in ones", hub.Policies, len(builtin))
	}
	seen := map[string]bool{}
	for p, k := range hub.Policies {
		if _, ok := builtin[p]; !ok || k == "" || seen[k] {
			t.Errorf("hub policy %q key %q: want a built-in policy with its own key", p, k)
		}
		seen[k] = true
	}
	if hub.Policies[hub.SharedAccessKeyName] != hub.SharedAccessKey || hub.ConnectionStringFor("iothubowner") != hub.ConnectionString {
		t.Errorf("owner policy %q not consistent with policies %v", hub.SharedAccessKeyName, hub.Policies)
	}
	if got := hub.ConnectionStringFor("nobody"); got != "" {
		t.Errorf("ConnectionStringFor(nobody) = %q; want empty", got)
	}
	svc := newSvcClient(t, e)
	const q = "?api-version=2021-04-12"
	dev := func(id string) map[string]any {
		return map[string]any{"deviceId": id, "authentication": map[string]any{"type": "certificateAuthority"}}
	}
	if code, b := svc.do("PUT", "/devices/dev-1"+q, hub.HostName, "iothubowner", hub.Policies["iothubowner"], dev("dev-1")); code != http.StatusOK {
		t.Fatalf("create with iothubowner = %d %s", code, b)
	}
	tests := []struct {
		policy            string
		read, write, twin int
	}{
		{"iothubowner", 200, 200, 200},
		{"registryReadWrite", 200, 200, 401},
		{"registryRead", 200, 401, 401},
		{"service", 401, 401, 200},
		{"device", 401, 401, 401},
	}
	for _, tc := range tests {
		key := hub.Policies[tc.policy]
		if code, b := svc.do("GET", "/devices/dev-1"+q, hub.HostName, tc.policy, key, nil); code != tc.read {
			t.Errorf("GET device with %s = %d %s; want %d", tc.policy, code, b, tc.read)
		}
		id := "by-" + strings.ToLower(tc.policy)
		if code, b := svc.do("PUT", "/devices/"+id+q, hub.HostName, tc.policy, key, dev(id)); code != tc.write {
			t.Errorf("PUT device with %s = %d %s; want %d", tc.policy, code, b, tc.write)
		}
		if code, b := svc.do("PATCH", "/twins/dev-1"+q, hub.HostName, tc.policy, key, map[string]any{"tags": map[string]any{"by": tc.policy}}); code != tc.twin {
			t.Errorf("PATCH twin with %s = %d %s; want %d", tc.policy, code, b, tc.twin)
		}
	}
	dps := inf.DPS
	if len(dps.Policies) != 1 || dps.Policies["provisioningserviceowner"] != dps.SharedAccessKey {
		t.Errorf("DPS policies = %v; want only provisioningserviceowner", dps.Policies)
	}
	if code, b := svc.do("POST", "/enrollmentGroups/query?api-version=2021-10-01", dps.ServiceHostName, "provisioningserviceowner", dps.Policies["provisioningserviceowner"], map[string]any{"query": "*"}); code != http.StatusOK {
		t.Errorf("DPS query with owner = %d %s", code, b)
	}
}
