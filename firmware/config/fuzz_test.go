package config

import (
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"testing"
)

// FuzzParse: the config file is written by hand on site, so anything may be
// in it. Parse never panics; every error it gives is a *Error naming the
// file (the technician's fix is in it); a file it accepts and that passes
// Validate says the same thing when written back out and read again; and
// Parse never accepts a file whose version is not Version.
// Seeds: testdata/fuzz/FuzzParse/ (example.json, a minimal file, typos).
func FuzzParse(f *testing.F) {
	example, err := os.ReadFile("example.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	f.Add([]byte(`{"version": 1, "idScope": "0ne00000A0A", "certFile": "/etc/tracker/device-chain.pem", "keyFile": "/etc/tracker/device.key"}`))
	f.Add([]byte(`{"version": 2}`))
	f.Add([]byte(`{"version": 1, "telemetrydelay": 5}`))
	const path = "/etc/tracker/tracker.json"
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(path, data)
		if err != nil {
			checkErrors(t, err, path)
			return
		}
		if c.Version != Version {
			t.Fatalf("accepted version %d", c.Version)
		}
		if err := c.Validate(); err != nil {
			checkErrors(t, err, path)
			return
		}
		out, err := json.Marshal(c)
		if err != nil {
			t.Fatalf("marshal accepted config: %v", err)
		}
		c2, err := Parse(path, out)
		if err != nil {
			t.Fatalf("%s\nwritten back as %s\ndoes not parse: %v", data, out, err)
		}
		if err := c2.Validate(); err != nil {
			t.Fatalf("written back as %s it no longer validates: %v", out, err)
		}
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip changed the config:\n%+v\n%+v", c, c2)
		}
	})
}

// checkErrors: every error, joined or not, is a *Error for path.
func checkErrors(t *testing.T, err error, path string) {
	t.Helper()
	var leaves []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		leaves = j.Unwrap()
	} else {
		leaves = []error{err}
	}
	for _, e := range leaves {
		var ce *Error
		if !errors.As(e, &ce) {
			t.Fatalf("error %v (%T) is not a *config.Error", e, e)
		}
		if ce.Path != path || ce.Msg == "" {
			t.Fatalf("error %+v does not name the file or say what is wrong", ce)
		}
	}
}
