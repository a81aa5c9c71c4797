package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
)

// newLogger logs key=value lines to w. Under systemd (JOURNAL_STREAM set)
// the journal stamps each line, so the time field is dropped.
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	underJournal := os.Getenv("JOURNAL_STREAM") != ""
	h := slog.NewTextHandler(w, &slog.HandlerOptions{
		Level: lv,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if underJournal && len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})
	return slog.New(h), nil
}
