package emulator

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/reefer/tracker/deploy/emulator/store"
)

func TestRestartKeepsState(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := Config{DataDir: dir, MQTTAddr: "127.0.0.1:0", HTTPSAddr: "127.0.0.1:0", Hubs: 2, RetryAfter: -1, Logger: testLogger(), TelemetryHistory: 2}
	start := func() *Emulator {
		e, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		return e
	}
	e := start()
	f := newFleet(t)
	if _, err := e.EnrollGroup("fleet", f.root.Cert, func(g *store.EnrollmentGroup) { g.IoTHubs = []string{e.HubHost(1)} }); err != nil {
		t.Fatal(err)
	}
	dev := f.leaf(t, "dev-1")
	c := dpsDial(t, e, "dev-1", dev.TLS())
	body := provision(t, c, "dev-1")
	assigned := body["registrationState"].(map[string]any)["assignedHub"].(string)
	hc := mustHubDial(t, e, 1, "dev-1", dev.TLS())
	hc.subscribe(t, "$iothub/twin/res/#")
	if err := hc.publish(t, "$iothub/twin/PATCH/properties/reported/?$rid=1", 0, []byte(`{"fw":"7"}`)); err != nil {
		t.Fatal(err)
	}
	hc.next(t)
	for _, b := range []string{`{"n":1}`, `{"n":2}`, `{"n":3}`} {
		if err := hc.publish(t, "devices/dev-1/messages/events/", 1, []byte(b)); err != nil {
			t.Fatal(err)
		}
	}
	tel := e.Telemetry(assigned, "dev-1") // PUBACKed, so recorded
	if len(tel) != 2 || string(tel[1].Body) != `{"n":3}` {
		t.Fatalf("telemetry before restart = %d messages; want the newest 2 (TelemetryHistory)", len(tel))
	}
	before := e.Info()
	caBefore, _ := os.ReadFile(before.CACertPath)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	hc.expectLost(t, "emulator closed")

	e = start()
	defer e.Close()
	after := e.Info()
	caAfter, _ := os.ReadFile(after.CACertPath)
	if after.DPS.DeviceEndpoint != before.DPS.DeviceEndpoint || after.Hubs[1].HostName != assigned ||
		after.DPS.IDScope != before.DPS.IDScope || after.Hubs[0].ConnectionString != before.Hubs[0].ConnectionString ||
		string(caAfter) != string(caBefore) || !reflect.DeepEqual(after.Hubs[1].Policies, before.Hubs[1].Policies) ||
		!reflect.DeepEqual(after.DPS.Policies, before.DPS.Policies) {
		t.Errorf("info changed across restart:\nbefore %+v\nafter  %+v", before, after)
	}
	if st, err := e.Store().GetRegistration("dev-1"); err != nil || st.AssignedHub != assigned {
		t.Errorf("registration after restart = %+v, %v", st, err)
	}
	if got := e.Telemetry(assigned, "dev-1"); len(got) != 2 || string(got[0].Body) != `{"n":2}` || string(got[1].Body) != `{"n":3}` ||
		!got[1].EnqueuedTime.Equal(tel[1].EnqueuedTime.Time) || got[1].SystemProperties["iothub-connection-device-id"] != "dev-1" {
		t.Errorf("telemetry after restart = %+v; want %+v", got, tel)
	}
	// The device reconnects to its cached hub with the same certificate.
	hc = mustHubDial(t, e, 1, "dev-1", dev.TLS())
	hc.subscribe(t, "$iothub/twin/res/#")
	if err := hc.publish(t, "$iothub/twin/GET/?$rid=g", 0, nil); err != nil {
		t.Fatal(err)
	}
	if m := hc.next(t); !strings.Contains(string(m.Payload()), `"fw":"7"`) {
		t.Errorf("twin after restart = %s; want reported fw=7", m.Payload())
	}
	var onDisk Info
	b, err := os.ReadFile(filepath.Join(dir, "emulator.json"))
	if err != nil || json.Unmarshal(b, &onDisk) != nil || onDisk.DPS.IDScope != after.DPS.IDScope || len(onDisk.Hubs) != 2 ||
		len(onDisk.Hubs[0].Policies) != 5 || onDisk.Hubs[0].Policies["registryRead"] != after.Hubs[0].Policies["registryRead"] ||
		onDisk.DPS.Policies["provisioningserviceowner"] != after.DPS.SharedAccessKey {
		t.Errorf("emulator.json = %s, %v", b, err)
	}
}

func TestPortInUseIsAClearError(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = New(Config{DataDir: t.TempDir(), MQTTAddr: ln.Addr().String(), HTTPSAddr: "-"})
	if err == nil || !strings.Contains(err.Error(), "already in use") {
		t.Errorf("New on a taken port = %v; want an 'already in use' error", err)
	}
	_, err = New(Config{DataDir: t.TempDir(), MQTTAddr: "127.0.0.1:0", HTTPSAddr: ln.Addr().String()})
	if err == nil || !strings.Contains(err.Error(), "https") {
		t.Errorf("New with the HTTPS port taken = %v; want an https listener error", err)
	}
}

func TestServiceHandlerMounted(t *testing.T) {
	t.Parallel()
	e := StartForTest(t, func(c *Config) {
		c.ServiceHandler = func(e *Emulator) http.Handler {
			// Info is complete when the handler is built.
			scope := e.Info().DPS.IDScope
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = w.Write([]byte(scope))
			})
		}
	})
	cl := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.CACertPool()}}}
	resp, err := cl.Get(e.Info().ServiceURL + "/anything")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if string(b) != e.IDScope() {
		t.Errorf("service handler answered %q; want the ID scope", b)
	}
}
