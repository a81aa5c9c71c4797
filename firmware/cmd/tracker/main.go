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
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"syscall"

	"github.com/reefer/tracker/firmware/buildinfo"
	"github.com/reefer/tracker/firmware/config"
)

// version is stamped by the Makefile with -ldflags "-X main.version=...";
// for a plain `go build` it stays empty and build falls back to what the
// toolchain recorded (module version, VCS revision).
var version string

// build is what this binary is: version, revision, Go version.
var build = buildinfo.Read(version)

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

// newFlags returns a subcommand's flag set. Its -h text (synopsis, about,
// flags) is the command's documentation: the man page tracker(1) is made
// from it (deploy/deb), so the two cannot drift.
func newFlags(name, about string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: tracker %s [flags]\n\n%s\n", name, about)
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprintln(fs.Output(), "\nflags:")
			fs.PrintDefaults()
		}
	}
	return fs
}

// parseFlags parses a subcommand's flags; no subcommand takes arguments.
// -h prints the usage to stdout and returns flag.ErrHelp, which run turns
// into exit 0; a bad flag or a stray argument is a usageError (stderr,
// exit 2).
func parseFlags(fs *flag.FlagSet, args []string, s stdio) error {
	fs.SetOutput(io.Discard) // flag would print errors and usage to one writer
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(s.out)
		fs.Usage()
		return err
	case err != nil:
		return usageError{fmt.Sprintf("%v\nrun 'tracker %s -h' for its flags", err, fs.Name())}
	case fs.NArg() > 0:
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
	switch {
	case len(args) == 0:
		printUsage(io.err)
		return exitUsage
	case args[0] == "help" && len(args) == 2:
		return run(ctx, []string{args[1], "-h"}, io) // tracker help doctor
	case args[0] == "-h" || args[0] == "--help" || args[0] == "help" && len(args) == 1:
		printUsage(io.out)
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
		fmt.Fprintf(io.err, "%stracker %s: %v\n", journalPrefix(io.err, slog.LevelError), args[0], err)
		return exitConfig
	default:
		fmt.Fprintf(io.err, "%stracker %s: %v\n", journalPrefix(io.err, slog.LevelError), args[0], err)
		return exitFail
	}
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: tracker <command> [flags]\n\n"+about+"\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'tracker <command> -h' (or 'tracker help <command>') for a command's flags.")
}

// about is what the tracker is, the first paragraph of `tracker -h` and of
// the man page.
const about = `The firmware of a refrigerated shipping-container tracker: it reads a BME280
(temperature, pressure, humidity) over I2C and a GPS over serial, provisions
itself through Azure IoT Hub DPS with its X.509 certificate, and sends
telemetry to IoT Hub over MQTT. The config file is /etc/tracker/tracker.json;
systemd runs 'tracker run' as tracker.service.`

func runVersion(_ context.Context, io stdio, args []string) error {
	fs := newFlags("version", "Prints the firmware version, the VCS revision it was built from and the Go\nversion.")
	if err := parseFlags(fs, args, io); err != nil {
		return err
	}
	fmt.Fprintf(io.out, "tracker %s\n", build)
	return nil
}
