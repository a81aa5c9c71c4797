package doctor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	bolterrors "go.etcd.io/bbolt/errors"
	"golang.org/x/sys/unix"

	"github.com/reefer/tracker/firmware/queue"
	"github.com/reefer/tracker/firmware/statequeue"
	"github.com/reefer/tracker/provisioning/cache"
)

// CheckAssignment reports the DPS assignment cached in stateDir: hub,
// device id, age, and whether it belongs to the certificate with the given
// SHA-256 fingerprint ("" when the certificate is unusable). The
// assignment is returned when it exists and matches, for CheckHub.
func CheckAssignment(stateDir, fingerprint string, now time.Time) (Check, *cache.Assignment) {
	ck := Check{Name: "assignment"}
	a, err := cache.Load(stateDir)
	switch {
	case errors.Is(err, cache.ErrCorrupt):
		ck.Status, ck.Detail = Warn, err.Error()
		ck.Fix = "nothing to do: the tracker registers with DPS again at its next start and rewrites it"
		return ck, nil
	case errors.Is(err, cache.ErrNoCache):
		ck.Status, ck.Detail = Warn, "not provisioned yet: no "+cache.Path(stateDir)
		ck.Fix = "start the tracker (systemctl start tracker); it registers with DPS and caches the hub it gets"
		return ck, nil
	case err != nil:
		ck.Status, ck.Detail = Fail, err.Error()
		ck.Fix = fmt.Sprintf("the tracker must be able to read and write %s (StateDirectory=tracker in the unit)", stateDir)
		return ck, nil
	}
	desc := fmt.Sprintf("hub %s, device %q, assigned %s (%s ago)", a.Hub, a.DeviceID,
		a.AssignedAt.UTC().Format("2006-01-02 15:04 MST"), humanDays(now.Sub(a.AssignedAt)))
	switch {
	case fingerprint == "":
		ck.Status, ck.Detail = Warn, desc+"; not compared with the certificate, which is unusable"
		ck.Fix = "fix the certificate first (see above)"
		return ck, nil
	case !cache.Valid(a, fingerprint):
		ck.Status, ck.Detail = Warn, desc+"; it was obtained with another certificate"
		ck.Fix = "nothing to do: the certificate was replaced, and the tracker registers with DPS again at its next start"
		return ck, nil
	}
	ck.Status, ck.Detail = OK, desc+", for this certificate"
	return ck, a
}

// DefaultQueueFile is the queue database's name in the state directory.
const DefaultQueueFile = "queue.db"

// queueLockWait is how long CheckQueue waits for the queue's file lock
// before concluding that the running tracker holds it.
const queueLockWait = 300 * time.Millisecond

// QueueFigures are the running queue's figures, which the tracker passes
// to Run (Inputs.RunningQueue) so getStatus need not open its own locked
// database.
type QueueFigures struct {
	Count     int
	Bytes     int64
	Dropped   uint64
	Recovered *queue.Recovery // the corrupt database this start replaced, if any
	// InMemory is set while the state directory is unusable and the
	// running tracker keeps its readings in memory.
	InMemory *statequeue.Fallback
}

// CheckQueue reports the offline queue at path: depth, size and how many
// readings were dropped because it was full. It opens the database only
// if it exists (doctor must not create one) and only briefly; when the
// running tracker holds the lock, that is reported as OK with inUse true.
// A damaged database is reported, never repaired (the tracker does that
// at its next start), and so is one replaced earlier.
func CheckQueue(path string, opts queue.Options) (ck Check, inUse bool) {
	ck = Check{Name: "queue"}
	if dir, ro := readOnly(filepath.Dir(path)); ro {
		ck.Status = Fail
		ck.Detail = fmt.Sprintf("the state directory's filesystem (%s) is read-only: the tracker keeps its readings in memory only, and loses them when it restarts", dir)
		ck.Fix = "find out why (dmesg: SD card errors remount it read-only), then mount -o remount,rw " + dir + " or replace the SD card; the tracker moves its readings back to disk by itself"
		return ck, false
	}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		ck.Status, ck.Detail = OK, "empty: "+path+" does not exist yet (the tracker creates it)"
		return ck, false
	}
	opts.LockTimeout = queueLockWait
	opts.Recover = false
	opts.ReserveBytes = -1 // the tracker's to keep, not an inspector's
	q, err := queue.Open(path, opts)
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		ck.Status, ck.Detail = OK, path+" is in use by the running tracker (depth not read; see the tracker's status)"
		return ck, true
	case errors.Is(err, queue.ErrCorrupt):
		ck.Status, ck.Detail = Warn, err.Error()
		ck.Fix = "the tracker moves the damaged file aside and starts an empty queue at its next start (systemctl restart tracker); the readings queued in it are lost. If it recurs, replace the SD card"
		return ck, false
	case err != nil:
		ck.Status, ck.Detail = Fail, err.Error()
		ck.Fix = fmt.Sprintf("the tracker must be able to read and write %s; until it can, it keeps its readings in memory only", path)
		return ck, false
	}
	f := QueueFigures{Dropped: q.Dropped()}
	f.Count, f.Bytes = q.Len()
	if err := q.Close(); err != nil {
		ck.Status, ck.Detail = Fail, err.Error()
		return ck, false
	}
	if aside, _ := queue.CorruptFiles(path); len(aside) > 0 {
		f.Recovered = &queue.Recovery{Aside: aside[len(aside)-1]}
		if fi, err := os.Stat(f.Recovered.Aside); err == nil {
			f.Recovered.At = fi.ModTime()
		}
	}
	return QueueCheck(f, opts), false
}

// QueueCheck judges the queue's figures against its bounds (zero:
// the queue's defaults).
func QueueCheck(f QueueFigures, opts queue.Options) Check {
	ck := Check{Name: "queue"}
	maxN, maxB := opts.MaxCount, opts.MaxBytes
	if maxN <= 0 {
		maxN = queue.DefaultMaxCount
	}
	if maxB <= 0 {
		maxB = queue.DefaultMaxBytes
	}
	n, size, dropped := f.Count, f.Bytes, f.Dropped
	ck.Detail = fmt.Sprintf("%d readings queued (%d KiB of %d KiB), %d dropped since installation", n, size>>10, maxB>>10, dropped)
	switch {
	case f.InMemory != nil:
		ck.Status = Fail
		ck.Detail += fmt.Sprintf("; the state directory %s is unusable since %s (%s): readings are kept IN MEMORY and are lost if the tracker restarts",
			f.InMemory.Dir, f.InMemory.Since.Format(time.RFC3339), f.InMemory.Reason)
		ck.Fix = fmt.Sprintf("check the state filesystem: read-only after errors (dmesg; mount -o remount,rw, or replace the SD card), "+
			"or the directory removed or not owned by the tracker user (install -d -m 0700 -o tracker %s); the tracker moves its readings back to disk by itself within 30 s", f.InMemory.Dir)
	case f.Recovered != nil:
		ck.Status = Warn
		ck.Detail += fmt.Sprintf("; the queue database was found corrupt and replaced, the readings queued in it were lost (moved to %s)", f.Recovered.Aside)
		ck.Fix = fmt.Sprintf("nothing to do now; the damaged copy is kept for examination, delete it when done (rm %s). If it recurs, replace the SD card", f.Recovered.Aside)
	case n*10 >= maxN*9 || size*10 >= maxB*9:
		ck.Status = Warn
		ck.Fix = "the queue is nearly full and will drop the oldest readings: restore the uplink (see dps endpoint and hub)"
	case dropped > 0:
		ck.Status = Warn
		ck.Fix = "readings were lost while the tracker was offline longer than the queue holds; nothing to do now unless it keeps growing (raise queue.maxMessages / queue.maxBytes)"
	default:
		ck.Status = OK
	}
	return ck
}

// readOnly reports whether dir, or the nearest directory above it that
// exists, is on a read-only filesystem, and which directory that was.
func readOnly(dir string) (string, bool) {
	for {
		var st unix.Statfs_t
		err := unix.Statfs(dir, &st)
		if err == nil {
			return dir, st.Flags&unix.ST_RDONLY != 0
		}
		parent := filepath.Dir(dir)
		if !errors.Is(err, fs.ErrNotExist) || parent == dir {
			return dir, false
		}
		dir = parent
	}
}
