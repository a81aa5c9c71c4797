package main

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// fakeHelp answers like the tracker does (flag.PrintDefaults layout).
func fakeHelp(args ...string) (string, error) {
	switch strings.Join(args, " ") {
	case "help":
		return "usage: tracker <command> [flags]\n\nThe firmware.\n.dotted line -x\n\ncommands:\n  run        the daemon\n  version    print the version\n\nRun 'tracker <command> -h'.\n", nil
	case "run -h":
		return "usage: tracker run [flags]\n\nRuns the daemon.\n\nflags:\n  -config file\n    \tconfig `file` (default \"/etc/tracker/tracker.json\")\n  -v\tlog more\n  -telemetry-delay seconds\n    \tseconds between\n    \treadings (a\\b)\n", nil
	case "version -h":
		return "usage: tracker version [flags]\n\nPrints the version.\n", nil
	}
	return "", errors.New("unexpected " + strings.Join(args, " "))
}

func TestManPage(t *testing.T) {
	t.Parallel()
	b, err := manPage(fakeHelp, "1.2.0", time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	page := string(b)
	for _, want := range []string{
		".TH TRACKER 1 \"2026-12-03\" \"tracker 1.2.0\" \"User Commands\"\n",
		".SH DESCRIPTION\nThe firmware.\n\\&.dotted line \\-x\n",
		".SS \"tracker run [flags]\"\nRuns the daemon.\n",
		".TP\n.BI \\-\\-config \" file\"\nconfig `file` (default \"/etc/tracker/tracker.json\")\n",
		".TP\n.B \\-\\-v\nlog more\n",
		".TP\n.BI \\-\\-telemetry\\-delay \" seconds\"\nseconds between\nreadings (a\\eb)\n",
		".SS \"tracker version [flags]\"\nPrints the version.\n",
		".SH FILES\n",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("man page lacks %q:\n%s", want, page)
		}
	}
}

func TestManPageRefusesOddHelp(t *testing.T) {
	t.Parallel()
	for name, help := range map[string]helpFunc{
		"help fails":      func(...string) (string, error) { return "", errors.New("exit status 2") },
		"no command list": func(...string) (string, error) { return "usage: tracker\n\nno list\n", nil },
		"command help off": func(args ...string) (string, error) {
			if args[0] == "help" {
				return fakeHelp(args...)
			}
			return "Usage of run:\n", nil
		},
	} {
		if _, err := manPage(help, "1", time.Now()); err == nil {
			t.Errorf("%s: man page made anyway", name)
		}
	}
}
