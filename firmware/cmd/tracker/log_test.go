package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Under the journal each line carries its syslog priority so that
// `journalctl -p warning` picks out warnings and errors; attributes added
// with With reach every priority.
func TestJournalPriorities(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log, err := newLoggerFor(&buf, "debug", true)
	if err != nil {
		t.Fatal(err)
	}
	log = log.With("device", "sensor-thl-001")
	log.Debug("d")
	log.Info("i")
	log.Warn("w")
	log.Error("e")
	log.Log(context.Background(), slog.LevelError+4, "beyond error")
	want := []string{
		"<7>level=DEBUG msg=d device=sensor-thl-001",
		"<6>level=INFO msg=i device=sensor-thl-001",
		"<4>level=WARN msg=w device=sensor-thl-001",
		"<3>level=ERROR msg=e device=sensor-thl-001",
		"<3>level=ERROR+4 msg=\"beyond error\" device=sensor-thl-001",
	}
	if got := strings.Split(strings.TrimSpace(buf.String()), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("journal lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// Off the journal: plain lines with a time and no prefix; the level
	// still filters.
	buf.Reset()
	log, _ = newLoggerFor(&buf, "warn", false)
	log.Info("hidden")
	log.Warn("shown")
	if s := buf.String(); strings.HasPrefix(s, "<") || !strings.HasPrefix(s, "time=") || strings.Contains(s, "hidden") {
		t.Errorf("plain log = %q; want one WARN line starting time=", s)
	}
	if _, err := newLoggerFor(&buf, "loud", true); err == nil {
		t.Error("log level loud accepted")
	}
}

// The journal is recognised by JOURNAL_STREAM matching the writer's
// device and inode, not by the variable alone (a child of the service
// inherits the variable with other stderr).
func TestIsJournal(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "stream"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	match := fmt.Sprintf("%d:%d", st.Dev, st.Ino)
	for _, tt := range []struct {
		env  string
		w    io.Writer
		want bool
	}{
		{match, f, true},
		{fmt.Sprintf("%d:%d", st.Dev, st.Ino+1), f, false},
		{"", f, false},
		{match, &bytes.Buffer{}, false},
	} {
		t.Setenv("JOURNAL_STREAM", tt.env)
		if got := isJournal(tt.w); got != tt.want {
			t.Errorf("JOURNAL_STREAM=%q, writer %T: isJournal = %v; want %v", tt.env, tt.w, got, tt.want)
		}
	}
	t.Setenv("JOURNAL_STREAM", match)
	if p := journalPrefix(f, slog.LevelWarn); p != "<4>" {
		t.Errorf("journalPrefix(warn) = %q; want <4>", p)
	}
}

// BenchmarkLogLine is one "telemetry sent" line through the tracker's
// journal logger (to io.Discard: the write syscall is not in it).
func BenchmarkLogLine(b *testing.B) {
	log, err := newLoggerFor(io.Discard, "info", true)
	if err != nil {
		b.Fatal(err)
	}
	created := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		log.Info("telemetry sent", "id", "sensor-thl-001-12345", "seq", uint64(12345), "created", created)
	}
}
