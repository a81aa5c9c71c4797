package doctor

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// Status is the verdict of one check.
type Status string

// Verdicts. WARN means the tracker works but something needs a look
// (simulated sensor, no GPS fix yet, certificate expiring soon); FAIL means
// it does not work as installed.
const (
	OK   Status = "OK"
	Warn Status = "WARN"
	Fail Status = "FAIL"
)

// Check is the result of one check.
type Check struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	// Detail says what was found, in plain words.
	Detail string `json:"detail"`
	// Fix says what to do; empty when Status is OK. It may span lines.
	Fix string `json:"fix,omitempty"`
}

// Skip is a check that did not run, and why (--offline, no assignment, ...).
type Skip struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// Report is the outcome of Run, in check order.
type Report struct {
	Time    time.Time `json:"time"`
	Checks  []Check   `json:"checks"`
	Skipped []Skip    `json:"skipped,omitempty"`
}

// Failed reports whether any check failed.
func (r Report) Failed() bool { return r.count(Fail) > 0 }

func (r Report) count(s Status) int {
	n := 0
	for _, c := range r.Checks {
		if c.Status == s {
			n++
		}
	}
	return n
}

// MarshalJSON adds the verdict counts, so a script need not count lines.
func (r Report) MarshalJSON() ([]byte, error) {
	type plain Report
	return json.Marshal(struct {
		plain
		Failed bool `json:"failed"`
		Fails  int  `json:"fails"`
		Warns  int  `json:"warns"`
	}{plain(r), r.Failed(), r.count(Fail), r.count(Warn)})
}

func (r *Report) add(c Check)              { r.Checks = append(r.Checks, c) }
func (r *Report) skip(name, reason string) { r.Skipped = append(r.Skipped, Skip{name, reason}) }

// WriteText prints one aligned line per check and, under anything not OK,
// an indented "fix:" line, then a summary. It is meant for a person at a
// terminal who has never seen the tracker's source.
func (r Report) WriteText(w io.Writer) error {
	width := 0
	for _, c := range r.Checks {
		width = max(width, len(c.Name))
	}
	for _, s := range r.Skipped {
		width = max(width, len(s.Name))
	}
	var b strings.Builder
	indent := strings.Repeat(" ", 6+width+2)
	for _, c := range r.Checks {
		fmt.Fprintf(&b, "%-4s  %-*s  %s\n", c.Status, width, c.Name, indentLines(c.Detail, indent))
		if c.Status != OK && c.Fix != "" {
			fmt.Fprintf(&b, "%sfix: %s\n", indent, indentLines(c.Fix, indent+"     "))
		}
	}
	for _, s := range r.Skipped {
		fmt.Fprintf(&b, "%-4s  %-*s  %s\n", "-", width, s.Name, "not checked: "+s.Reason)
	}
	fails, warns := r.count(Fail), r.count(Warn)
	fmt.Fprintf(&b, "\n%d %s: %d OK, %d WARN, %d FAIL", len(r.Checks), plural(len(r.Checks), "check"), len(r.Checks)-fails-warns, warns, fails)
	switch {
	case fails > 0:
		b.WriteString(" — the tracker will not work until each FAIL is fixed.\n")
	case warns > 0:
		b.WriteString(" — the tracker works; look at each WARN.\n")
	default:
		b.WriteString(" — all good.\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func indentLines(s, indent string) string {
	return strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n"+indent)
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
