package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"syscall"
)

// newLogger logs key=value lines to w. When w is the journal's stream
// (systemd sets JOURNAL_STREAM to its device:inode), the journal stamps each
// line, so the time field is dropped, and each line starts with the
// sd-daemon(3) priority prefix ("<4>" for WARN, "<3>" for ERROR) so that
// `journalctl -p warning` shows warnings and errors and not the rest.
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	return newLoggerFor(w, level, isJournal(w))
}

func newLoggerFor(w io.Writer, level string, journal bool) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	if !journal {
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}
	var h journalHandler
	for i, l := range journalLevels {
		h[i] = slog.NewTextHandler(prefixWriter{w, []byte(journalPrefixFor(l))}, opts)
	}
	return slog.New(h), nil
}

// journalLevels are the slog levels with their own syslog priority; a
// record takes the highest one at or below its level.
var journalLevels = [...]slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError}

// journalPrefixFor is the sd-daemon(3) prefix of a level: syslog priorities
// debug 7, info 6, warning 4, err 3.
func journalPrefixFor(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "<3>"
	case l >= slog.LevelWarn:
		return "<4>"
	case l >= slog.LevelInfo:
		return "<6>"
	default:
		return "<7>"
	}
}

// journalPrefix is the prefix for a line of level l written to w: empty
// unless w is the journal.
func journalPrefix(w io.Writer, l slog.Level) string {
	if !isJournal(w) {
		return ""
	}
	return journalPrefixFor(l)
}

// isJournal reports whether w is connected to the journal: JOURNAL_STREAM
// names the stream's device and inode, which must be those of w (a child
// process may inherit the variable but not the stream).
func isJournal(w io.Writer) bool {
	f, ok := w.(*os.File)
	env := os.Getenv("JOURNAL_STREAM")
	if !ok || env == "" {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return env == strconv.FormatUint(uint64(st.Dev), 10)+":"+strconv.FormatUint(uint64(st.Ino), 10)
}

// journalHandler sends each record to the text handler of its priority.
type journalHandler [len(journalLevels)]slog.Handler

func (h journalHandler) pick(l slog.Level) slog.Handler {
	i := 0
	for j, jl := range journalLevels {
		if l >= jl {
			i = j
		}
	}
	return h[i]
}

func (h journalHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.pick(l).Enabled(ctx, l)
}

func (h journalHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.pick(r.Level).Handle(ctx, r)
}

func (h journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	for i := range h {
		h[i] = h[i].WithAttrs(as)
	}
	return h
}

func (h journalHandler) WithGroup(name string) slog.Handler {
	for i := range h {
		h[i] = h[i].WithGroup(name)
	}
	return h
}

// prefixWriter writes prefix and p in one Write: slog writes a record in
// one call, and the journal reads the prefix at the start of each line.
type prefixWriter struct {
	w      io.Writer
	prefix []byte
}

func (p prefixWriter) Write(b []byte) (int, error) {
	buf := make([]byte, 0, len(p.prefix)+len(b))
	buf = append(append(buf, p.prefix...), b...)
	if _, err := p.w.Write(buf); err != nil {
		return 0, err
	}
	return len(b), nil
}
