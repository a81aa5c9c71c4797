package doctor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/reefer/tracker/firmware/config"
)

func TestCheckConfig(t *testing.T) {
	t.Parallel()
	const good = `{"version": 1, "idScope": "0ne00000A0A", "certFile": "/etc/tracker/c.pem", "keyFile": "/etc/tracker/k.pem"}`
	tests := []struct {
		name    string
		file    string // "" = no file
		env     map[string]string
		ov      config.Overrides
		st      Status
		detail  string
		fix     []string
		wantCfg bool
	}{
		{name: "valid", file: good, st: OK, detail: "is valid", wantCfg: true},
		{name: "missing", st: Fail, detail: "no config file at", fix: []string{`"version": 1`}},
		{name: "bad json", file: `{"version": 1,`, st: Fail, detail: "1 problem in", fix: []string{"invalid JSON"}},
		{name: "unknown key", file: `{"version": 1, "idscope": "x"}`, st: Fail, detail: "1 problem", fix: []string{`"idscope": unknown key; did you mean "idScope"?`}},
		{name: "several bad values", file: `{"version": 1, "certFile": "c.pem", "keyFile": "/k", "sensors": {"gps": {"baud": 1234}}}`,
			st: Fail, detail: "3 problems", wantCfg: true,
			fix: []string{`"idScope": required`, `"certFile": must be an absolute path`, `"sensors.gps.baud": must be one of`}},
		{name: "bad flag override", file: good, ov: config.Overrides{"telemetryDelay": "99999"}, st: Fail, detail: "1 problem", wantCfg: true,
			fix: []string{`"telemetryDelay" (set by flag --telemetry-delay): must be between 1 and 3600`}},
		{name: "bad env", file: good, env: map[string]string{"TRACKER_GPS_BAUD": "fast"}, st: Fail, detail: "1 problem", wantCfg: true,
			fix: []string{`"sensors.gps.baud" (set by env TRACKER_GPS_BAUD): must be a whole number`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "tracker.json")
			if tt.file != "" {
				if err := os.WriteFile(path, []byte(tt.file), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			c, ck := CheckConfig(path, func(k string) string { return tt.env[k] }, tt.ov)
			wantCheck(t, ck, "config", tt.st, tt.detail, "")
			for _, f := range tt.fix {
				if !strings.Contains(ck.Fix, f) {
					t.Errorf("fix = %q; want it to contain %q", ck.Fix, f)
				}
			}
			if got := c != nil; got != tt.wantCfg {
				t.Errorf("config returned = %v; want %v", got, tt.wantCfg)
			}
		})
	}
}
