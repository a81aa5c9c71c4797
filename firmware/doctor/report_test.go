package doctor

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestWriteText(t *testing.T) {
	t.Parallel()
	r := Report{
		Time: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
		Checks: []Check{
			{Name: "config", Status: OK, Detail: "/etc/tracker/tracker.json is valid"},
			{Name: "key file", Status: Fail, Detail: "/etc/tracker/device.key has mode 0644", Fix: "chmod 600 /etc/tracker/device.key"},
			{Name: "gps", Status: Warn, Detail: "NMEA but no fix yet", Fix: "line one\nline two"},
		},
		Skipped: []Skip{{"hub", "--offline"}},
	}
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	want := `OK    config    /etc/tracker/tracker.json is valid
FAIL  key file  /etc/tracker/device.key has mode 0644
                fix: chmod 600 /etc/tracker/device.key
WARN  gps       NMEA but no fix yet
                fix: line one
                     line two
-     hub       not checked: --offline

3 checks: 1 OK, 1 WARN, 1 FAIL — the tracker will not work until each FAIL is fixed.
`
	if got := b.String(); got != want {
		t.Errorf("WriteText =\n%s\nwant\n%s", got, want)
	}
	if !r.Failed() {
		t.Error("Failed() = false with a FAIL check; want true")
	}
}

func TestReportJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		checks     []Check
		wantFailed bool
		wantWarns  int
	}{
		{[]Check{{Name: "a", Status: OK, Detail: "fine"}}, false, 0},
		{[]Check{{Name: "a", Status: Warn, Detail: "hmm", Fix: "look"}, {Name: "b", Status: OK}}, false, 1},
		{[]Check{{Name: "a", Status: Fail, Detail: "no", Fix: "do"}, {Name: "b", Status: Warn, Fix: "x"}}, true, 1},
	}
	for _, tt := range tests {
		r := Report{Time: time.Unix(0, 0).UTC(), Checks: tt.checks}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Report
			Failed bool `json:"failed"`
			Warns  int  `json:"warns"`
		}
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if got.Failed != tt.wantFailed || got.Warns != tt.wantWarns || len(got.Checks) != len(tt.checks) || got.Checks[0] != tt.checks[0] {
			t.Errorf("json.Marshal(%v) = %s; want failed=%v warns=%d and the checks", tt.checks, b, tt.wantFailed, tt.wantWarns)
		}
		if strings.Contains(string(b), `"fix":""`) {
			t.Errorf("json %s has an empty fix; want it omitted", b)
		}
	}
}
