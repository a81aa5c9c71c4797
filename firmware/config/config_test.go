package config

import (
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/reefer/tracker/drivers"
)

const path = "/etc/tracker/tracker.json" // as it appears in errors

// minimal is the smallest valid file.
const minimal = `{"version": 1, "idScope": "0ne00000A0A", "certFile": "/etc/tracker/c.pem", "keyFile": "/etc/tracker/k.pem"}`

// valid returns a valid config as if read from path.
func valid(t *testing.T) *Config {
	t.Helper()
	c, err := Parse(path, []byte(minimal))
	if err != nil {
		t.Fatalf("Parse(minimal) = %v", err)
	}
	return c
}

func TestExampleLoads(t *testing.T) {
	t.Parallel()
	c, err := Load("example.json", nil, Overrides{})
	if err != nil {
		t.Fatalf("Load(example.json) = %v", err)
	}
	if c.IDScope != "0ne00000A0A" || c.Sensors.GPS.Port != "/dev/serial0" || c.Sensors.Env.Bus != "1" ||
		c.CertificateIssuance.Enabled || c.CertificateIssuance.RenewAt != 0.667 {
		t.Errorf("Load(example.json) = %+v; want the example's values", c)
	}
	if c.Path() != "example.json" {
		t.Errorf("Path() = %q; want example.json", c.Path())
	}
}

// allKeys lists the dotted JSON keys of t's leaves.
func allKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || !f.IsExported() {
			continue
		}
		if f.Type.Kind() == reflect.Struct {
			keys = append(keys, allKeys(f.Type, prefix+name+".")...)
		} else {
			keys = append(keys, prefix+name)
		}
	}
	return keys
}

func rawKeys(m map[string]any, prefix string) []string {
	var keys []string
	for k, v := range m {
		if sub, ok := v.(map[string]any); ok {
			keys = append(keys, rawKeys(sub, prefix+k+".")...)
		} else {
			keys = append(keys, prefix+k)
		}
	}
	return keys
}

// The example and the package doc are the documentation: they must show
// every key.
func TestExampleAndDocCoverEveryKey(t *testing.T) {
	t.Parallel()
	want := allKeys(reflect.TypeFor[Config](), "")
	sort.Strings(want)

	data, err := os.ReadFile("example.json")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	got := rawKeys(m, "")
	sort.Strings(got)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("example.json keys = %v; want %v", got, want)
	}

	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range want {
		if !strings.Contains(string(doc), `"`+k+`"`) {
			t.Errorf("doc.go does not document key %q", k)
		}
	}
	for _, ov := range overrides {
		line := ov.key + " "
		if !strings.Contains(string(doc), ov.env) || !strings.Contains(string(doc), "--"+ov.flag) || !strings.Contains(string(doc), line) {
			t.Errorf("doc.go does not list override %s / %s / --%s", ov.key, ov.env, ov.flag)
		}
	}
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	c := valid(t)
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate(minimal) = %v", err)
	}
	want := Default()
	want.IDScope, want.CertFile, want.KeyFile = "0ne00000A0A", "/etc/tracker/c.pem", "/etc/tracker/k.pem"
	want.path = path
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Parse(minimal) = %+v; want %+v", c, want)
	}
	checks := []struct {
		name string
		got  any
		want any
	}{
		{"DPSEndpoint", c.DPSEndpoint, "global.azure-devices-provisioning.net:8883"},
		{"StateDir", c.StateDir, "/var/lib/tracker"},
		{"GPS.Port", c.Sensors.GPS.Port, "/dev/serial0"},
		{"GPS.Baud", c.Sensors.GPS.Baud, 9600},
		{"Env.Mode", c.Sensors.Env.Mode, drivers.Auto},
		{"TelemetryInterval()", c.TelemetryInterval(), 10 * time.Second},
		{"TemperatureAlertThreshold", c.TemperatureAlertThreshold, 30.0},
		{"ReprovisionRetry.MinDuration()", c.ReprovisionRetry.MinDuration(), 5 * time.Minute},
		{"ReprovisionRetry.MaxDuration()", c.ReprovisionRetry.MaxDuration(), time.Hour},
		{"SlogLevel()", c.SlogLevel(), slog.LevelInfo},
		{"CAFile", c.CAFile, ""},
	}
	for _, tt := range checks {
		if tt.got != tt.want {
			t.Errorf("default %s = %v; want %v", tt.name, tt.got, tt.want)
		}
	}
	// An explicit value, even one equal to a zero, replaces the default.
	c, err := Parse(path, []byte(`{"version":1,"temperatureAlertThreshold":0,"logLevel":"debug"}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.TemperatureAlertThreshold != 0 || c.SlogLevel() != slog.LevelDebug {
		t.Errorf("explicit threshold 0, debug = %v, %v; want 0, DEBUG", c.TemperatureAlertThreshold, c.SlogLevel())
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in string
		want     string // the whole error
	}{
		{"empty", ``,
			`config /etc/tracker/tracker.json: invalid JSON: the file is empty or ends too early`},
		{"not an object", `[1]`,
			`config /etc/tracker/tracker.json: must be a JSON object like {"version": 1, ...}`},
		{"syntax", "{\n  \"version\": 1,\n  \"idScope\": \"x\",,\n}",
			`config /etc/tracker/tracker.json: line 3, column 18: invalid JSON: invalid character ',' looking for beginning of object key string`},
		{"truncated", "{\"version\": 1,",
			`config /etc/tracker/tracker.json: invalid JSON: the file is empty or ends too early`},
		{"trailing data", `{"version":1} {}`,
			`config /etc/tracker/tracker.json: unexpected data after the closing }`},
		{"no version", `{"idScope":"x"}`,
			`config /etc/tracker/tracker.json: key "version": required; add "version": 1`},
		{"version 2", `{"version":2}`,
			`config /etc/tracker/tracker.json: key "version": must be 1 (the only version this firmware reads), got 2`},
		{"version string", `{"version":"1"}`,
			`config /etc/tracker/tracker.json: key "version": must be 1 (the only version this firmware reads), got "1"`},
		{"unknown key", `{"version":1,"telemetryDelai":5}`,
			`config /etc/tracker/tracker.json: key "telemetryDelai": unknown key; remove it or use one of: caFile, certFile, certificateIssuance, dpsEndpoint, idScope, keyFile, logLevel, queue, reprovisionRetry, sensors, stateDir, telemetryDelay, temperatureAlertHysteresis, temperatureAlertMinDuration, temperatureAlertThreshold, version`},
		{"wrong case", `{"version":1,"TelemetryDelay":5}`,
			`config /etc/tracker/tracker.json: key "TelemetryDelay": unknown key; did you mean "telemetryDelay"? (keys are case-sensitive)`},
		{"unknown nested key", `{"version":1,"sensors":{"env":{"adress":119}}}`,
			`config /etc/tracker/tracker.json: key "sensors.env.adress": unknown key; remove it or use one of: address, bus, mode`},
		{"null", `{"version":1,"queue":{"maxBytes":null}}`,
			`config /etc/tracker/tracker.json: key "queue.maxBytes": must not be null; remove the key to use the default`},
		{"string for number", `{"version":1,"sensors":{"gps":{"baud":"9600"}}}`,
			`config /etc/tracker/tracker.json: key "sensors.gps.baud": must be a whole number, got string`},
		{"fraction for int", `{"version":1,"telemetryDelay":2.5}`,
			`config /etc/tracker/tracker.json: key "telemetryDelay": must be a whole number, got number 2.5`},
		{"number for string", `{"version":1,"idScope":42}`,
			`config /etc/tracker/tracker.json: key "idScope": must be a string, got number`},
		{"scalar for object", `{"version":1,"queue":5}`,
			`config /etc/tracker/tracker.json: key "queue": must be an object, got number`},
		{"retry not a duration", `{"version":1,"reprovisionRetry":{"min":"soon"}}`,
			`config /etc/tracker/tracker.json: key "reprovisionRetry.min": must be whole minutes (a number) or a duration like "30s", got string "soon"`},
		{"issuance not a bool", `{"version":1,"certificateIssuance":{"enabled":"yes"}}`,
			`config /etc/tracker/tracker.json: key "certificateIssuance.enabled": must be true or false, got string`},
		{"retry fraction of minutes", `{"version":1,"reprovisionRetry":{"max":1.5}}`,
			`config /etc/tracker/tracker.json: key "reprovisionRetry.max": must be whole minutes (a number) or a duration like "30s", got number 1.5`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse(path, []byte(tt.in))
			if err == nil {
				t.Fatalf("Parse(%q) = %+v, nil; want error %q", tt.in, c, tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("Parse(%q) error =\n  %s\nwant\n  %s", tt.in, err, tt.want)
			}
		})
	}
}

// reprovisionRetry takes whole minutes as it always did, or a duration
// string for less than a minute; both round-trip in the form written.
func TestReprovisionRetryMinutesOrDuration(t *testing.T) {
	t.Parallel()
	for in, want := range map[string][2]time.Duration{
		`{"version":1,"reprovisionRetry":{"min":2,"max":30}}`:          {2 * time.Minute, 30 * time.Minute},
		`{"version":1,"reprovisionRetry":{"min":"20s","max":"1m30s"}}`: {20 * time.Second, 90 * time.Second},
		`{"version":1,"reprovisionRetry":{"min":"3s"}}`:                {3 * time.Second, 60 * time.Minute},
	} {
		c, err := Parse(path, []byte(in))
		if err != nil {
			t.Fatalf("Parse(%s) = %v", in, err)
		}
		if got := [2]time.Duration{c.ReprovisionRetry.MinDuration(), c.ReprovisionRetry.MaxDuration()}; got != want {
			t.Errorf("Parse(%s): retry %v; want %v", in, got, want)
		}
	}
	b, err := json.Marshal(Retry{Min: Minutes(20 * time.Second), Max: Mins(60)})
	if err != nil || string(b) != `{"min":"20s","max":60}` {
		t.Errorf("Marshal = %s, %v", b, err)
	}
}

func TestTwoUnknownKeysBothReported(t *testing.T) {
	t.Parallel()
	_, err := Parse(path, []byte(`{"version":1,"a":1,"sensors":{"gps":{"b":2}}}`))
	for _, k := range []string{`key "a"`, `key "sensors.gps.b"`} {
		if err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("Parse(two unknown keys) = %v; want it to name %s", err, k)
		}
	}
}

func TestValidateErrors(t *testing.T) {
	t.Parallel()
	const p = `config /etc/tracker/tracker.json: `
	tests := []struct {
		name   string
		change func(c *Config)
		want   string
	}{
		{"version", func(c *Config) { c.Version = 0 }, p + `key "version": must be 1, got 0`},
		{"idScope missing", func(c *Config) { c.IDScope = "" },
			p + `key "idScope": required: the DPS ID scope, e.g. "0ne00000A0A" (az iot dps show --name <dps> --query properties.idScope), or set TRACKER_ID_SCOPE`},
		{"idScope chars", func(c *Config) { c.IDScope = "0ne/000" }, p + `key "idScope": must contain only letters and digits, got "0ne/000"`},
		{"dpsEndpoint no port", func(c *Config) { c.DPSEndpoint = "global.azure-devices-provisioning.net" },
			p + `key "dpsEndpoint": must be host:port without a scheme, e.g. "global.azure-devices-provisioning.net:8883", got "global.azure-devices-provisioning.net"`},
		{"dpsEndpoint scheme", func(c *Config) { c.DPSEndpoint = "mqtts://dps:8883" },
			p + `key "dpsEndpoint": must be host:port without a scheme, e.g. "global.azure-devices-provisioning.net:8883", got "mqtts://dps:8883"`},
		{"dpsEndpoint port 0", func(c *Config) { c.DPSEndpoint = "dps:0" },
			p + `key "dpsEndpoint": must be host:port without a scheme, e.g. "global.azure-devices-provisioning.net:8883", got "dps:0"`},
		{"dpsEndpoint no host", func(c *Config) { c.DPSEndpoint = ":8883" },
			p + `key "dpsEndpoint": must be host:port without a scheme, e.g. "global.azure-devices-provisioning.net:8883", got ":8883"`},
		{"certFile missing", func(c *Config) { c.CertFile = "" }, p + `key "certFile": required: absolute path of the device certificate chain (PEM)`},
		{"certFile relative", func(c *Config) { c.CertFile = "device.pem" },
			p + `key "certFile": must be an absolute path (the device certificate chain (PEM)), got "device.pem"`},
		{"keyFile missing", func(c *Config) { c.KeyFile = "" }, p + `key "keyFile": required: absolute path of the device private key (PEM)`},
		{"caFile relative", func(c *Config) { c.CAFile = "ca.pem" },
			p + `key "caFile": must be an absolute path (the trust roots (PEM); leave it out to use Azure's roots), got "ca.pem"`},
		{"stateDir relative", func(c *Config) { c.StateDir = "state" }, p + `key "stateDir": must be an absolute path (the state directory), got "state"`},
		{"stateDir missing", func(c *Config) { c.StateDir = "" }, p + `key "stateDir": required: absolute path of the state directory`},
		{"env mode", func(c *Config) { c.Sensors.Env.Mode = "sim" }, p + `key "sensors.env.mode": must be "auto", "hardware" or "simulated", got "sim"`},
		{"env address not a BME280's", func(c *Config) { c.Sensors.Env.Address = 0x40 },
			p + `key "sensors.env.address": must be 0 (probe 0x76 then 0x77), 118 (0x76) or 119 (0x77), got 64`},
		{"env address high", func(c *Config) { c.Sensors.Env.Address = 0x78 },
			p + `key "sensors.env.address": must be 0 (probe 0x76 then 0x77), 118 (0x76) or 119 (0x77), got 120`},
		{"gps mode", func(c *Config) { c.Sensors.GPS.Mode = "" }, p + `key "sensors.gps.mode": must be "auto", "hardware" or "simulated", got ""`},
		{"gps port relative", func(c *Config) { c.Sensors.GPS.Port = "ttyS0" },
			p + `key "sensors.gps.port": must be an absolute path (the GPS serial device, e.g. /dev/serial0), got "ttyS0"`},
		{"gps port missing", func(c *Config) { c.Sensors.GPS.Port = "" },
			p + `key "sensors.gps.port": required: absolute path of the GPS serial device, e.g. /dev/serial0`},
		{"gps baud", func(c *Config) { c.Sensors.GPS.Baud = 9601 },
			p + `key "sensors.gps.baud": must be one of 4800, 9600, 19200, 38400, 57600, 115200, got 9601`},
		{"telemetryDelay 0", func(c *Config) { c.TelemetryDelay = 0 }, p + `key "telemetryDelay": must be between 1 and 3600 seconds, got 0`},
		{"telemetryDelay 3601", func(c *Config) { c.TelemetryDelay = 3601 }, p + `key "telemetryDelay": must be between 1 and 3600 seconds, got 3601`},
		{"threshold", func(c *Config) { c.TemperatureAlertThreshold = 120 },
			p + `key "temperatureAlertThreshold": must be between -40 and 85 °C (the BME280's range), got 120`},
		{"queue messages", func(c *Config) { c.Queue.MaxMessages = 0 }, p + `key "queue.maxMessages": must be between 1 and 10000000, got 0`},
		{"queue bytes", func(c *Config) { c.Queue.MaxBytes = 1000 },
			p + `key "queue.maxBytes": must be between 65536 (64 KiB) and 1073741824 (1 GiB), got 1000`},
		{"retry min", func(c *Config) { c.ReprovisionRetry.Min = 0 },
			p + `key "reprovisionRetry.min": must be between 1 second ("1s") and 1440 minutes (a day), got 0`},
		{"retry min below a second", func(c *Config) { c.ReprovisionRetry.Min = Minutes(500 * time.Millisecond) },
			p + `key "reprovisionRetry.min": must be between 1 second ("1s") and 1440 minutes (a day), got 500ms`},
		{"retry max below min", func(c *Config) { c.ReprovisionRetry.Max = Mins(2) },
			p + `key "reprovisionRetry.max": must be between reprovisionRetry.min (5) and 10080 minutes (a week), got 2`},
		{"retry max above a week", func(c *Config) { c.ReprovisionRetry.Max = Mins(10081) },
			p + `key "reprovisionRetry.max": must be between reprovisionRetry.min (5) and 10080 minutes (a week), got 10081`},
		{"logLevel", func(c *Config) { c.LogLevel = "verbose" }, p + `key "logLevel": must be "debug", "info", "warn" or "error", got "verbose"`},
		{"renewAt 1", func(c *Config) { c.CertificateIssuance.RenewAt = 1 },
			p + `key "certificateIssuance.renewAt": must be a fraction of the certificate's lifetime between 0.1 and 0.95 (default 0.667, two thirds), got 1`},
		{"renewAt 0", func(c *Config) { c.CertificateIssuance.RenewAt = 0 },
			p + `key "certificateIssuance.renewAt": must be a fraction of the certificate's lifetime between 0.1 and 0.95 (default 0.667, two thirds), got 0`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid(t)
			tt.change(c)
			err := c.Validate()
			if err == nil {
				t.Fatalf("Validate() = nil; want %q", tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("Validate() =\n  %s\nwant\n  %s", err, tt.want)
			}
			var e *Error
			if !errors.As(err, &e) || e.Key == "" {
				t.Errorf("Validate() = %#v; want an *Error naming the key", err)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	c := valid(t)
	c.TelemetryDelay, c.LogLevel = 0, "loud"
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), `key "telemetryDelay"`) || !strings.Contains(err.Error(), `key "logLevel"`) {
		t.Errorf("Validate() = %v; want both telemetryDelay and logLevel", err)
	}
}

func TestReadMissingIsErrNoConfig(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "tracker.json")
	for name, f := range map[string]func() error{
		"Read": func() error { _, err := Read(missing); return err },
		"Load": func() error { _, err := Load(missing, os.Getenv, Overrides{}); return err },
	} {
		if err := f(); !errors.Is(err, ErrNoConfig) || !strings.Contains(err.Error(), missing) {
			t.Errorf("%s(missing) = %v; want ErrNoConfig naming the path", name, err)
		}
	}
	// A directory is not a missing file.
	if _, err := Read(t.TempDir()); err == nil || errors.Is(err, ErrNoConfig) {
		t.Errorf("Read(dir) = %v; want a read error, not ErrNoConfig", err)
	}
}

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestApplyEnv(t *testing.T) {
	t.Parallel()
	c := valid(t)
	err := c.ApplyEnv(env(map[string]string{
		"TRACKER_ID_SCOPE":           "0ne11111B1B",
		"TRACKER_DPS_ENDPOINT":       "127.0.0.1:18883",
		"TRACKER_CERT_FILE":          "/run/c.pem",
		"TRACKER_KEY_FILE":           "/run/k.pem",
		"TRACKER_CA_FILE":            "/run/ca.pem",
		"TRACKER_STATE_DIR":          "/tmp/state",
		"TRACKER_ENV_MODE":           "simulated",
		"TRACKER_ENV_BUS":            "2",
		"TRACKER_ENV_ADDRESS":        "0x77",
		"TRACKER_GPS_MODE":           "hardware",
		"TRACKER_GPS_PORT":           "/dev/ttyUSB0",
		"TRACKER_GPS_BAUD":           "38400",
		"TRACKER_TELEMETRY_DELAY":    "3",
		"TRACKER_QUEUE_MAX_MESSAGES": "500",
		"TRACKER_QUEUE_MAX_BYTES":    "1048576",
		"TRACKER_LOG_LEVEL":          "debug",
		"TRACKER_UNRELATED":          "x",
	}))
	if err != nil {
		t.Fatalf("ApplyEnv = %v", err)
	}
	want := valid(t)
	want.IDScope, want.DPSEndpoint = "0ne11111B1B", "127.0.0.1:18883"
	want.CertFile, want.KeyFile, want.CAFile, want.StateDir = "/run/c.pem", "/run/k.pem", "/run/ca.pem", "/tmp/state"
	want.Sensors = Sensors{
		Env: EnvSensor{Mode: drivers.SimulatedOnly, Bus: "2", Address: 0x77},
		GPS: GPSSensor{Mode: drivers.HardwareOnly, Port: "/dev/ttyUSB0", Baud: 38400},
	}
	want.TelemetryDelay = 3
	want.Queue = Queue{MaxMessages: 500, MaxBytes: 1 << 20}
	want.LogLevel = "debug"
	c.source, want.source = nil, nil
	if !reflect.DeepEqual(c, want) {
		t.Errorf("after ApplyEnv = %+v;\nwant %+v", c, want)
	}
}

func TestEnvErrorsNameTheVariable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"TRACKER_TELEMETRY_DELAY": "ten"},
			`config /etc/tracker/tracker.json: key "telemetryDelay" (set by env TRACKER_TELEMETRY_DELAY): must be a whole number, got "ten"`},
		{map[string]string{"TRACKER_ENV_ADDRESS": "0x7g"},
			`config /etc/tracker/tracker.json: key "sensors.env.address" (set by env TRACKER_ENV_ADDRESS): must be a whole number, got "0x7g"`},
		{map[string]string{"TRACKER_QUEUE_MAX_BYTES": "1M"},
			`config /etc/tracker/tracker.json: key "queue.maxBytes" (set by env TRACKER_QUEUE_MAX_BYTES): must be a whole number, got "1M"`},
	}
	for _, tt := range tests {
		c := valid(t)
		if err := c.ApplyEnv(env(tt.env)); err == nil || err.Error() != tt.want {
			t.Errorf("ApplyEnv(%v) = %v; want %s", tt.env, err, tt.want)
		}
	}
	// A value that parses but is out of range fails in Validate, still
	// naming the variable, and 0 is not mistaken for "unset".
	c := valid(t)
	if err := c.ApplyEnv(env(map[string]string{"TRACKER_TELEMETRY_DELAY": "0"})); err != nil {
		t.Fatal(err)
	}
	want := `config /etc/tracker/tracker.json: key "telemetryDelay" (set by env TRACKER_TELEMETRY_DELAY): must be between 1 and 3600 seconds, got 0`
	if err := c.Validate(); err == nil || err.Error() != want {
		t.Errorf("Validate() after TRACKER_TELEMETRY_DELAY=0 = %v; want %s", err, want)
	}
}

func TestFlags(t *testing.T) {
	t.Parallel()
	var o Overrides
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o.RegisterFlags(fs)
	err := fs.Parse([]string{
		"--id-scope", "0ne22222C2C", "--dps-endpoint", "localhost:8883", "--cert", "/c", "--key", "/k",
		"--ca", "/ca", "--state-dir", "/s", "--env-mode", "hardware", "--env-bus", "I2C1", "--env-address", "0x77",
		"--gps-mode", "simulated", "--gps-port", "/dev/ttyACM0", "--gps-baud", "4800", "--telemetry-delay", "60",
		"--queue-max-messages", "7", "--queue-max-bytes", "70000", "--log-level", "warn",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := Overrides{
		"idScope": "0ne22222C2C", "dpsEndpoint": "localhost:8883", "certFile": "/c", "keyFile": "/k", "caFile": "/ca",
		"stateDir": "/s", "sensors.env.mode": string(drivers.HardwareOnly), "sensors.env.bus": "I2C1", "sensors.env.address": "0x77", "sensors.gps.mode": string(drivers.SimulatedOnly),
		"sensors.gps.port": "/dev/ttyACM0", "sensors.gps.baud": "4800", "telemetryDelay": "60", "queue.maxMessages": "7", "queue.maxBytes": "70000",
		"logLevel": "warn",
	}
	if !maps.Equal(o, want) {
		t.Errorf("flags parsed to %+v;\nwant %+v", o, want)
	}
	c := valid(t)
	c.Apply(o)
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Sensors.Env.Address != 0x77 || c.Queue.MaxBytes != 70000 || c.Sensors.GPS.Mode != drivers.SimulatedOnly || c.CAFile != "/ca" {
		t.Errorf("after Apply = %+v; want the flag values", c)
	}

	for _, args := range [][]string{{"--telemetry-delay", "0"}, {"--gps-baud", "fast"}, {"--queue-max-bytes", "0"}} {
		var o Overrides
		fs := flag.NewFlagSet("run", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		o.RegisterFlags(fs)
		if err := fs.Parse(args); err == nil {
			t.Errorf("Parse(%q) = nil; want an error", args)
		}
	}
}

// Flags beat the environment, which beats the file, which beats defaults.
func TestLoadPrecedence(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "tracker.json")
	if err := os.WriteFile(file, []byte(`{"version":1,"idScope":"0neFILE","certFile":"/c","keyFile":"/k",
		"telemetryDelay":20,"logLevel":"warn","stateDir":"/file"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	getenv := env(map[string]string{"TRACKER_TELEMETRY_DELAY": "30", "TRACKER_STATE_DIR": "/env", "TRACKER_ID_SCOPE": "0neENV"})
	c, err := Load(file, getenv, Overrides{"idScope": "0neFLAG"})
	if err != nil {
		t.Fatal(err)
	}
	got := []any{c.IDScope, c.TelemetryDelay, c.StateDir, c.LogLevel, c.Sensors.GPS.Baud}
	want := []any{"0neFLAG", 30, "/env", "warn", 9600}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Load(file, env, flags) = %v; want %v", got, want)
	}

	_, err = Load(file, nil, Overrides{"telemetryDelay": "5000"})
	wantErr := `config ` + file + `: key "telemetryDelay" (set by flag --telemetry-delay): must be between 1 and 3600 seconds, got 5000`
	if err == nil || err.Error() != wantErr {
		t.Errorf("Load with --telemetry-delay 5000 = %v; want %s", err, wantErr)
	}
}

// The package doc's table of overrides is the override table, row for row.
func TestOverridesDoc(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(doc), "//\tkey                    environment                  flag\n")
	if !ok {
		t.Fatal("doc.go has no overrides table")
	}
	var rows [][]string
	for _, line := range strings.Split(after, "\n") {
		row, ok := strings.CutPrefix(line, "//\t")
		if !ok {
			break
		}
		rows = append(rows, strings.Fields(row))
	}
	if len(rows) != len(overrides) {
		t.Errorf("doc.go lists %d overrides; the table has %d", len(rows), len(overrides))
	}
	for i, ov := range overrides {
		if i >= len(rows) || len(rows[i]) < 3 || rows[i][0] != ov.key || rows[i][1] != ov.env || rows[i][2] != "--"+ov.flag {
			t.Errorf("doc.go overrides row %d = %q; want %s %s --%s", i+1, rows[min(i, len(rows)-1)], ov.key, ov.env, ov.flag)
		}
	}
}
