package store

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func openTelemetryStore(t *testing.T, dir string, opts Options) *Store {
	t.Helper()
	opts.Hubs = testHubs
	opts.NoSync = true
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func record(t *testing.T, s *Store, id, body string) {
	t.Helper()
	m := Message{Hub: "localhost:1", DeviceID: id, Topic: "devices/" + id + "/messages/events/a=1",
		Body: []byte(body), SystemProperties: map[string]string{"content-type": "application/json"}, Properties: map[string]string{"a": "1"}}
	if err := s.RecordTelemetry(m); err != nil {
		t.Fatalf("RecordTelemetry(%s): %v", body, err)
	}
}

func bodies(ms []Message) string {
	var b []string
	for _, m := range ms {
		b = append(b, string(m.Body))
	}
	return strings.Join(b, ",")
}

func TestTelemetrySurvivesRestartAndDelete(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openTelemetryStore(t, dir, Options{})
	for _, id := range []string{"d.1", "keep"} {
		if _, err := s.PutDevice("localhost:1", selfSignedDevice(id, thumb64), ""); err != nil {
			t.Fatal(err)
		}
	}
	record(t, s, "d.1", "1")
	if err := s.FlushTelemetry(); err != nil { // first flush creates the file
		t.Fatal(err)
	}
	record(t, s, "d.1", "2") // this one is appended by Close
	record(t, s, "keep", "k")
	before := s.Telemetry("localhost:1", "d.1")
	// docs/protocol.md F: deleting the identity keeps its messages.
	if err := s.DeleteDevice("localhost:1", "d.1", "*"); err != nil {
		t.Fatal(err)
	}
	if got := bodies(s.Telemetry("localhost:1", "d.1")); got != "1,2" {
		t.Errorf("history after delete = %q; want \"1,2\"", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openTelemetryStore(t, dir, Options{})
	after := s2.Telemetry("localhost:1", "d.1")
	if len(after) != 2 {
		t.Fatalf("history after restart = %q; want \"1,2\"", bodies(after))
	}
	for i := range after {
		b, a := before[i], after[i]
		if !a.EnqueuedTime.Equal(b.EnqueuedTime.Time) || a.Topic != b.Topic || a.Hub != b.Hub || a.DeviceID != b.DeviceID ||
			a.SystemProperties["content-type"] != "application/json" || a.Properties["a"] != "1" || string(a.Body) != string(b.Body) {
			t.Errorf("message %d after restart = %+v; want %+v", i, a, b)
		}
	}
	if got := bodies(s2.Telemetry("localhost:1", "keep")); got != "k" {
		t.Errorf("other device after restart = %q; want \"k\"", got)
	}
	// A re-created identity continues the history.
	if _, err := s2.PutDevice("localhost:1", selfSignedDevice("d.1", thumb64), ""); err != nil {
		t.Fatal(err)
	}
	record(t, s2, "d.1", "3")
	if got := bodies(s2.Telemetry("localhost:1", "d.1")); got != "1,2,3" {
		t.Errorf("history of the re-created device = %q; want \"1,2,3\"", got)
	}
}

func TestTelemetryBoundsInMemoryAndOnDisk(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		opts     Options
		sizes    []int // body sizes in order
		wantLast int   // how many of the newest survive
	}{
		{"count", Options{TelemetryHistory: 4}, []int{10, 10, 10, 10, 10, 10, 10}, 4},
		// MessageSize counts the body, the system property value
		// (16) and the application property (2): 50+18 each, so
		// three (204 B) fit in 210 and four do not.
		{"bytes", Options{TelemetryHistoryBytes: 210}, []int{50, 50, 50, 50, 50}, 3},
		{"newest kept even when alone over the bound", Options{TelemetryHistoryBytes: 10}, []int{5, 100}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s := openTelemetryStore(t, dir, tc.opts)
			if _, err := s.PutDevice("localhost:1", selfSignedDevice("d", thumb64), ""); err != nil {
				t.Fatal(err)
			}
			var want []string
			for i, n := range tc.sizes {
				body := fmt.Sprintf("%d%s", i, strings.Repeat("x", n-1))
				record(t, s, "d", body)
				want = append(want, body)
			}
			want = want[len(want)-tc.wantLast:]
			if got := bodies(s.Telemetry("localhost:1", "d")); got != strings.Join(want, ",") {
				t.Errorf("history = %q; want %q", got, strings.Join(want, ","))
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s2 := openTelemetryStore(t, dir, tc.opts)
			if got := bodies(s2.Telemetry("localhost:1", "d")); got != strings.Join(want, ",") {
				t.Errorf("history after restart = %q; want %q", got, strings.Join(want, ","))
			}
		})
	}
}

// TestTelemetryFileCompacted checks the log stays bounded while messages
// keep coming, with many flushes appending to it.
func TestTelemetryFileCompacted(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openTelemetryStore(t, dir, Options{TelemetryHistory: 5})
	s.compactSlack = 0 // compact as soon as the log doubles
	for _, id := range []string{"d", "e"} {
		if _, err := s.PutDevice("localhost:1", selfSignedDevice(id, thumb64), ""); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "hubs", "hub1", "telemetry.jsonl")
	maxLines := 0
	for i := 0; i < 40; i++ {
		record(t, s, "d", fmt.Sprint(i))
		if i%4 == 0 {
			record(t, s, "e", fmt.Sprint(i))
		}
		if err := s.FlushTelemetry(); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		maxLines = max(maxLines, bytes.Count(b, []byte{'\n'}))
	}
	if maxLines > 20 {
		t.Errorf("log held up to %d records; want at most 2 x 10 live", maxLines)
	}
	if recs, bad := parseRecords(must(os.ReadFile(path))); bad != 0 || len(recs) < 10 {
		t.Errorf("log has %d records (%d bad); want >= 10, none bad", len(recs), bad)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openTelemetryStore(t, dir, Options{TelemetryHistory: 5})
	for id, want := range map[string]string{"d": "35,36,37,38,39", "e": "20,24,28,32,36"} {
		if got := bodies(s2.Telemetry("localhost:1", id)); got != want {
			t.Errorf("history of %s after compactions and restart = %q; want %q", id, got, want)
		}
	}
}

// parseRecords decodes a whole log, counting the bad records.
func parseRecords(b []byte) (recs []telemetryRecord, bad int) {
	for len(b) > 0 {
		line, rest, ok := bytes.Cut(b, []byte{'\n'})
		b = rest
		r, good := parseRecord(line)
		if !ok || !good {
			bad++
			continue
		}
		recs = append(recs, r)
	}
	return recs, bad
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestTelemetryTornRecord simulates a crash in the middle of an append and
// a corrupted record: both are dropped, the rest is kept and later appends
// land on a clean file.
func TestTelemetryTornRecord(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openTelemetryStore(t, dir, Options{})
	if _, err := s.PutDevice("localhost:1", selfSignedDevice("d", thumb64), ""); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"a", "b", "c"} {
		record(t, s, "d", b)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "hubs", "hub1", "telemetry.jsonl")
	b := must(os.ReadFile(path))
	lines := bytes.SplitAfter(b, []byte{'\n'})
	// Flip a byte inside record "b" and cut a copy of "c" in half.
	lines[1] = bytes.Replace(lines[1], []byte(`"deviceId":"d"`), []byte(`"deviceId":"e"`), 1)
	torn := lines[2][:len(lines[2])/2]
	if err := os.WriteFile(path, append(bytes.Join(lines, nil), torn...), 0o600); err != nil {
		t.Fatal(err)
	}

	s2 := openTelemetryStore(t, dir, Options{})
	if got := bodies(s2.Telemetry("localhost:1", "d")); got != "a,c" {
		t.Errorf("history after damage = %q; want \"a,c\"", got)
	}
	if _, bad := parseRecords(must(os.ReadFile(path))); bad != 0 {
		t.Errorf("file still has %d bad records after loading", bad)
	}
	record(t, s2, "d", "d")
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	s3 := openTelemetryStore(t, dir, Options{})
	if got := bodies(s3.Telemetry("localhost:1", "d")); got != "a,c,d" {
		t.Errorf("history after repair and append = %q; want \"a,c,d\"", got)
	}
}

// TestTelemetryFlushedInBackground: without Close, messages reach the disk
// within the flush interval, and the flusher stops when idle.
func TestTelemetryFlushedInBackground(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openTelemetryStore(t, dir, Options{TelemetryFlushInterval: time.Millisecond})
	if _, err := s.PutDevice("localhost:1", selfSignedDevice("d", thumb64), ""); err != nil {
		t.Fatal(err)
	}
	record(t, s, "d", "x")
	path := filepath.Join(dir, "hubs", "hub1", "telemetry.jsonl")
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if recs, _ := parseRecords(b); len(recs) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("message not written within 5 s")
		}
		time.Sleep(time.Millisecond)
	}
	for {
		s.mu.RLock()
		running := s.flushRunning
		s.mu.RUnlock()
		if !running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("flusher still running while idle")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestTelemetryRecordRoundTrip(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)
	tests := []Message{
		{DeviceID: "d", EnqueuedTime: Time{at}},
		{DeviceID: `we"ird\id`, Topic: "devices/x/messages/events/a=%22", EnqueuedTime: Time{at}, Body: []byte{0, 1, 0xff, '\n'},
			MessageID: "m\u00e9\t1", SystemProperties: map[string]string{"content-type": "application/json", "ctl": "\x01\x1f\"\\"},
			Properties: map[string]string{"k\n": "v\u2028", "empty": ""}},
	}
	for _, m := range tests {
		line := appendRecord(nil, &m)
		r, ok := parseRecord(line[:len(line)-1])
		if !ok || line[len(line)-1] != '\n' {
			t.Fatalf("parseRecord(appendRecord(%+v)) failed: %q", m, line)
		}
		got := Message{DeviceID: r.DeviceID, Topic: r.Topic, EnqueuedTime: Time{r.EnqueuedTime}, Body: r.Body,
			MessageID: r.MessageID, SystemProperties: r.SystemProperties, Properties: r.Properties}
		if fmt.Sprintf("%q %q %v %q %q %q %q", got.DeviceID, got.Topic, got.EnqueuedTime.UnixNano(), got.Body, got.MessageID, got.SystemProperties, got.Properties) !=
			fmt.Sprintf("%q %q %v %q %q %q %q", m.DeviceID, m.Topic, m.EnqueuedTime.UnixNano(), m.Body, m.MessageID, m.SystemProperties, m.Properties) {
			t.Errorf("round trip = %+v; want %+v", got, m)
		}
	}
}
