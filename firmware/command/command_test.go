package command_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reefer/tracker/firmware/command"
)

func TestParse(t *testing.T) {
	t.Parallel()
	good := []struct {
		body string
		want command.Command
	}{
		{`{"command":"sendNow"}`, command.Command{Name: command.SendNow}},
		{` {"command":"flushQueue"} `, command.Command{Name: command.FlushQueue}},
		{`{"command":"reportStatus"}`, command.Command{Name: command.ReportStatus}},
		{`{"command":"clearTelemetryInterval"}`, command.Command{Name: command.ClearTelemetryInterval}},
		{`{"command":"setTelemetryInterval","seconds":60}`, command.Command{Name: command.SetTelemetryInterval, Seconds: 60}},
		{`{"command":"setTelemetryInterval","seconds":1,"durationSeconds":7200}`,
			command.Command{Name: command.SetTelemetryInterval, Seconds: 1, For: 2 * time.Hour}},
		{`{"command":"setTelemetryInterval","seconds":3600,"durationSeconds":2592000}`,
			command.Command{Name: command.SetTelemetryInterval, Seconds: 3600, For: command.MaxOverride}},
	}
	for _, g := range good {
		got, err := command.Parse([]byte(g.body))
		if err != nil || got != g.want {
			t.Errorf("Parse(%s) = %+v, %v; want %+v", g.body, got, err, g.want)
		}
	}
	bad := map[string]string{
		``:                                       "not a JSON command object",
		`sendNow`:                                "not a JSON command object",
		`["sendNow"]`:                            "not a JSON command object",
		`{"command":"sendNow"} {}`:               "data after",
		`{}`:                                     `no "command"`,
		`{"command":null}`:                       `no "command"`,
		`{"command":5}`:                          "not a JSON command object",
		`{"command":"SENDNOW"}`:                  "unknown command",
		`{"command":"sendNow","x":1}`:            "unknown field",
		`{"command":"reportStatus","seconds":1}`: "takes no parameters",
		`{"command":"setTelemetryInterval"}`:     `needs "seconds"`,
		`{"command":"setTelemetryInterval","seconds":0.5}`:                           "outside 1..3600",
		`{"command":"setTelemetryInterval","seconds":3601}`:                          "outside 1..3600",
		`{"command":"setTelemetryInterval","seconds":"60"}`:                          "not a JSON command object",
		`{"command":"setTelemetryInterval","seconds":60,"durationSeconds":0}`:        "durationSeconds 0 outside",
		`{"command":"setTelemetryInterval","seconds":60,"durationSeconds":2592001}`:  "outside 1..2.592e+06",
		`{"command":"sendNow","pad":"` + strings.Repeat("x", command.MaxBody) + `"}`: "bytes, at most",
	}
	for body, want := range bad {
		_, err := command.Parse([]byte(body))
		if !errors.Is(err, command.ErrRejected) || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%.60s) = %v; want ErrRejected saying %q", body, err, want)
		}
	}
}

func TestFileRoundTrip(t *testing.T) {
	t.Parallel()
	f := command.File{Path: filepath.Join(t.TempDir(), "commands.json")}
	if r, err := f.Load(); err != nil || r.Override != nil || r.Last != nil {
		t.Fatalf("Load(missing) = %+v, %v; want an empty record", r, err)
	}
	until := time.Date(2026, 12, 3, 20, 0, 0, 0, time.UTC)
	in := command.Record{
		Override: &command.Override{Seconds: 2.5, Until: until, MessageID: "m1"},
		Last:     &command.Outcome{MessageID: "m1", Command: command.SetTelemetryInterval, Status: command.StatusDone, At: until.Add(-time.Hour)},
	}
	if err := f.Save(in); err != nil {
		t.Fatal(err)
	}
	out, err := f.Load()
	if err != nil || *out.Override != *in.Override || *out.Last != *in.Last {
		t.Fatalf("Load = %+v, %v; want %+v", out, err, in)
	}
	if d := out.Override.Interval(); d != 2500*time.Millisecond {
		t.Errorf("Interval = %v; want 2.5s", d)
	}
	if out.Override.Ended(until.Add(-time.Second)) || !out.Override.Ended(until) || (command.Override{}).Ended(until) {
		t.Error("Ended: wrong around Until, or an override without Until ended")
	}
	if fi, err := os.Stat(f.Path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("record file mode %v, %v; want 0600", fi.Mode(), err)
	}
	if err := os.WriteFile(f.Path, []byte("{torn"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Load(); err == nil || !strings.Contains(err.Error(), f.Path) {
		t.Errorf("Load(corrupt) = %v; want an error naming the file", err)
	}
}

// Handled remembers commands done or rejected, not failed ones, and only
// the last MaxHandled; a record written before Handled existed knows its
// last command as handled once loaded.
func TestRecordRemembersHandled(t *testing.T) {
	t.Parallel()
	var r command.Record
	r = r.Remember(command.Outcome{MessageID: "f", Status: command.StatusFailed})
	r = r.Remember(command.Outcome{MessageID: "", Status: command.StatusDone})
	if r.WasHandled("f") || r.WasHandled("") || len(r.Handled) != 0 {
		t.Fatalf("failed or id-less outcome remembered: %v", r.Handled)
	}
	r = r.Remember(command.Outcome{MessageID: "rej", Status: command.StatusRejected})
	before := r
	r = r.Remember(command.Outcome{MessageID: "m0", Status: command.StatusDone})
	if len(before.Handled) != 1 || !r.WasHandled("rej") || !r.WasHandled("m0") {
		t.Fatalf("Remember: before %v, after %v", before.Handled, r.Handled)
	}
	r = r.Remember(command.Outcome{MessageID: "m0", Status: command.StatusDone})
	if len(r.Handled) != 2 {
		t.Errorf("an id remembered twice: %v", r.Handled)
	}
	for i := 1; i < command.MaxHandled; i++ {
		r = r.Remember(command.Outcome{MessageID: fmt.Sprintf("m%d", i), Status: command.StatusDone})
	}
	if len(r.Handled) != command.MaxHandled || r.WasHandled("rej") || !r.WasHandled("m0") ||
		!r.WasHandled(fmt.Sprintf("m%d", command.MaxHandled-1)) {
		t.Errorf("bound: %d ids, oldest %q; want %d, the oldest (rej) dropped", len(r.Handled), r.Handled[0], command.MaxHandled)
	}

	f := command.File{Path: filepath.Join(t.TempDir(), "commands.json")}
	if err := os.WriteFile(f.Path, []byte(`{"last":{"messageId":"old","command":"sendNow","status":"done"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if old, err := f.Load(); err != nil || !old.WasHandled("old") {
		t.Errorf("Load(record without handled) = %+v, %v; want its last command handled", old, err)
	}
}
