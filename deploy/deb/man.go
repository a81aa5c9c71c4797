package main

import (
	"bytes"
	"fmt"
	"strings"
	"time"
)

// helpFunc runs the tracker with args and returns what it printed on
// stdout; it must exit 0 (help is an answer, not an error).
type helpFunc func(args ...string) (string, error)

// manPage writes tracker(1) from the tracker's own help: `tracker help`
// gives the description and the command list, `tracker <command> -h` each
// command's synopsis, description and flags. Built from the binary being
// packaged, the page cannot drift from it.
func manPage(help helpFunc, version string, date time.Time) ([]byte, error) {
	top, err := help("help")
	if err != nil {
		return nil, fmt.Errorf("tracker help: %w", err)
	}
	about, names, err := parseTopHelp(top)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, ".TH TRACKER 1 %q %q \"User Commands\"\n", date.UTC().Format("2006-01-02"), "tracker "+version)
	b.WriteString(".SH NAME\ntracker \\- container tracker firmware (BME280 and GPS telemetry to Azure IoT Hub)\n")
	b.WriteString(".SH SYNOPSIS\n.B tracker\n.I command\n.RI [ flags ]\n")
	b.WriteString(".SH DESCRIPTION\n")
	paragraphs(&b, about)
	b.WriteString(".SH COMMANDS\n")
	for _, n := range names {
		text, err := help(n, "-h")
		if err != nil {
			return nil, fmt.Errorf("tracker %s -h: %w", n, err)
		}
		if err := command(&b, n, text); err != nil {
			return nil, err
		}
	}
	b.WriteString(`.SH FILES
.TP
.I /etc/tracker/tracker.json
the config file; an example with every key is in
.I /usr/share/doc/tracker/examples/tracker.json
.TP
.I /etc/default/tracker
flags and TRACKER_* variables for
.B tracker run
under systemd
.TP
.I /var/lib/tracker
the queue of unsent readings and the cached hub assignment
.SH SEE ALSO
.BR systemctl (1),
.BR journalctl (1),
.I /usr/share/doc/tracker/README.md
`)
	return b.Bytes(), nil
}

// parseTopHelp splits `tracker help`: the about paragraphs between the
// usage line and "commands:", then one "  name  summary" line per command.
func parseTopHelp(text string) (about string, names []string, err error) {
	head, list, ok := strings.Cut(text, "\ncommands:\n")
	if !ok || !strings.HasPrefix(head, "usage: tracker ") {
		return "", nil, fmt.Errorf("tracker help: want \"usage: tracker ...\" and a \"commands:\" list, got:\n%s", text)
	}
	_, about, _ = strings.Cut(head, "\n")
	for _, line := range strings.Split(list, "\n") {
		if !strings.HasPrefix(line, "  ") {
			break
		}
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	if len(names) == 0 {
		return "", nil, fmt.Errorf("tracker help lists no commands:\n%s", text)
	}
	return strings.TrimSpace(about), names, nil
}

// command renders `tracker <name> -h`: "usage: tracker NAME [flags]", the
// about paragraphs, then "flags:" in flag.PrintDefaults form.
func command(b *bytes.Buffer, name, text string) error {
	usage, rest, _ := strings.Cut(text, "\n")
	want := "usage: tracker " + name
	if !strings.HasPrefix(usage, want) {
		return fmt.Errorf("tracker %s -h: first line %q; want %q...", name, usage, want)
	}
	about, flags, _ := strings.Cut(rest, "\nflags:\n")
	fmt.Fprintf(b, ".SS %q\n", strings.TrimPrefix(usage, "usage: "))
	paragraphs(b, strings.TrimSpace(about))
	// PrintDefaults: "  -name type" then the usage, on the same line after
	// a tab or on lines starting "    \t".
	for _, line := range strings.Split(flags, "\n") {
		switch {
		case strings.HasPrefix(line, "  -"):
			head, usage, _ := strings.Cut(strings.TrimPrefix(line, "  "), "\t")
			flag, typ, _ := strings.Cut(strings.TrimSpace(head), " ")
			flag = escape("-" + flag) // the tracker takes --name as well as -name
			if typ != "" {
				fmt.Fprintf(b, ".TP\n.BI %s \" %s\"\n", flag, escape(typ))
			} else {
				fmt.Fprintf(b, ".TP\n.B %s\n", flag)
			}
			if usage != "" {
				b.WriteString(textLine(usage))
			}
		case strings.HasPrefix(line, "    \t"):
			b.WriteString(textLine(strings.TrimPrefix(line, "    \t")))
		}
	}
	return nil
}

// paragraphs writes text, its blank lines becoming paragraph breaks.
func paragraphs(b *bytes.Buffer, text string) {
	for i, p := range strings.Split(text, "\n\n") {
		if i > 0 {
			b.WriteString(".PP\n")
		}
		for _, line := range strings.Split(p, "\n") {
			b.WriteString(textLine(line))
		}
	}
}

// textLine is one line of running text: backslashes and dashes escaped,
// and a leading dot or apostrophe kept from being read as a request.
func textLine(s string) string {
	s = escape(strings.TrimSpace(s))
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = "\\&" + s
	}
	return s + "\n"
}

func escape(s string) string {
	return strings.NewReplacer(`\`, `\e`, "-", `\-`).Replace(s)
}
