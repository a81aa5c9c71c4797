package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/reefer/tracker/drivers"
	"github.com/reefer/tracker/firmware/telemetry"
	"github.com/reefer/tracker/provisioning/opcert"
)

// DefaultPath is where the tracker looks for its config file.
const DefaultPath = "/etc/tracker/tracker.json"

// Version is the only file format version this firmware reads.
const Version = 1

// ErrNoConfig means the config file does not exist.
var ErrNoConfig = errors.New("no config file")

// Config is the tracker's configuration. See the package doc for each key.
type Config struct {
	Version                   int     `json:"version"`
	IDScope                   string  `json:"idScope"`
	DPSEndpoint               string  `json:"dpsEndpoint"`
	CertFile                  string  `json:"certFile"`
	KeyFile                   string  `json:"keyFile"`
	CAFile                    string  `json:"caFile"`
	StateDir                  string  `json:"stateDir"`
	Sensors                   Sensors `json:"sensors"`
	TelemetryDelay            int     `json:"telemetryDelay"` // seconds
	TemperatureAlertThreshold float64 `json:"temperatureAlertThreshold"`
	// The temperature alert's debounce (°C, seconds).
	TemperatureAlertHysteresis  float64  `json:"temperatureAlertHysteresis"`
	TemperatureAlertMinDuration int      `json:"temperatureAlertMinDuration"`
	Queue                       Queue    `json:"queue"`
	ReprovisionRetry            Retry    `json:"reprovisionRetry"`
	CertificateIssuance         Issuance `json:"certificateIssuance"`
	LogLevel                    string   `json:"logLevel"`

	path   string            // file read, for errors; "" when none
	source map[string]string // key -> "env X" / "flag --x" when overridden
}

// Sensors configures the two sensors.
type Sensors struct {
	Env EnvSensor `json:"env"`
	GPS GPSSensor `json:"gps"`
}

// EnvSensor configures the BME280 (temperature, humidity, pressure).
type EnvSensor struct {
	Mode    drivers.Mode `json:"mode"`    // auto, hardware or simulated
	Bus     string       `json:"bus"`     // periph I2C bus name or number; "" is the first bus
	Address int          `json:"address"` // 0x76 or 0x77; 0 probes both
}

// GPSSensor configures the NMEA GPS receiver.
type GPSSensor struct {
	Mode drivers.Mode `json:"mode"` // auto, hardware or simulated
	Port string       `json:"port"`
	Baud int          `json:"baud"`
}

// Queue bounds the on-disk store-and-forward queue.
type Queue struct {
	MaxMessages int   `json:"maxMessages"`
	MaxBytes    int64 `json:"maxBytes"`
}

// Retry bounds the backoff before asking DPS again after it answered
// "disabled" or refused the certificate: an operator has to act, so
// hammering DPS is pointless (docs/protocol.md A, 401 row), but re-enrollment must
// still be picked up without a technician.
type Retry struct {
	Min Minutes `json:"min"`
	Max Minutes `json:"max"`
}

// Issuance asks DPS to issue the hub certificate (docs/protocol.md A.5):
// the tracker makes its own key, sends a certificate signing request with
// each registration, uses the issued certificate for the hub and renews
// it; certFile and keyFile then serve DPS only. Off by default: the
// enrollment must name a credential policy first.
type Issuance struct {
	Enabled bool `json:"enabled"`
	// RenewAt is the fraction of the issued certificate's lifetime after
	// which it is renewed.
	RenewAt float64 `json:"renewAt"`
}

// MinDuration is Min as a duration.
func (r Retry) MinDuration() time.Duration { return time.Duration(r.Min) }

// MaxDuration is Max as a duration.
func (r Retry) MaxDuration() time.Duration { return time.Duration(r.Max) }

// Minutes is a duration written in the file as whole minutes (a JSON
// number, the format the tracker has always read) or as a Go duration
// string such as "20s" or "1m30s", for waits shorter than a minute (a demo,
// a test bench).
type Minutes time.Duration

// Mins is n whole minutes.
func Mins(n int) Minutes { return Minutes(time.Duration(n) * time.Minute) }

// UnmarshalJSON implements json.Unmarshaler.
func (m *Minutes) UnmarshalJSON(b []byte) error {
	bad := func(what string) error {
		return &json.UnmarshalTypeError{Value: what, Type: reflect.TypeFor[Minutes]()}
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return bad("string " + string(b))
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return bad("string " + string(b))
		}
		*m = Minutes(d)
		return nil
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil || n > math.MaxInt64/int64(time.Minute) || n < math.MinInt64/int64(time.Minute) {
		return bad("number " + string(b))
	}
	*m = Minutes(time.Duration(n) * time.Minute)
	return nil
}

// MarshalJSON writes whole minutes as a number, anything else as a
// duration string.
func (m Minutes) MarshalJSON() ([]byte, error) {
	d := time.Duration(m)
	if d%time.Minute == 0 {
		return []byte(strconv.FormatInt(int64(d/time.Minute), 10)), nil
	}
	return json.Marshal(d.String())
}

// String is the value as it would be written: "5" (minutes) or "20s".
func (m Minutes) String() string {
	b, _ := m.MarshalJSON()
	return strings.Trim(string(b), `"`)
}

// AlertMinDuration is TemperatureAlertMinDuration as a duration.
func (c *Config) AlertMinDuration() time.Duration {
	return time.Duration(c.TemperatureAlertMinDuration) * time.Second
}

// TelemetryInterval is TelemetryDelay as a duration.
func (c *Config) TelemetryInterval() time.Duration {
	return time.Duration(c.TelemetryDelay) * time.Second
}

// SlogLevel is LogLevel for log/slog. Validate guarantees it parses.
func (c *Config) SlogLevel() slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return slog.LevelInfo
	}
	return l
}

// Path is the file the config was read from, "" if none.
func (c *Config) Path() string { return c.path }

// Default returns the configuration with every default filled in and the
// required keys empty.
func Default() *Config {
	return &Config{
		Version:     Version,
		DPSEndpoint: "global.azure-devices-provisioning.net:8883",
		StateDir:    "/var/lib/tracker",
		Sensors: Sensors{
			Env: EnvSensor{Mode: drivers.Auto, Address: 0},
			GPS: GPSSensor{Mode: drivers.Auto, Port: "/dev/serial0", Baud: 9600},
		},
		TelemetryDelay:              int(telemetry.DefaultDelay / time.Second),
		TemperatureAlertThreshold:   telemetry.DefaultAlertThreshold,
		TemperatureAlertHysteresis:  telemetry.DefaultAlertHysteresis,
		TemperatureAlertMinDuration: int(telemetry.DefaultAlertMinDuration / time.Second),
		Queue:                       Queue{MaxMessages: 100_000, MaxBytes: 64 << 20},
		ReprovisionRetry:            Retry{Min: Mins(5), Max: Mins(60)},
		CertificateIssuance:         Issuance{RenewAt: opcert.DefaultRenewAt},
		LogLevel:                    "info",
	}
}

// Error is one problem with the configuration.
type Error struct {
	Path   string // config file, "" if none
	Key    string // dotted JSON key, e.g. "sensors.gps.baud"; "" for the file as a whole
	Source string // "env TRACKER_GPS_BAUD" or "flag --gps-baud" when overridden
	Msg    string // what is wrong and how to fix it
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("config")
	if e.Path != "" {
		b.WriteString(" " + e.Path)
	}
	if e.Key != "" {
		fmt.Fprintf(&b, ": key %q", e.Key)
	}
	if e.Source != "" {
		fmt.Fprintf(&b, " (set by %s)", e.Source)
	}
	b.WriteString(": " + e.Msg)
	return b.String()
}

// Load reads the file at path, applies the environment (getenv may be nil)
// and then the flag overrides, and validates the result. All errors are
// *Error values (joined when several), or wrap ErrNoConfig.
func Load(path string, getenv func(string) string, o Overrides) (*Config, error) {
	c, err := Read(path)
	if err != nil {
		return nil, err
	}
	if getenv != nil {
		if err := c.ApplyEnv(getenv); err != nil {
			return nil, err
		}
	}
	if err := c.Apply(o); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Read reads and parses the file at path without validating it.
func Read(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf(`config %s: %w; create it with at least {"version": 1, "idScope": ..., "certFile": ..., "keyFile": ...}`, path, ErrNoConfig)
	}
	if err != nil {
		return nil, &Error{Path: path, Msg: err.Error()}
	}
	return Parse(path, data)
}

// Parse decodes data (read from path, used in errors) over the defaults,
// without validating the values.
func Parse(path string, data []byte) (*Config, error) {
	fail := func(key, format string, args ...any) error {
		return &Error{Path: path, Key: key, Msg: fmt.Sprintf(format, args...)}
	}

	// First pass, generic: syntax, the version, and exact key names (the
	// strict decoder below matches keys case-insensitively and does not say
	// where an unknown key sits).
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var raw any
	if err := dec.Decode(&raw); err != nil {
		return nil, fail("", "%s", syntaxMsg(data, err))
	}
	if _, err := dec.Token(); err == nil {
		return nil, fail("", "unexpected data after the closing }")
	}
	obj, ok := raw.(map[string]any)
	if !ok {
		return nil, fail("", "must be a JSON object like {\"version\": 1, ...}")
	}
	v, ok := obj["version"]
	if !ok {
		return nil, fail("version", "required; add \"version\": %d", Version)
	}
	if n, ok := v.(json.Number); !ok || n.String() != strconv.Itoa(Version) {
		return nil, fail("version", "must be %d (the only version this firmware reads), got %s", Version, jsonText(v))
	}
	if errs := checkKeys(path, "", obj, reflect.TypeFor[Config]()); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	// Second pass: decode over the defaults, so omitted keys keep them and
	// explicit values (even 0) are validated.
	c := Default()
	dec = json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, fail(te.Field, "must be %s, got %s", typeName(te.Type), te.Value)
		}
		return nil, fail("", "%v", err) // checkKeys should have caught it
	}
	c.path = path
	return c, nil
}

// checkKeys reports keys of obj that are not fields of t (matching the JSON
// tags exactly), and null values, recursing into nested objects.
func checkKeys(path, prefix string, obj map[string]any, t reflect.Type) []error {
	fields := map[string]reflect.Type{}
	for f := range t.Fields() {
		if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name != "" && f.IsExported() {
			fields[name] = f.Type
		}
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var errs []error
	for _, k := range keys {
		full := prefix + k
		ft, ok := fields[k]
		if !ok {
			errs = append(errs, &Error{Path: path, Key: full, Msg: unknownMsg(k, fields)})
			continue
		}
		switch v := obj[k].(type) {
		case nil:
			errs = append(errs, &Error{Path: path, Key: full, Msg: "must not be null; remove the key to use the default"})
		case map[string]any:
			if ft.Kind() == reflect.Struct {
				errs = append(errs, checkKeys(path, full+".", v, ft)...)
			}
		}
	}
	return errs
}

func unknownMsg(k string, fields map[string]reflect.Type) string {
	names := make([]string, 0, len(fields))
	for n := range fields {
		if strings.EqualFold(n, k) {
			return fmt.Sprintf("unknown key; did you mean %q? (keys are case-sensitive)", n)
		}
		names = append(names, n)
	}
	sort.Strings(names)
	return "unknown key; remove it or use one of: " + strings.Join(names, ", ")
}

// syntaxMsg turns a decoding error into "line L, column C: ...".
func syntaxMsg(data []byte, err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		line, col := lineCol(data, se.Offset)
		return fmt.Sprintf("line %d, column %d: invalid JSON: %v", line, col, err)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "invalid JSON: the file is empty or ends too early"
	}
	return "invalid JSON: " + err.Error()
}

func lineCol(data []byte, offset int64) (line, col int) {
	offset = min(max(offset, 0), int64(len(data)))
	before := data[:offset]
	line = bytes.Count(before, []byte("\n")) + 1
	col = int(offset) - (bytes.LastIndexByte(before, '\n') + 1)
	return line, max(col, 1)
}

func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

func typeName(t reflect.Type) string {
	if t == reflect.TypeFor[Minutes]() {
		return `whole minutes (a number) or a duration like "30s"`
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int64:
		return "a whole number"
	case reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	case reflect.Struct:
		return "an object"
	}
	return t.String()
}

// Validate checks every value and returns all problems, joined.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &Error{Path: c.path, Key: key, Source: c.source[key], Msg: fmt.Sprintf(format, args...)})
	}

	if c.Version != Version {
		bad("version", "must be %d, got %d", Version, c.Version)
	}
	switch {
	case c.IDScope == "":
		bad("idScope", `required: the DPS ID scope, e.g. "0ne00000A0A" (az iot dps show --name <dps> --query properties.idScope), or set TRACKER_ID_SCOPE`)
	case !alnum(c.IDScope):
		bad("idScope", "must contain only letters and digits, got %q", c.IDScope)
	}
	if host, port, err := net.SplitHostPort(c.DPSEndpoint); err != nil || host == "" || !validPort(port) || strings.Contains(c.DPSEndpoint, "/") {
		bad("dpsEndpoint", `must be host:port without a scheme, e.g. "global.azure-devices-provisioning.net:8883", got %q`, c.DPSEndpoint)
	}
	file := func(key, what, val string, required bool) {
		switch {
		case val == "" && required:
			bad(key, "required: absolute path of the %s", what)
		case val != "" && !filepath.IsAbs(val):
			bad(key, "must be an absolute path (the %s), got %q", what, val)
		}
	}
	file("certFile", "device certificate chain (PEM)", c.CertFile, true)
	file("keyFile", "device private key (PEM)", c.KeyFile, true)
	file("caFile", "trust roots (PEM); leave it out to use Azure's roots", c.CAFile, false)
	file("stateDir", "state directory", c.StateDir, true)

	mode := func(key string, m drivers.Mode) {
		if _, err := drivers.ParseMode(string(m)); err != nil {
			bad(key, `must be "auto", "hardware" or "simulated", got %q`, m)
		}
	}
	mode("sensors.env.mode", c.Sensors.Env.Mode)
	// A BME280 answers only at 0x76 or 0x77; 0 probes both, which is the
	// safe default because boards differ in how they strap SDO.
	if a := c.Sensors.Env.Address; a != 0 && a != 0x76 && a != 0x77 {
		bad("sensors.env.address", "must be 0 (probe 0x76 then 0x77), 118 (0x76) or 119 (0x77), got %d", a)
	}
	mode("sensors.gps.mode", c.Sensors.GPS.Mode)
	file("sensors.gps.port", "GPS serial device, e.g. /dev/serial0", c.Sensors.GPS.Port, true)
	if b := c.Sensors.GPS.Baud; !slices.Contains(baudRates, b) {
		bad("sensors.gps.baud", "must be one of %s, got %d", joinInts(baudRates), b)
	}

	// In whole seconds: a huge value must not wrap around as a Duration.
	if d, lo, hi := c.TelemetryDelay, int(telemetry.MinDelay/time.Second), int(telemetry.MaxDelay/time.Second); d < lo || d > hi {
		bad("telemetryDelay", "must be between %d and %d seconds, got %d", lo, hi, d)
	}
	if v, lo, hi := c.TemperatureAlertThreshold, telemetry.MinAlertThreshold, telemetry.MaxAlertThreshold; math.IsNaN(v) || v < lo || v > hi {
		bad("temperatureAlertThreshold", "must be between %v and %v °C (the BME280's range), got %v", lo, hi, v)
	}
	if v, lo, hi := c.TemperatureAlertHysteresis, telemetry.MinAlertHysteresis, telemetry.MaxAlertHysteresis; math.IsNaN(v) || v < lo || v > hi {
		bad("temperatureAlertHysteresis", "must be between %v and %v °C, got %v", lo, hi, v)
	}
	if d, lo, hi := c.TemperatureAlertMinDuration, int(telemetry.MinAlertMinDuration/time.Second), int(telemetry.MaxAlertMinDuration/time.Second); d < lo || d > hi {
		bad("temperatureAlertMinDuration", "must be between %d and %d seconds, got %d", lo, hi, d)
	}
	if n := c.Queue.MaxMessages; n < 1 || n > 10_000_000 {
		bad("queue.maxMessages", "must be between 1 and 10000000, got %d", n)
	}
	if n := c.Queue.MaxBytes; n < 64<<10 || n > 1<<30 {
		bad("queue.maxBytes", "must be between 65536 (64 KiB) and 1073741824 (1 GiB), got %d", n)
	}
	// A whole number is minutes; a string like "20s" allows less than a
	// minute (never below a second: DPS must not be hammered).
	r := c.ReprovisionRetry
	if r.Min < Minutes(time.Second) || r.Min > Mins(1440) {
		bad("reprovisionRetry.min", `must be between 1 second ("1s") and 1440 minutes (a day), got %s`, r.Min)
	}
	if r.Max < max(r.Min, Minutes(time.Second)) || r.Max > Mins(10080) {
		bad("reprovisionRetry.max", "must be between reprovisionRetry.min (%s) and 10080 minutes (a week), got %s", r.Min, r.Max)
	}
	if v := c.CertificateIssuance.RenewAt; math.IsNaN(v) || v < 0.1 || v > 0.95 {
		bad("certificateIssuance.renewAt", "must be a fraction of the certificate's lifetime between 0.1 and 0.95 (default %.3g, two thirds), got %v", opcert.DefaultRenewAt, v)
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.LogLevel) {
		bad("logLevel", `must be "debug", "info", "warn" or "error", got %q`, c.LogLevel)
	}
	return errors.Join(errs...)
}

var baudRates = []int{4800, 9600, 19200, 38400, 57600, 115200}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ", ")
}

func alnum(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535
}
