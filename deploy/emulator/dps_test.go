package emulator

import (
	"crypto/tls"
	"fmt"
	"sync"
	"testing"

	"github.com/reefer/tracker/deploy/emulator/store"
)

func TestDPSAssignsAndHubAccepts(t *testing.T) {
	t.Parallel()
	e := StartForTest(t)
	f := newFleet(t)
	if _, err := e.EnrollGroup("fleet", f.root.Cert, func(g *store.EnrollmentGroup) {
		g.InitialTwin = &store.InitialTwin{Properties: store.InitialTwinProperties{Desired: map[string]any{"interval": 30}}}
	}); err != nil {
		t.Fatal(err)
	}
	dev := f.leaf(t, "dev-0001")
	c := dpsDial(t, e, "dev-0001", dev.TLS())
	r := c.dpsRequest(t, registerTopic("1"), []byte(`{"registrationId":"dev-0001","payload":{"modelId":"dtmi:x;1"}}`))
	if r.status != 202 || r.rid != "1" || !r.hasRetry || r.body["status"] != "assigning" || r.body["operationId"] == "" {
		t.Fatalf("register response = %d rid=%q retry=%v %s; want 202 rid=1 retry-after assigning", r.status, r.rid, r.hasRetry, r.raw)
	}
	p := c.dpsRequest(t, pollTopic("7", r.body["operationId"].(string)), nil)
	if p.status != 200 || p.rid != "7" || p.body["status"] != "assigned" {
		t.Fatalf("poll = %d %s; want 200 assigned", p.status, p.raw)
	}
	rs := p.body["registrationState"].(map[string]any)
	x509 := rs["x509"].(map[string]any)
	if rs["assignedHub"] != e.HubHost(0) || rs["deviceId"] != "dev-0001" || rs["substatus"] != "initialAssignment" ||
		rs["registrationId"] != "dev-0001" || x509["enrollmentGroupId"] != "fleet" || rs["etag"] == nil || rs["createdDateTimeUtc"] == nil {
		t.Errorf("registrationState = %v", rs)
	}
	c.close()

	hc := mustHubDial(t, e, 0, "dev-0001", dev.TLS())
	hc.subscribe(t, "$iothub/twin/res/#")
	if err := hc.publish(t, "$iothub/twin/GET/?$rid=g1", 0, nil); err != nil {
		t.Fatal(err)
	}
	m := hc.next(t)
	if m.Topic() != "$iothub/twin/res/200/?$rid=g1" || string(m.Payload()) != `{"desired":{"$version":2,"interval":30},"reported":{"$version":1}}` {
		t.Errorf("twin GET = %s %s; want initial twin", m.Topic(), m.Payload())
	}
}

func TestDPSRefusals(t *testing.T) {
	t.Parallel()
	e := StartForTest(t)
	f := newFleet(t)
	other := newFleet(t)
	if _, err := e.EnrollGroup("fleet", f.root.Cert, nil); err != nil {
		t.Fatal(err)
	}
	blocked := f.leaf(t, "blocked-1")
	if _, err := e.EnrollDevice(blocked.Cert, func(en *store.IndividualEnrollment) { en.ProvisioningStatus = store.StatusDisabled }); err != nil {
		t.Fatal(err)
	}
	good := f.leaf(t, "dev-1")
	cases := []struct {
		name       string
		rid        string
		cert       tls.Certificate
		body       string
		wantStatus int
		wantCode   float64
	}{
		{"unknown CA", "x-1", other.leaf(t, "x-1").TLS(), `{"registrationId":"x-1"}`, 401, 401002},
		{"missing intermediate", "dev-2", f.leaf(t, "dev-2").TLSWith(), `{"registrationId":"dev-2"}`, 401, 401002},
		{"malformed body", "dev-1", good.TLS(), `{"registrationId":`, 400, 400004},
		{"registration id not the CN", "dev-other", good.TLS(), `{"registrationId":"dev-other"}`, 400, 400004},
		{"body id differs from user name", "dev-1", good.TLS(), `{"registrationId":"dev-9"}`, 400, 400004},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dpsDial(t, e, tc.rid, tc.cert)
			r := c.dpsRequest(t, registerTopic("1"), []byte(tc.body))
			if r.status != tc.wantStatus || r.body["errorCode"] != tc.wantCode || r.body["trackingId"] == nil {
				t.Errorf("register(%s) = %d %s; want %d errorCode %v", tc.name, r.status, r.raw, tc.wantStatus, tc.wantCode)
			}
		})
	}
	t.Run("disabled enrollment", func(t *testing.T) {
		c := dpsDial(t, e, "blocked-1", blocked.TLS())
		body := provision(t, c, "blocked-1")
		rs := body["registrationState"].(map[string]any)
		if body["status"] != "disabled" || rs["status"] != "disabled" || rs["assignedHub"] != nil {
			t.Errorf("disabled enrollment result = %v; want status disabled, no hub", body)
		}
	})
	t.Run("unknown operation", func(t *testing.T) {
		c := dpsDial(t, e, "dev-1", good.TLS())
		r := c.dpsRequest(t, pollTopic("1", "4.nope"), nil)
		if r.status != 404 {
			t.Errorf("poll unknown operation = %d %s; want 404", r.status, r.raw)
		}
	})
	t.Run("connect refusals", func(t *testing.T) {
		for name, o := range map[string]dialOpts{
			"wrong scope":        {clientID: "dev-1", username: "0neFFFFFFFF/registrations/dev-1/api-version=2019-03-31", cert: good.TLS()},
			"client id mismatch": {clientID: "dev-2", username: e.IDScope() + "/registrations/dev-1/api-version=2019-03-31", cert: good.TLS()},
			"password":           {clientID: "dev-1", username: e.IDScope() + "/registrations/dev-1/api-version=2019-03-31", password: "x", cert: good.TLS()},
		} {
			o.clean = true
			if _, err := dial(t, e, e.DPSEndpoint(), o); !isNotAuthorized(err) {
				t.Errorf("DPS connect (%s) = %v; want CONNACK 5", name, err)
			}
		}
		if _, err := dial(t, e, e.DPSEndpoint(), dialOpts{clientID: "dev-1", username: e.IDScope() + "/registrations/dev-1/api-version=2019-03-31", clean: true}); err == nil {
			t.Error("DPS connect without a client certificate succeeded")
		}
	})
}

func TestDPSPollThrottle(t *testing.T) {
	t.Parallel()
	e := StartForTest(t)
	f := newFleet(t)
	if _, err := e.EnrollGroup("fleet", f.root.Cert, nil); err != nil {
		t.Fatal(err)
	}
	dev := f.leaf(t, "dev-1")
	c := dpsDial(t, e, "dev-1", dev.TLS())
	r := c.dpsRequest(t, registerTopic("1"), []byte(`{"registrationId":"dev-1"}`))
	op := r.body["operationId"].(string)
	for i := 0; i < 5; i++ {
		if p := c.dpsRequest(t, pollTopic("p", op), nil); p.status != 200 {
			t.Fatalf("poll #%d = %d; want 200", i+1, p.status)
		}
	}
	p := c.dpsRequest(t, pollTopic("p", op), nil)
	if p.status != 429 || !p.hasRetry || p.retryAfter < 1 || p.body["errorCode"] != float64(429001) {
		t.Errorf("6th poll in 10 s = %d retry=%d %s; want 429 with retry-after", p.status, p.retryAfter, p.raw)
	}
}

func TestDPSRegistrationRateLimit(t *testing.T) {
	t.Parallel()
	e := StartForTest(t, func(c *Config) { c.RegistrationsPerMinute = 2 })
	f := newFleet(t)
	if _, err := e.EnrollGroup("fleet", f.root.Cert, nil); err != nil {
		t.Fatal(err)
	}
	var got []int
	for i := 0; i < 3; i++ {
		id := fmt.Sprintf("dev-%d", i)
		c := dpsDial(t, e, id, f.leaf(t, id).TLS())
		r := c.dpsRequest(t, registerTopic("1"), []byte(`{"registrationId":"`+id+`"}`))
		got = append(got, r.status)
		if i == 2 && (!r.hasRetry || r.retryAfter < 1) {
			t.Errorf("throttled register has retry-after %d; want >= 1", r.retryAfter)
		}
	}
	if fmt.Sprint(got) != "[202 202 429]" {
		t.Errorf("register statuses = %v; want [202 202 429]", got)
	}
}

func TestDPSAssignDelayKeepsAssigning(t *testing.T) {
	t.Parallel()
	e := StartForTest(t, func(c *Config) { c.AssignDelay = 1500 * 1e6 }) // 1.5 s
	f := newFleet(t)
	if _, err := e.EnrollGroup("fleet", f.root.Cert, nil); err != nil {
		t.Fatal(err)
	}
	c := dpsDial(t, e, "dev-1", f.leaf(t, "dev-1").TLS())
	r := c.dpsRequest(t, registerTopic("1"), []byte(`{"registrationId":"dev-1"}`))
	p := c.dpsRequest(t, pollTopic("2", r.body["operationId"].(string)), nil)
	if p.status != 202 || p.body["status"] != "assigning" || !p.hasRetry {
		t.Errorf("early poll = %d %s; want 202 assigning with retry-after", p.status, p.raw)
	}
}

func TestDPSConcurrentRegistrationsAcrossHubs(t *testing.T) {
	t.Parallel()
	e := StartForTest(t, func(c *Config) { c.Hubs = 2 })
	f := newFleet(t)
	if _, err := e.EnrollGroup("fleet", f.root.Cert, nil); err != nil {
		t.Fatal(err)
	}
	const n = 16
	hubs := make([]string, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			id := fmt.Sprintf("dev-%02d", i)
			dev := f.leaf(t, id)
			c := dpsDial(t, e, id, dev.TLS())
			body := provision(t, c, id)
			rs := body["registrationState"].(map[string]any)
			hubs[i], _ = rs["assignedHub"].(string)
			idx := 0
			if hubs[i] == e.HubHost(1) {
				idx = 1
			}
			// The assigned hub (host:port) accepts the device as-is.
			hc := mustHubDial(t, e, idx, id, dev.TLS())
			if err := hc.publish(t, "devices/"+id+"/messages/events/", 1, []byte("{}")); err != nil {
				t.Errorf("telemetry %s: %v", id, err)
			}
		}(i)
	}
	wg.Wait()
	seen := map[string]int{}
	for _, h := range hubs {
		seen[h]++
	}
	if seen[e.HubHost(0)] == 0 || seen[e.HubHost(1)] == 0 || seen[e.HubHost(0)]+seen[e.HubHost(1)] != n {
		t.Errorf("assigned hubs = %v; want both %s and %s", seen, e.HubHost(0), e.HubHost(1))
	}
	if l := e.Store().ListRegistrations("fleet"); len(l) != n {
		t.Errorf("registration records = %d; want %d", len(l), n)
	}
}
