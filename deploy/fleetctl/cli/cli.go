// Package cli is fleetctl's command line: global options, the commands and
// their table or JSON output, on top of package fleet.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/reefer/tracker/deploy/fleetctl/fleet"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailed  = 1 // the service refused, something was not there, a bulk item failed
	ExitUsage   = 2 // bad command line or options
	ExitConnect = 3 // no usable connection string
)

// runFunc runs a command.
type runFunc func(e *env) (any, error)

// env is what a command runs with.
type env struct {
	ctx    context.Context
	g      *globals
	fs     *flag.FlagSet
	args   []string // positional arguments after the command words
	f      *fleet.Fleet
	stdout io.Writer
	stderr io.Writer
}

// command is one fleetctl command.
type command struct {
	path    string // "group create"
	args    string // positional arguments, for usage
	summary string
	dps     bool // needs the DPS connection string
	hub     bool // needs the hub connection string
	nargs   [2]int
	// flags registers the command's flags and sets run; the check it
	// returns (may be nil) runs after parsing. Commands without flags
	// have run.
	flags func(fs *flag.FlagSet, run *runFunc) func() error
	run   runFunc
	table func(w io.Writer, v any)
}

// usageError marks a bad command line (exit 2).
type usageError struct{ msg string }

func (u usageError) Error() string { return u.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// Main runs fleetctl with args (without the program name) and returns the
// exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	g := &globals{}
	top := flag.NewFlagSet("fleetctl", flag.ContinueOnError)
	top.SetOutput(io.Discard)
	g.register(top)
	if err := top.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout)
			return ExitOK
		}
		fmt.Fprintf(stderr, "fleetctl: %v\n", err)
		return ExitUsage
	}
	rest := top.Args()
	if len(rest) == 0 || rest[0] == "help" {
		usage(stdout)
		if len(rest) == 0 {
			return ExitUsage
		}
		return ExitOK
	}
	cmd, rest := lookup(rest)
	if cmd == nil {
		return unknownCommand(rest, stdout, stderr)
	}
	fs := flag.NewFlagSet("fleetctl "+cmd.path, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	g.register(fs)
	// Re-apply the options given before the command (register reset them).
	if err := top.Parse(args[:len(args)-len(top.Args())]); err != nil {
		return ExitUsage
	}
	var check func() error
	run := cmd.run
	if cmd.flags != nil {
		check = cmd.flags(fs, &run)
	}
	pos, err := parseInterspersed(fs, rest)
	if errors.Is(err, flag.ErrHelp) {
		commandUsage(stdout, cmd, fs)
		return ExitOK
	}
	if err == nil && (len(pos) < cmd.nargs[0] || (cmd.nargs[1] >= 0 && len(pos) > cmd.nargs[1])) {
		err = usagef("usage: fleetctl %s %s", cmd.path, cmd.args)
	}
	if err == nil && check != nil {
		err = check()
	}
	if err == nil && g.output != "table" && g.output != "json" {
		err = usagef("--output must be table or json, not %q", g.output)
	}
	if err != nil {
		fmt.Fprintf(stderr, "fleetctl %s: %v\n", cmd.path, err)
		return ExitUsage
	}
	g.fromEnv(getenv)
	var dry io.Writer
	if g.dryRun {
		dry = stdout
	}
	f, err := g.clients(cmd.dps, cmd.hub, dry)
	if err != nil {
		fmt.Fprintf(stderr, "fleetctl %s: %v\n", cmd.path, err)
		if errors.Is(err, errNoConnection) {
			return ExitConnect
		}
		return ExitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	e := &env{ctx: ctx, g: g, fs: fs, args: pos, f: f, stdout: stdout, stderr: stderr}
	if g.output == "table" && !g.dryRun {
		f.Progress = progressTo(stderr)
	}
	res, err := run(e)
	// After an error only a bulk summary is worth printing (what was done).
	if _, partial := res.(summaries); err != nil && !partial {
		res = nil
	}
	if res != nil && !g.dryRun {
		if g.output == "json" || cmd.table == nil {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			_ = enc.Encode(res)
		} else {
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			cmd.table(tw, res)
			tw.Flush()
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "fleetctl %s: %v\n", cmd.path, err)
		var u usageError
		if errors.As(err, &u) {
			return ExitUsage
		}
		return ExitFailed
	}
	return ExitOK
}

// lookup finds the command named by the first one or two words.
func lookup(words []string) (*command, []string) {
	for n := min(2, len(words)); n >= 1; n-- {
		name := strings.Join(words[:n], " ")
		for i := range commands {
			if commands[i].path == name {
				return &commands[i], words[n:]
			}
		}
	}
	return nil, words
}

// parseInterspersed parses flags anywhere among the positional arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// progressTo prints bulk progress on one line of w (a terminal's stderr).
func progressTo(w io.Writer) func(step string, done, total int) {
	last := map[string]int{}
	return func(step string, done, total int) {
		// Print at most every 5 %, and always the end.
		if done != total && done-last[step] < max(1, total/20) {
			return
		}
		last[step] = done
		fmt.Fprintf(w, "%s: %d/%d\n", step, done, total)
	}
}

// unknownCommand answers a command line that names no command. A group
// alone ("fleetctl group", "fleetctl credential-policy -h") lists that
// group's commands, as a stranger trying the tool expects; anything else
// is an unknown command.
func unknownCommand(words []string, stdout, stderr io.Writer) int {
	grp := words[0]
	var buf strings.Builder
	if !commandTable(&buf, grp) {
		fmt.Fprintf(stderr, "fleetctl: unknown command %q; run fleetctl help\n", grp)
		return ExitUsage
	}
	if len(words) == 2 && (words[1] == "-h" || words[1] == "-help" || words[1] == "--help") {
		fmt.Fprintf(stdout, "usage: fleetctl %s COMMAND [ARGS] [flags]\n\ncommands:\n%s\nfleetctl %s COMMAND -h shows a command's flags; fleetctl help the global options.\n", grp, buf.String(), grp)
		return ExitOK
	}
	if len(words) == 1 {
		fmt.Fprintf(stderr, "fleetctl %s: which command? one of:\n%s", grp, buf.String())
	} else {
		fmt.Fprintf(stderr, "fleetctl: unknown command %q; the %s commands are:\n%s", grp+" "+words[1], grp, buf.String())
	}
	return ExitUsage
}

// commandTable writes the commands of group grp ("" for every group),
// groups in alphabetical order, and says whether there was any.
func commandTable(w io.Writer, grp string) bool {
	byGroup := map[string][]*command{}
	var groups []string
	for i := range commands {
		c := &commands[i]
		g, _, _ := strings.Cut(c.path, " ")
		if grp != "" && g != grp {
			continue
		}
		if byGroup[g] == nil {
			groups = append(groups, g)
		}
		byGroup[g] = append(byGroup[g], c)
	}
	sort.Strings(groups)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, g := range groups {
		for _, c := range byGroup[g] {
			fmt.Fprintf(tw, "  %s %s\t%s\n", c.path, c.args, c.summary)
		}
	}
	tw.Flush()
	return len(groups) > 0
}

func usage(w io.Writer) {
	fmt.Fprint(w, `fleetctl: the operator's tool for a tracker fleet on Azure IoT DPS + IoT Hub,
or on the local emulator (azemu). It speaks the services' REST APIs with the
connection strings' shared access policies.

usage: fleetctl [options] COMMAND [ARGS] [flags]

commands:
`)
	commandTable(w, "")
	fmt.Fprintf(w, `
options (before or after the command):
  --dps-connection-string CS   DPS service policy (env %s)
  --hub-connection-string CS   IoT Hub service policy (env %s)
  --emulator FILE              a local azemu's emulator.json (env %s)
  --service-url URL            send requests here instead of https://HostName (env %s)
  --ca-file FILE               extra trusted CA for TLS (env %s)
  --output table|json, -o      output format (json for scripts)
  --dry-run                    print the changing requests instead of sending them
  --timeout D                  give up after D (default 10m)

DPS enrollment requests use api-version 2025-07-01-preview, the first with an
enrollment's credentialPolicyName, so that changing a group or an enrollment
keeps its credential policy; the other DPS requests use 2021-10-01 and the
hub's 2021-04-12.

exit status: 0 done, 1 failed (refused, not found, a bulk item failed), 2 bad usage,
3 no connection string. fleetctl COMMAND -h shows a command's flags.
`, EnvDPS, EnvHub, EnvEmulator, EnvServiceURL, EnvCAFile)
}

func commandUsage(w io.Writer, c *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: fleetctl %s %s\n\n%s\n\nflags:\n", c.path, c.args, c.summary)
	fs.SetOutput(w)
	fs.VisitAll(func(f *flag.Flag) {
		if isGlobal(f.Name) {
			return
		}
		fmt.Fprintf(w, "  --%s\t%s\n", f.Name, f.Usage)
	})
	fmt.Fprintln(w, "\n(and the global options: fleetctl help)")
}

func isGlobal(name string) bool {
	switch name {
	case "dps-connection-string", "hub-connection-string", "service-url", "ca-file", "emulator", "output", "o", "dry-run", "timeout":
		return true
	}
	return false
}

// readFile reads a flag's file argument.
func readFile(flagName, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--%s: %w", flagName, err)
	}
	return string(b), nil
}

// jsonObject parses a flag's JSON object.
func jsonObject(flagName, s string) (map[string]any, error) {
	if s == "" {
		return nil, nil
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil || m == nil {
		return nil, usagef("--%s must be a JSON object like '{\"telemetryDelay\":3}', got %q", flagName, s)
	}
	return m, nil
}
