package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/reefer/tracker/deploy/fleetctl/azrest"
)

type eventMsg = azrest.Event

// killScenario: a backlog of o.backlog readings, topped up before every
// start, and o.kills kill -9 at random points while it drains; then a
// clean run drains everything.
func killScenario(ctx context.Context, o options) error {
	r, err := newRig(ctx, o, "kill", "", 3600) // the tracker's own sampling stays out of the way
	if err != nil {
		return err
	}
	defer r.close()
	rnd := rand.New(rand.NewPCG(o.seed, 0))

	// Drain rate first: one clean drain of the backlog.
	if _, err := r.topUp(o.backlog); err != nil {
		return err
	}
	start := time.Now()
	if err := r.startTracker(); err != nil {
		return err
	}
	if err := r.waitFor(ctx, 10*time.Minute, func() bool { return r.led.has(uint64(o.backlog)) }); err != nil {
		return fmt.Errorf("first drain: %w", err)
	}
	drain := time.Since(start)
	first, _ := r.led.firstAfter(start)
	flow := r.led.last().Sub(first)
	r.stopTracker(syscall.SIGTERM)

	killedAt := make([]time.Duration, 0, o.kills)
	for i := 0; i < o.kills; i++ {
		if _, err := r.topUp(o.backlog); err != nil {
			return fmt.Errorf("kill %d: top up: %w", i+1, err)
		}
		if err := r.startTracker(); err != nil {
			return err
		}
		d := o.killMin + time.Duration(rnd.Int64N(int64(o.killMax-o.killMin)))
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return ctx.Err()
		}
		r.stopTracker(syscall.SIGKILL)
		killedAt = append(killedAt, d)
		if (i+1)%10 == 0 {
			fmt.Printf("  kill %d/%d, %d messages received so far\n", i+1, o.kills, r.led.count())
		}
	}
	// A clean run to the end: everything still queued goes out.
	if err := r.startTracker(); err != nil {
		return err
	}
	var want uint64
	err = r.waitFor(ctx, 10*time.Minute, func() bool {
		want = r.led.figures().generated
		return want > 0 && r.led.has(want) && r.idle(2*time.Second)
	})
	r.stopTracker(syscall.SIGTERM)
	f := r.led.figures()
	fmt.Printf("kill: %d kill -9 at random points %s..%s after start, backlog %d before each\n", o.kills, o.killMin, o.killMax, o.backlog)
	fmt.Printf("  %s\n", f)
	fmt.Printf("  drain rate %.0f readings/s once connected (%d queued readings; %.1f s from start, DPS registration included)\n",
		float64(o.backlog)/max(flow.Seconds(), 0.001), o.backlog, drain.Seconds())
	fmt.Printf("  tracker starts %d; queue recoveries after a kill: %d\n\n", r.starts, r.logCount("corrupt"))
	if err != nil {
		return fmt.Errorf("final drain: %w", err)
	}
	return verdict(f, 0)
}

// idle reports whether nothing arrived for d.
func (r *rig) idle(d time.Duration) bool { return time.Since(r.led.last()) > d }

// outageScenario: the tracker samples every second; the hub is stopped for
// o.outage and started again on the same data directory.
func outageScenario(ctx context.Context, o options) error {
	r, err := newRig(ctx, o, "outage", "", 1)
	if err != nil {
		return err
	}
	defer r.close()
	if err := r.startTracker(); err != nil {
		return err
	}
	if err := r.waitFor(ctx, time.Minute, func() bool { return r.led.count() >= 10 }); err != nil {
		return fmt.Errorf("first telemetry: %w", err)
	}
	// Let the connection become stable (StableAfter, 2 min) as it would be
	// on a voyage, so the outage is one of a connection that had worked.
	select {
	case <-time.After(o.settle):
	case <-ctx.Done():
		return ctx.Err()
	}
	before := r.led.figures().generated
	down := time.Now()
	r.stopEmu()
	fmt.Printf("  hub down at %s for %s\n", down.UTC().Format(time.TimeOnly), o.outage)
	select {
	case <-time.After(o.outage):
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := r.startEmu(ctx); err != nil {
		return err
	}
	up := time.Now()
	var back time.Time
	if err := r.waitFor(ctx, 10*time.Minute, func() bool {
		var ok bool
		back, ok = r.led.firstAfter(up)
		return ok
	}); err != nil {
		return fmt.Errorf("reconnect: %w", err)
	}
	// Everything sampled during the outage is about o.outage seconds of
	// readings; wait until all of it and the next few arrived.
	outageReadings := uint64(o.outage / time.Second)
	var drained time.Time
	err = r.waitFor(ctx, 10*time.Minute, func() bool {
		f := r.led.figures()
		if f.generated >= before+outageReadings+3 && r.led.has(f.generated) {
			drained = time.Now()
			return true
		}
		return false
	})
	r.stopTracker(syscall.SIGTERM)
	f := r.led.figures()
	fmt.Printf("outage: hub (azemu) stopped for %s while the tracker sampled every second, then restarted on the same data\n", o.outage)
	fmt.Printf("  %s\n", f)
	fmt.Printf("  time to reconnect: first message %.1f s after the hub was back\n", back.Sub(up).Seconds())
	if !drained.IsZero() {
		fmt.Printf("  caught up %.1f s after the hub was back: the ~%d readings of the outage and every one since received\n",
			drained.Sub(up).Seconds(), outageReadings)
	}
	fmt.Printf("  reconnect waits the tracker logged: %s\n\n", r.reconnectWaits())
	if err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	return verdict(f, 0)
}

// reconnectWaits summarises the retry_in of the hub client's failed
// connects.
func (r *rig) reconnectWaits() string {
	b, _ := os.ReadFile(filepath.Join(r.dir, "tracker.log"))
	var n int
	var longest time.Duration
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.Contains(l, "iothub connect failed") {
			continue
		}
		_, v, ok := strings.Cut(l, "retry_in=")
		if !ok {
			continue
		}
		v, _, _ = strings.Cut(v, " ")
		if d, err := time.ParseDuration(v); err == nil {
			n++
			longest = max(longest, d)
		}
	}
	return fmt.Sprintf("%d failed connects, longest wait %s", n, longest.Round(time.Millisecond))
}

// diskScenario: the state directory on a tiny tmpfs that fills while the
// hub is down, then frees up.
func diskScenario(ctx context.Context, o options) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: mounting a tmpfs needs root (run as root, e.g. in CI)", errSkipped)
	}
	mnt := filepath.Join(o.work, "disk", "mnt")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return err
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dk", o.diskKiB), "faults", mnt).CombinedOutput(); err != nil {
		return fmt.Errorf("%w: mount tmpfs: %v: %s", errSkipped, err, out)
	}
	defer exec.Command("umount", "-l", mnt).Run()
	r, err := newRig(ctx, o, "disk", filepath.Join(mnt, "state"), 1)
	if err != nil {
		return err
	}
	defer r.close()
	if err := r.startTracker(); err != nil {
		return err
	}
	if err := r.waitFor(ctx, time.Minute, func() bool { return r.led.count() >= 3 }); err != nil {
		return fmt.Errorf("first telemetry: %w", err)
	}
	// Hub down, and a filler file takes all but ~48 KiB of the disk, so
	// the queue runs out of room within about a minute of readings.
	r.stopEmu()
	filler := filepath.Join(mnt, "filler")
	if err := fill(filler, mnt, 48<<10); err != nil {
		return err
	}
	full := 150 * time.Second
	fmt.Printf("  hub down, disk filled; sampling every second for %s\n", full)
	select {
	case <-time.After(full):
	case <-ctx.Done():
		return ctx.Err()
	}
	noSpace := r.logCount("space")
	os.Remove(filler) // space returns
	if err := r.startEmu(ctx); err != nil {
		return err
	}
	up := time.Now()
	var dropped float64
	err = r.waitFor(ctx, 5*time.Minute, func() bool {
		f := r.led.figures()
		d, _ := r.reported(ctx, "droppedMessages").(float64)
		dropped = d
		// Caught up: the newest reading is in, and every gap is one the
		// queue reported dropping.
		return f.generated > 0 && time.Since(up) > 10*time.Second && uint64(len(f.lost)) <= uint64(d) &&
			time.Since(r.led.last()) < 3*time.Second
	})
	r.stopTracker(syscall.SIGTERM)
	f := r.led.figures()
	fmt.Printf("disk: state directory on a %d KiB tmpfs filled while the hub was down for %s, then freed\n", o.diskKiB, full)
	fmt.Printf("  %s\n", f)
	fmt.Printf("  dropped by the queue for want of space, as reported (droppedMessages): %.0f; tracker log lines about space: %d\n\n", dropped, noSpace)
	if err != nil {
		return fmt.Errorf("after freeing the disk: %w", err)
	}
	return verdict(f, int(dropped))
}

// fill writes a file until the filesystem at dir has about leave bytes free.
func fill(path, dir string, leave int64) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return err
	}
	free := int64(st.Bavail) * st.Bsize
	if free <= leave {
		return nil
	}
	return os.WriteFile(path, make([]byte, free-leave), 0o644)
}

// verdict fails a scenario that lost more than the queue reported dropping,
// or resent a reading under another id or body.
func verdict(f figures, dropped int) error {
	switch {
	case len(f.lost) > dropped:
		return fmt.Errorf("%d readings lost, %d accounted for as dropped", len(f.lost), dropped)
	case f.mismatched > 0:
		return fmt.Errorf("%d duplicates with a different id or body", f.mismatched)
	}
	return nil
}
