// Command sdwrites measures what one queued reading costs the storage
// device under the state directory, filesystem journal included: the
// figure an SD card's wear follows, which neither strace (what the process
// hands the kernel) nor /proc/PID/io (page-cache accounting) gives.
//
//	sudo go run ./bench/sdwrites                  # 60 readings at 1/s per store
//	sudo go run ./bench/sdwrites -n 120 -size 444
//
// It makes an ext4 filesystem (4 KiB blocks, mkfs.ext4 defaults otherwise, as on Raspberry Pi OS:
// journal, data=ordered, 5 s commit) in a file on tmpfs, attaches it to a
// loop device and mounts it, then, one store after the other, writes -n
// readings of -size bytes at -interval and reads the loop device's
// counters (/sys/block/loopN/stat) around each run: write requests,
// sectors written and cache flushes. Each flush is an fdatasync reaching
// the device (the data, plus the journal commit when the file's size or
// blocks changed).
//
// The stores:
//
//   - queue: firmware/queue as the tracker uses it: Append per reading,
//     the previous reading's Ack riding on it (one bbolt transaction).
//   - log-grow: an append-only file, one write and one fdatasync per
//     record (length, CRC-32C, payload): what a log-structured queue
//     would cost at best while its file grows.
//   - log-prealloc: the same into a file whose blocks were written once
//     beforehand, so an append changes no metadata: the floor for one
//     synced write per reading.
//
// It needs root (losetup, mount) and skips, saying so, otherwise. See
// bench/README.md for the figures.
package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/reefer/tracker/firmware/queue"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "sdwrites:", err)
		os.Exit(1)
	}
}

// storeNames are the stores in the order they are measured.
var storeNames = []string{"queue", "log-grow", "log-prealloc"}

type options struct {
	n        int
	size     int
	interval time.Duration
	fsMB     int
	mountOpt string
	stores   string
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sdwrites", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.IntVar(&o.n, "n", 60, "readings per store")
	fs.IntVar(&o.size, "size", 444, "bytes per reading (body; 444 is a simulated reading with its properties)")
	fs.DurationVar(&o.interval, "interval", time.Second, "time between readings (the journal commits every 5 s)")
	fs.IntVar(&o.fsMB, "fs-mb", 128, "size of the test filesystem in MiB")
	fs.StringVar(&o.mountOpt, "o", "", "ext4 mount `options`, e.g. lazytime (no journal commit for timestamp updates)")
	fs.StringVar(&o.stores, "stores", "queue,log-grow,log-prealloc", "comma-separated stores to measure")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.n <= 0 || o.size <= 0 {
		return errors.New("-n and -size must be positive")
	}
	want := map[string]bool{}
	for _, n := range strings.Split(o.stores, ",") {
		if !slices.Contains(storeNames, strings.TrimSpace(n)) {
			return fmt.Errorf("-stores: unknown store %q; want some of %s", n, strings.Join(storeNames, ","))
		}
		want[strings.TrimSpace(n)] = true
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(stdout, "sdwrites: skipped: needs root for losetup and mount")
		return nil
	}
	for _, tool := range []string{"losetup", "mkfs.ext4", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(stdout, "sdwrites: skipped: %s not found (apt-get install util-linux e2fsprogs mount)\n", tool)
			return nil
		}
	}
	dev, mnt, cleanup, err := mountLoop(o.fsMB, o.mountOpt)
	if err != nil {
		return err
	}
	defer cleanup()
	fmt.Fprintf(stdout, "ext4 on %s (%d MiB file on tmpfs, mount options %q), %d readings of %d bytes every %v per store\n",
		dev, o.fsMB, o.mountOpt, o.n, o.size, o.interval)
	fmt.Fprintf(stdout, "%-13s %9s %10s %11s %12s %9s\n", "store", "fdatasync", "flushes", "write reqs", "bytes", "bytes/B")
	stores := []struct {
		name  string
		syncs int // fdatasync calls per reading, by construction
		open  func(dir string, o options) (*writer, error)
	}{
		{"queue", 2, openQueue},
		{"log-grow", 1, func(dir string, o options) (*writer, error) { return openLog(dir, o, false) }},
		{"log-prealloc", 1, func(dir string, o options) (*writer, error) { return openLog(dir, o, true) }},
	}
	for _, s := range stores {
		if !want[s.name] {
			continue
		}
		dir := filepath.Join(mnt, s.name)
		if err := os.Mkdir(dir, 0o700); err != nil {
			return err
		}
		// Opening (and for the queue its first transactions and side
		// files) is not the steady state: outside the counters, as is
		// closing.
		w, err := s.open(dir, o)
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		if err := settle(); err != nil {
			return err
		}
		before, err := readStat(dev)
		if err != nil {
			return err
		}
		if err := pace(o, w.write); err != nil {
			w.close()
			return fmt.Errorf("%s: %w", s.name, err)
		}
		// Whatever the journal still owes for this run (its periodic
		// commit) belongs to it.
		if err := settle(); err != nil {
			return err
		}
		after, err := readStat(dev)
		if err != nil {
			return err
		}
		if err := w.close(); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		d := after.sub(before)
		per := func(v int64) float64 { return float64(v) / float64(o.n) }
		fmt.Fprintf(stdout, "%-13s %9d %10.2f %11.2f %12.0f %8.1fx\n", s.name, s.syncs,
			per(d.flushes), per(d.writes), per(d.sectors*512), per(d.sectors*512)/float64(o.size))
	}
	fmt.Fprintln(stdout, "per reading; bytes: sectors written by the device (data, metadata and journal); bytes/B: bytes / reading size")
	return nil
}

// settle syncs the filesystems and waits past ext4's 5 s commit interval,
// so the counters read next include nothing still pending.
func settle() error {
	if err := exec.Command("sync").Run(); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	time.Sleep(6 * time.Second)
	return nil
}

// mountLoop makes and mounts the test filesystem; cleanup undoes it all.
func mountLoop(sizeMB int, opts string) (dev, mnt string, cleanup func(), err error) {
	base := os.TempDir()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		base = "/dev/shm" // the image's own writes must not reach a real disk
	}
	work, err := os.MkdirTemp(base, "sdwrites")
	if err != nil {
		return "", "", nil, err
	}
	var undo []func()
	cleanup = func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	undo = append(undo, func() { os.RemoveAll(work) })
	fail := func(e error) (string, string, func(), error) {
		cleanup()
		return "", "", nil, e
	}
	img := filepath.Join(work, "fs.img")
	f, err := os.Create(img)
	if err == nil {
		err = f.Truncate(int64(sizeMB) << 20)
		f.Close()
	}
	if err != nil {
		return fail(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", img).CombinedOutput(); err != nil {
		return fail(fmt.Errorf("mkfs.ext4: %v: %s", err, out))
	}
	out, err := exec.Command("losetup", "--find", "--show", img).Output()
	if err != nil {
		return fail(fmt.Errorf("losetup: %w", err))
	}
	dev = strings.TrimSpace(string(out))
	undo = append(undo, func() { exec.Command("losetup", "-d", dev).Run() })
	mnt = filepath.Join(work, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		return fail(err)
	}
	args := []string{"-t", "ext4", dev, mnt}
	if opts != "" {
		args = append(args, "-o", opts)
	}
	if out, err := exec.Command("mount", args...).CombinedOutput(); err != nil {
		return fail(fmt.Errorf("mount: %v: %s", err, out))
	}
	undo = append(undo, func() { exec.Command("umount", mnt).Run() })
	return dev, mnt, cleanup, nil
}

// devStat is the part of /sys/block/DEV/stat this needs.
type devStat struct{ writes, sectors, flushes int64 }

func (a devStat) sub(b devStat) devStat {
	return devStat{a.writes - b.writes, a.sectors - b.sectors, a.flushes - b.flushes}
}

// readStat reads write requests (field 5), sectors written (field 7) and
// flush requests (field 16, kernels from 5.5).
func readStat(dev string) (devStat, error) {
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "stat"))
	if err != nil {
		return devStat{}, err
	}
	d, err := parseStat(string(b))
	if err != nil {
		return devStat{}, fmt.Errorf("%s stat: %w", dev, err)
	}
	return d, nil
}

// parseStat reads the fields of a block device's stat file
// (Documentation/block/stat.rst).
func parseStat(s string) (devStat, error) {
	f := strings.Fields(s)
	if len(f) < 16 {
		return devStat{}, fmt.Errorf("%d fields, want 16 or more (kernel 5.5+)", len(f))
	}
	num := func(i int) int64 { v, _ := strconv.ParseInt(f[i], 10, 64); return v }
	return devStat{writes: num(4), sectors: num(6), flushes: num(15)}, nil
}

// pace calls write n times, one every interval.
func pace(o options, write func(i int) error) error {
	t := time.NewTicker(o.interval)
	defer t.Stop()
	for i := range o.n {
		if err := write(i); err != nil {
			return err
		}
		if i < o.n-1 {
			<-t.C
		}
	}
	return nil
}

// writer is an open store: write stores reading i, close ends it.
type writer struct {
	write func(i int) error
	close func() error
}

// openQueue opens firmware/queue and stores one reading, so the
// transactions measured are the steady state's.
func openQueue(dir string, o options) (*writer, error) {
	q, err := queue.Open(filepath.Join(dir, "queue.db"), queue.Options{})
	if err != nil {
		return nil, err
	}
	body := make([]byte, o.size)
	w := &writer{close: q.Close}
	w.write = func(i int) error {
		m, err := q.Append(func(uint64) (queue.Message, error) {
			return queue.Message{ID: fmt.Sprintf("r-%d", i), Body: body, Created: time.Now()}, nil
		})
		if err == nil {
			err = q.Ack(m.Seq) // as the sender does after the PUBACK; written with the next Append
		}
		return err
	}
	if err := w.write(-1); err != nil {
		q.Close()
		return nil, err
	}
	return w, nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// openLog makes the log file. prealloc writes its blocks once first, so
// the appends overwrite allocated, initialised blocks and change no
// metadata; otherwise each append grows the file.
func openLog(dir string, o options, prealloc bool) (*writer, error) {
	f, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		return nil, err
	}
	rec := make([]byte, 8+o.size) // length, CRC-32C, payload
	if prealloc {
		_, err = f.Write(make([]byte, o.n*len(rec)))
		if err == nil {
			err = f.Sync()
		}
		if err != nil {
			f.Close()
			return nil, err
		}
	}
	return &writer{close: f.Close, write: func(i int) error {
		binary.LittleEndian.PutUint32(rec, uint32(o.size))
		binary.LittleEndian.PutUint32(rec[4:], crc32.Checksum(rec[8:], castagnoli))
		if _, err := f.WriteAt(rec, int64(i*len(rec))); err != nil {
			return err
		}
		return syscall.Fdatasync(int(f.Fd()))
	}}, nil
}
