// Command tracker is the container tracker firmware. It only wires: each
// subcommand parses its flags and hands off to the packages that do the work.
//
//	tracker run [flags]        the daemon: provision, sample, send, obey the twin (systemd)
//	tracker provision [flags]  register through DPS once and print the assigned hub
//	tracker doctor [flags]     check config, identity, clock, sensors, DPS and hub
//	tracker sensors [flags]    read the sensors once (or --watch) for a technician
//	tracker version            print the firmware version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"

	"github.com/reefer/tracker/firmware/config"
)

// version is stamped by the Makefile with -ldflags "-X main.version=...".
var version = "dev"

// Exit codes. exitConfig is listed in the systemd unit's
// RestartPreventExitStatus= so a typo in the config does not loop restarts.
const (
	exitOK     = 0
	exitFail   = 1
	exitUsage  = 2
	exitConfig = 78 // EX_CONFIG from sysexits.h
)

// stdio is what a subcommand may print to; tests pass buffers.
type stdio struct {
	out, err io.Writer
}

type command struct {
	summary string
	run     func(ctx context.Context, io stdio, args []string) error
}

// commands lists the subcommands; each lives in its own file.
var commands = map[string]command{
	"version": {"print the firmware version", runVersion},
}

// usageError makes run exit with exitUsage; configError with exitConfig.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

type configError struct{ err error }

func (e configError) Error() string { return e.err.Error() }
func (e configError) Unwrap() error { return e.err }

// configFlags registers --config and the config.Overrides flags that run,
// provision and doctor share.
func configFlags(fs *flag.FlagSet) (path *string, o *config.Overrides) {
	path = fs.String("config", config.DefaultPath, "config `file`")
	o = new(config.Overrides)
	o.RegisterFlags(fs)
	return path, o
}

// parseFlags parses a subcommand's flags; no subcommand takes arguments.
// After -h it returns flag.ErrHelp, which run turns into exit 0.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	return nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], stdio{os.Stdout, os.Stderr})
	stop()
	os.Exit(code)
}

// run is main without the process: it returns the exit code.
func run(ctx context.Context, args []string, io stdio) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(io.err)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(io.err, "tracker: unknown command %q\n\n", args[0])
		printUsage(io.err)
		return exitUsage
	}
	err := cmd.run(ctx, io, args[1:])
	var ue usageError
	var ce configError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(io.err, "tracker %s: %v\n", args[0], err)
		return exitUsage
	case errors.As(err, &ce):
		fmt.Fprintf(io.err, "tracker %s: %v\n", args[0], err)
		return exitConfig
	default:
		fmt.Fprintf(io.err, "tracker %s: %v\n", args[0], err)
		return exitFail
	}
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: tracker <command> [flags]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'tracker <command> -h' for a command's flags.")
}

func runVersion(_ context.Context, io stdio, args []string) error {
	if len(args) > 0 {
		return usageError{"takes no arguments"}
	}
	fmt.Fprintf(io.out, "tracker %s\n", version)
	return nil
}
