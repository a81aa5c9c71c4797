package model_test

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/reefer/tracker/drivers"
	"github.com/reefer/tracker/firmware/agent"
	"github.com/reefer/tracker/firmware/agent/agenttest"
	"github.com/reefer/tracker/firmware/daemon"
	"github.com/reefer/tracker/firmware/model"
	"github.com/reefer/tracker/firmware/statequeue"
	"github.com/reefer/tracker/firmware/telemetry"
	"github.com/reefer/tracker/internal/pnp"
)

func load(t *testing.T) *model.Interface {
	t.Helper()
	in, err := model.Load()
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func TestModelIsValidAndIDIsTheOneAnnounced(t *testing.T) {
	in := load(t)
	if in.ID != model.ID {
		t.Errorf("tracker.json @id %q; the firmware announces %q", in.ID, model.ID)
	}
	var p struct {
		ModelID string `json:"modelId"`
	}
	if err := json.Unmarshal(model.DPSPayload(), &p); err != nil || p.ModelID != model.ID {
		t.Errorf("DPSPayload %s; want {\"modelId\":%q}", model.DPSPayload(), model.ID)
	}
}

// The structural check must catch what the DTDL parser would refuse.
func TestValidateRejects(t *testing.T) {
	good := string(model.JSON())
	for _, c := range []struct{ what, old, new string }{
		{"version with a leading zero", `"dtmi:reefer:tracker;2"`, `"dtmi:reefer:tracker;02"`},
		{"system segment", `"dtmi:reefer:tracker;2"`, `"dtmi:reefer:_tracker;2"`},
		{"segment ending in underscore", `"dtmi:reefer:tracker;2"`, `"dtmi:reefer_:tracker;2"`},
		{"other context", `"dtmi:dtdl:context;2"`, `"dtmi:dtdl:context;3"`},
		{"repeated name", `"name": "humidity"`, `"name": "temperature"`},
		{"invalid name", `"name": "fixQuality"`, `"name": "fix-quality"`},
		{"unit of another semantic type", `"unit": "millibar"`, `"unit": "degreeCelsius"`},
		{"semantic type unknown", `["Telemetry", "RelativeHumidity"]`, `["Telemetry", "Wetness"]`},
		{"unit without semantic type", `"schema": "integer"`, `"schema": "integer", "unit": "percent"`},
		{"semantic type on a string", `"schema": "double",
      "unit": "degreeCelsius"`, `"schema": "string",
      "unit": "degreeCelsius"`},
		{"unknown primitive", `"schema": "long"`, `"schema": "int64"`},
		{"undefined schema reference", `"schema": "dtmi:reefer:tracker:sources;1"`, `"schema": "dtmi:reefer:tracker:nowhere;1"`},
		{"misspelt member", `"writable": true`, `"writeable": true`},
		{"writable telemetry", `"name": "seq",`, `"name": "seq", "writable": true,`},
		{"repeated enum value", `{ "name": "missing", "enumValue": "missing" }`, `{ "name": "missing", "enumValue": "hardware" }`},
	} {
		doc := strings.Replace(good, c.old, c.new, 1)
		if doc == good {
			t.Fatalf("%s: %q not found in tracker.json", c.what, c.old)
		}
		if _, err := model.Parse([]byte(doc)); err == nil {
			t.Errorf("%s: Parse accepted it", c.what)
		}
	}
}

// bounds reads "Accepted: LO to HI; default D" from a writable property's
// description: DTDL v2 has no range facet, so the operator reads it there.
func bounds(t *testing.T, in *model.Interface, name string) (lo, hi, def float64) {
	t.Helper()
	c := in.Find(name)
	if c == nil || !c.Writable {
		t.Fatalf("%s: not a writable property of the model", name)
	}
	m := regexp.MustCompile(`Accepted: (-?[0-9.]+) to (-?[0-9.]+); default (-?[0-9.]+)`).FindStringSubmatch(c.Description)
	if m == nil {
		t.Fatalf("%s: description %q does not say \"Accepted: LO to HI; default D\"", name, c.Description)
	}
	f := func(s string) float64 { v, _ := strconv.ParseFloat(s, 64); return v }
	return f(m[1]), f(m[2]), f(m[3])
}

// The bounds and defaults the model states are the firmware's (one place:
// firmware/telemetry).
func TestWritableBoundsAreTheFirmwares(t *testing.T) {
	in := load(t)
	for name, want := range map[string][3]float64{
		agent.PropTelemetryDelay:  {telemetry.MinDelay.Seconds(), telemetry.MaxDelay.Seconds(), telemetry.DefaultDelay.Seconds()},
		agent.PropAlertThreshold:  {telemetry.MinAlertThreshold, telemetry.MaxAlertThreshold, telemetry.DefaultAlertThreshold},
		agent.PropAlertHysteresis: {telemetry.MinAlertHysteresis, telemetry.MaxAlertHysteresis, telemetry.DefaultAlertHysteresis},
		agent.PropAlertMinDuration: {telemetry.MinAlertMinDuration.Seconds(), telemetry.MaxAlertMinDuration.Seconds(),
			telemetry.DefaultAlertMinDuration.Seconds()},
	} {
		lo, hi, def := bounds(t, in, name)
		if [3]float64{lo, hi, def} != want {
			t.Errorf("%s: model says %v to %v, default %v; firmware/telemetry says %v to %v, default %v", name, lo, hi, def, want[0], want[1], want[2])
		}
	}
}

// runAgent starts an agent on fakes, connected, with a GPS that reports
// a problem, and returns it with its reporter.
func runAgent(t *testing.T) (*agent.Agent, *agenttest.Reporter) {
	t.Helper()
	rep := &agenttest.Reporter{}
	gps := agenttest.NewPositioner(drivers.Hardware)
	gps.SetProblem("no NMEA on /dev/serial0 for 15s")
	hum := 55.0
	a, err := agent.New(agent.Config{
		DeviceID:        "sensor-thl-001",
		FirmwareVersion: "1.2.3",
		Env:             agenttest.NewSensor(drivers.Env{TemperatureC: 4.2, PressureHPa: 1013.2, HumidityRH: &hum, Source: drivers.Hardware}),
		GPS:             gps,
		Queue:           &agenttest.Queue{},
		Publisher:       agenttest.NewPublisher(),
		Reporter:        rep,
		Clock:           agenttest.NewClock(time.Date(2026, 12, 3, 18, 0, 0, 0, time.UTC)),
		Logger:          slog.New(slog.NewTextHandler(io.Discard, nil)),
		TelemetryDelay:  telemetry.DefaultDelay,
		FlushTimeout:    time.Second,
		ReportInterval:  time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "agent running", func() bool { return a.Status().Running })
	a.SetProvisioned(time.Date(2026, 12, 3, 17, 0, 0, 0, time.UTC))
	a.SetConnected(true)
	return a, rep
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// What the tracker accepts: each writable property takes its model bounds
// and refuses a value beyond them; every desired property the agent obeys
// is a writable property of the model.
func TestWritablePropertiesAreWhatTheAgentAccepts(t *testing.T) {
	in := load(t)
	a, rep := runAgent(t)
	writable := []string{}
	for _, name := range in.Names("Property") {
		if in.Find(name).Writable {
			writable = append(writable, name)
		}
	}
	if want := []string{agent.PropTelemetryDelay, agent.PropAlertThreshold, agent.PropAlertHysteresis, agent.PropAlertMinDuration}; !slices.Equal(writable, want) {
		t.Errorf("writable properties %v; the agent obeys %v", writable, want)
	}
	version := int64(1)
	for _, name := range writable {
		lo, hi, _ := bounds(t, in, name)
		for _, v := range []float64{lo, hi} {
			version++
			if err := a.ApplyDesired(version, json.RawMessage(fmt.Sprintf(`{%q:%v}`, name, v))); err != nil {
				t.Errorf("%s = %v (a model bound) refused: %v", name, v, err)
				continue
			}
			// Answered 200 with the value, against this version.
			waitAck(t, rep, name, version, v, pnp.Accepted)
		}
		for _, v := range []float64{lo - 1, hi + 1} {
			version++
			if err := a.ApplyDesired(version, json.RawMessage(fmt.Sprintf(`{%q:%v}`, name, v))); !errors.Is(err, agent.ErrBadDesired) {
				t.Errorf("%s = %v (outside the model's bounds) = %v; want ErrBadDesired", name, v, err)
			}
			// Answered 400 with the value still in use: the upper bound.
			waitAck(t, rep, name, version, hi, pnp.Rejected)
		}
	}
}

// waitAck waits for the reported answer to a writable property at version
// and checks its code and value.
func waitAck(t *testing.T, rep *agenttest.Reporter, name string, version int64, value float64, code int) {
	t.Helper()
	var ack pnp.Ack
	waitFor(t, fmt.Sprintf("%s answered for version %d", name, version), func() bool {
		a, err := pnp.From(rep.Last()[name])
		ack = a
		return err == nil && a.Version == version
	})
	if v, ok := ack.Number(); !ok || v != value || ack.Code != code {
		t.Errorf("%s answered %+v for version %d; want value %v, ac %d", name, ack, version, value, code)
	}
}

// What the tracker reports: every member of the agent's reported document
// is a declared property with a fitting value, each writable property as
// an acknowledgement (this document carries the three answers, accepted,
// refused and no desired value, a GPS problem and a provisioning time, so
// the optional members are there too).
func TestReportedPropertiesFitTheModel(t *testing.T) {
	in := load(t)
	a, rep := runAgent(t)
	if err := a.ApplyTwin(2, json.RawMessage(`{"telemetryDelay":"fast","temperatureAlertThreshold":8,"temperatureAlertHysteresis":"0.5"}`)); !errors.Is(err, agent.ErrBadDesired) {
		t.Fatalf("bad desired = %v", err)
	}
	waitFor(t, "lastDesiredError reported", func() bool {
		s, _ := rep.Last()[agent.PropLastDesiredError].(string)
		return s != ""
	})
	codes := map[int]bool{}
	for _, name := range in.Names("Property") {
		if in.Find(name).Writable {
			ack, err := pnp.From(rep.Last()[name])
			if err != nil {
				t.Errorf("writable %s not answered: %v", name, err)
			}
			codes[ack.Code] = true
		}
	}
	if !codes[pnp.Accepted] || !codes[pnp.Rejected] || !codes[pnp.SetByDevice] {
		t.Errorf("answers with codes %v; the document should carry 200, 400 and 203", codes)
	}
	doc, err := json.Marshal(rep.Last())
	if err != nil {
		t.Fatal(err)
	}
	if err := in.CheckReported(doc); err != nil {
		t.Errorf("reported %s:\n%v", doc, err)
	}
	// The daemon adds provisioning, queueRecovered and queueInMemory; the
	// daemon's test against the emulator checks the whole twin, but sees
	// queueInMemory only while the state directory fails: check the value
	// the daemon reports then.
	fb, err := json.Marshal(map[string]any{daemon.PropQueueInMemory: statequeue.Fallback{
		Since: time.Now().UTC(), Reason: "open /var/lib/tracker/queue.db: read-only file system", Dir: "/var/lib/tracker"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := in.CheckReported(fb); err != nil {
		t.Errorf("queueInMemory %s:\n%v", fb, err)
	}
	// certificates with a DPS-issued hub certificate, one of them expired.
	now := time.Now()
	onb := &x509.Certificate{Subject: pkix.Name{CommonName: "sensor-thl-001"}, NotAfter: now.Add(400 * 24 * time.Hour)}
	op := &x509.Certificate{Subject: pkix.Name{CommonName: "sensor-thl-001"}, NotAfter: now.Add(-time.Hour)}
	cd, err := json.Marshal(map[string]any{daemon.PropCertificates: daemon.CertificatesAt(onb, op, 2.0/3, now)})
	if err != nil {
		t.Fatal(err)
	}
	if err := in.CheckReported(cd); err != nil {
		t.Errorf("certificates %s:\n%v", cd, err)
	}
	for _, name := range []string{agent.PropFirmwareVersion, agent.PropSensors, agent.PropLastProvisioned, agent.PropQueueBytes} {
		if _, ok := rep.Last()[name]; !ok {
			t.Errorf("reported document lacks %s: %s", name, doc)
		}
	}
}

// What the tracker sends: message bodies built by firmware/telemetry for
// every kind of reading fit the model, and together they use every
// declared telemetry.
func TestTelemetryFitsTheModel(t *testing.T) {
	in := load(t)
	at := time.Date(2026, 12, 3, 18, 1, 2, 345e6, time.UTC)
	hum := 81.5
	fix := &telemetry.Position{Latitude: 53.5461, Longitude: 9.9661, Quality: 1, Satellites: 9, Source: drivers.Hardware}
	samples := map[string]telemetry.Sample{
		"BME280 and a fix": {Seq: 1, Time: at, Env: drivers.Env{TemperatureC: 4.25, PressureHPa: 1012.8, HumidityRH: &hum, Source: drivers.Hardware}, Position: fix, GPSSource: drivers.Hardware},
		"BMP280, no fix":   {Seq: 2, Time: at, Env: drivers.Env{TemperatureC: -18, PressureHPa: 1001, Source: drivers.Simulated}, GPSSource: drivers.Simulated},
		"env missing":      {Seq: 3, Time: at, EnvError: "no BME280 at 0x76 or 0x77 on /dev/i2c-1", Position: fix, GPSSource: drivers.Hardware},
		"GPS missing":      {Seq: 1 << 40, Time: at, Env: drivers.Env{TemperatureC: 31, PressureHPa: 990, Source: drivers.Hardware}, GPSSource: drivers.Hardware, GPSError: "open /dev/serial0: no such file or directory"},
	}
	var bodies [][]byte
	for what, s := range samples {
		m, err := telemetry.Build("sensor-thl-001", s, telemetry.DefaultAlertThreshold)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if err := in.CheckTelemetry(m.Body); err != nil {
			t.Errorf("%s: body %s:\n%v", what, m.Body, err)
		}
		bodies = append(bodies, m.Body)
	}
	// Alert messages (docs/alerts.md) are telemetry too.
	temp := 8.42
	for _, a := range []telemetry.Alert{
		{Seq: 5, Kind: telemetry.AlertTemperature, Active: true, Time: at, Since: at.Add(-30 * time.Second), Temperature: &temp,
			Threshold: 8, Hysteresis: 1, MinDuration: 30 * time.Second},
		{Seq: 6, Kind: telemetry.AlertEnvSensor, Active: true, Time: at, Since: at, Reason: "bme280: read: i2c: no such device"},
		{Seq: 7, Kind: telemetry.AlertGPS, Active: false, Time: at, Since: at},
	} {
		m, err := telemetry.BuildAlert("sensor-thl-001", a)
		if err != nil {
			t.Fatalf("%s alert: %v", a.Kind, err)
		}
		if err := in.CheckTelemetry(m.Body); err != nil {
			t.Errorf("%s alert: body %s:\n%v", a.Kind, m.Body, err)
		}
		bodies = append(bodies, m.Body)
	}
	if un := in.Unused("Telemetry", bodies...); un != nil {
		t.Errorf("telemetry %v declared but no message carries it", un)
	}
}

// The checks can fail: bodies and documents the model does not describe.
func TestChecksRejectWhatTheModelDoesNotDescribe(t *testing.T) {
	in := load(t)
	for _, body := range []string{
		`{"temperature":"4.2"}`,
		`{"temp":4.2}`,
		`{"seq":1.5}`,
		`{"satellites":4294967296}`,
		`{"timestamp":"yesterday"}`,
		`{"source":{"env":"imagined","gps":"hardware"}}`,
		`{"source":{"env":"hardware","gps":"hardware","extra":1}}`,
		`{"telemetryDelay":10}`,
		`{"temperature":null}`,
	} {
		if err := in.CheckTelemetry([]byte(body)); err == nil {
			t.Errorf("CheckTelemetry(%s) = nil; want an error", body)
		}
	}
	for _, doc := range []string{
		`{"telemetryDelay":"10"}`,
		// A writable property is answered as an acknowledgement: model
		// version 1's plain value, or one that is not whole, is drift.
		`{"telemetryDelay":10}`,
		`{"telemetryDelay":{"value":"10","ac":200,"av":3}}`,
		`{"telemetryDelay":{"value":10,"ac":200}}`,
		`{"telemetryDelay":{"value":10,"ac":200,"av":3,"ad":"applied","extra":1}}`,
		`{"temperatureAlertThreshold":{"value":null,"ac":400,"av":3}}`,
		// A read-only property is not.
		`{"queueDepth":{"value":1,"ac":200,"av":3}}`,
		`{"queueDepth":-1.5}`,
		`{"provisioning":{"phase":"lost"}}`,
		`{"temperature":4}`,
		`{"colour":"blue"}`,
	} {
		if err := in.CheckReported([]byte(doc)); err == nil {
			t.Errorf("CheckReported(%s) = nil; want an error", doc)
		}
	}
	if un := in.Unused("Telemetry", []byte(`{"seq":1}`), []byte(`[]`)); len(un) != len(in.Names("Telemetry"))-1 || slices.Contains(un, "seq") {
		t.Errorf("Unused = %v; want every telemetry but seq", un)
	}
	if err := in.CheckReported([]byte(`{"lastDesiredError":null,"$version":4}`)); err != nil {
		t.Errorf("a null (deletion) and $version: %v", err)
	}
	if err := in.CheckReported([]byte(`{"telemetryDelay":{"value":10,"ac":200,"av":3,"ad":"applied"},"temperatureAlertThreshold":{"value":30,"ac":203,"av":0}}`)); err != nil {
		t.Errorf("acknowledgements: %v", err)
	}
	if err := in.CheckResponse("reboot", []byte(`{}`)); err == nil {
		t.Error("CheckResponse of an undeclared command = nil")
	}
	if err := in.CheckResponse("sendNow", []byte(`{"messageId":7}`)); err == nil {
		t.Error("CheckResponse(sendNow, messageId 7) = nil")
	}
}
