package emulator

import (
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/reefer/tracker/deploy/emulator/store"
)

// FuzzMQTTUsername: the CONNECT user name and client id are the first bytes
// a client sends, before any authorization. Whatever they hold, neither the
// DPS check (docs/protocol.md A.1) nor the hub parser (docs/protocol.md B.1) panics; a DPS
// connection is admitted only for the emulator's ID scope with client id =
// the registration id of the user name, which must be valid; and a hub
// user name splits into parts that rebuild it, with at most maxUserParams
// parameters that net/url encodes and parses back unchanged.
// Seeds: testdata/fuzz/FuzzMQTTUsername/ (what the SDKs and the tracker send).
func FuzzMQTTUsername(f *testing.F) {
	f.Add("0ne00000001/registrations/sensor-thl-001/api-version=2019-03-31", "sensor-thl-001")
	f.Add("0ne00000001/registrations/sensor-thl-001/api-version=2019-03-31&ClientVersion=azure-iot-device%2F1.0", "sensor-thl-001")
	f.Add("0ne00000001/registrations/sensor-thl-001/api-version=2025-07-01-preview", "sensor-thl-001")
	f.Add("hub1.localhost:8884/sensor-thl-001/?api-version=2021-04-12&DeviceClientType=reefer-tracker", "sensor-thl-001")
	f.Add("hub/d/m/?api-version=2021-04-12&model-id=dtmi%3Aexample%3Ax%3B1", "d/m")
	f.Add("hub/d/?api-version=2020-09-30&model-id=dtmi:com:example:Thermostat;1", "d")
	d := &dpsService{e: &Emulator{sec: secrets{IDScope: "0ne00000001"}}}
	f.Fuzz(func(t *testing.T, user, clientID string) {
		if isDPSUsername(user) {
			rid, apiVersion, err := d.authenticate(user, clientID)
			if err == nil {
				parts := strings.SplitN(user, "/", 4)
				if !strings.EqualFold(parts[0], "0ne00000001") || rid != parts[2] || rid != clientID || !store.ValidRegistrationID(rid) {
					t.Fatalf("DPS admitted user %q client %q as %q", user, clientID, rid)
				}
				if apiVersion == "" || !strings.HasPrefix(parts[3], "api-version="+apiVersion) {
					t.Fatalf("DPS user %q gave api-version %q", user, apiVersion)
				}
			}
		}
		host, device, module, q, err := parseHubUsername(user)
		if err != nil {
			return
		}
		rebuilt := host + "/" + device
		if module != "" {
			rebuilt += "/" + module
		}
		if !strings.HasPrefix(user, rebuilt+"/?") || strings.Contains(host, "/") || strings.Contains(device, "/") {
			t.Fatalf("user %q split into host %q device %q module %q", user, host, device, module)
		}
		n := 0
		for _, vs := range q {
			n += len(vs)
		}
		if n > maxUserParams {
			t.Fatalf("user %q accepted with %d parameters", user, n)
		}
		again, err := url.ParseQuery(q.Encode())
		if err != nil || !reflect.DeepEqual(again, q) {
			t.Fatalf("parameters %q re-encode as %q (%v)", q, again, err)
		}
	})
}

// FuzzPropertyBag: a device's telemetry property bag (docs/protocol.md B.3) parses or
// is refused without panicking; the application properties of a parsed
// bag, written as a C2D bag (docs/protocol.md B.4) and parsed again, are the same; and
// that C2D bag stays inside its topic level.
func FuzzPropertyBag(f *testing.F) {
	f.Add("$.mid=sensor-thl-001-17&$.ct=application%2Fjson&$.ce=utf-8&temperatureAlert=false")
	f.Add("%24.mid=1&%24.ctime=2026-12-03T10%3A00%3A00.000Z&a%20b=c%2Bd&bare")
	f.Fuzz(func(t *testing.T, bag string) {
		_, app, err := parsePropertyBag(bag)
		if err != nil {
			return
		}
		enc := encodePropertyBag(nil, app)
		if strings.ContainsAny(enc, "/#+\x00") {
			t.Fatalf("C2D bag %q of %q leaves its topic level or has a wildcard", enc, bag)
		}
		_, again, err := parsePropertyBag(enc)
		if err != nil {
			t.Fatalf("our bag %q does not parse: %v", enc, err)
		}
		if len(again) != len(app) {
			t.Fatalf("%q: %v became %v", bag, app, again)
		}
		for k, v := range app {
			if again[k] != v {
				t.Fatalf("%q: %v became %v", bag, app, again)
			}
		}
	})
}
