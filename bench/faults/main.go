// Command faults is a fault campaign you can rerun: it runs the real
// tracker binary against the real emulator binary (azemu) and breaks
// things the way a voyage does, then checks from the hub's side that
// nothing was lost and that duplicates are only resends (same message id,
// same body):
//
//   - kill: a backlog of thousands of queued readings and repeated kill -9
//     at random points while it drains (the queue is topped up between
//     kills, so every kill lands in a drain);
//   - outage: the hub (azemu) stopped for -outage while the tracker samples
//     every second, then started again on the same data directory: time
//     to reconnect, drain rate;
//   - disk: the state directory on a tiny tmpfs that fills up while the
//     hub is down, then frees up (needs root to mount; skipped otherwise).
//
// It prints readings generated (the highest sequence number: a number is
// taken in the same transaction that stores the reading, so a missing
// number is a lost reading), received, lost, dropped by the queue as
// reported, duplicated, drain rate and time to reconnect. bench/README.md
// has the figures and the command.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		os.Exit(1)
	}
}

type options struct {
	work, tracker, azemu string
	scenarios            string
	kills                int
	backlog              int
	killMin, killMax     time.Duration
	outage               time.Duration
	settle               time.Duration
	diskKiB              int
	seed                 uint64
}

func run(ctx context.Context, args []string) error {
	var o options
	fs := flag.NewFlagSet("faults", flag.ContinueOnError)
	fs.StringVar(&o.work, "work", ".faults", "working directory (emulator data, certificates, tracker state, logs); emptied first")
	fs.StringVar(&o.tracker, "tracker", "bin/tracker-linux-amd64", "tracker binary (make build)")
	fs.StringVar(&o.azemu, "azemu", "bin/azemu", "emulator binary (make emulator)")
	fs.StringVar(&o.scenarios, "scenarios", "kill,outage,disk", "comma-separated scenarios to run: kill, outage, disk")
	fs.IntVar(&o.kills, "kills", 100, "kill -9 count")
	fs.IntVar(&o.backlog, "backlog", 10000, "queued readings before each kill (the queue is topped up to this)")
	fs.DurationVar(&o.killMin, "kill-min", 300*time.Millisecond, "earliest kill after a start")
	fs.DurationVar(&o.killMax, "kill-max", 3*time.Second, "latest kill after a start")
	fs.DurationVar(&o.outage, "outage", 2*time.Minute, "how long the hub stays down (the issue asks for 10m)")
	fs.DurationVar(&o.settle, "settle", 2*time.Minute+5*time.Second, "connected time before the outage (the hub client counts a connection as working after 2 min)")
	fs.IntVar(&o.diskKiB, "disk-kib", 256, "size of the tmpfs for the disk scenario")
	fs.Uint64Var(&o.seed, "seed", 1, "random seed for the kill points")
	if err := fs.Parse(args); err != nil {
		return err
	}
	for _, b := range []string{o.tracker, o.azemu} {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("%w (make build emulator)", err)
		}
	}
	abs, err := filepath.Abs(o.work)
	if err != nil {
		return err
	}
	o.work = abs
	if err := os.RemoveAll(o.work); err != nil {
		return err
	}
	for _, s := range strings.Split(o.scenarios, ",") {
		var err error
		switch s = strings.TrimSpace(s); s {
		case "kill":
			err = killScenario(ctx, o)
		case "outage":
			err = outageScenario(ctx, o)
		case "disk":
			err = diskScenario(ctx, o)
		default:
			err = fmt.Errorf("unknown scenario %q", s)
		}
		if errors.Is(err, errSkipped) {
			fmt.Printf("%s: SKIPPED: %v\n\n", s, err)
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

var errSkipped = errors.New("skipped")
