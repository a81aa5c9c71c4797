package doctor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/reefer/tracker/firmware/queue"
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

// CheckQueue reports the offline queue at path: depth, size and how many
// readings were dropped because it was full. It opens the database only
// if it exists (doctor must not create one) and only briefly; when the
// running tracker holds the lock, that is reported as OK with inUse true.
func CheckQueue(path string, opts queue.Options) (ck Check, inUse bool) {
	ck = Check{Name: "queue"}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		ck.Status, ck.Detail = OK, "empty: "+path+" does not exist yet (the tracker creates it)"
		return ck, false
	}
	opts.LockTimeout = queueLockWait
	q, err := queue.Open(path, opts)
	if errors.Is(err, bolterrors.ErrTimeout) {
		ck.Status, ck.Detail = OK, path+" is in use by the running tracker (depth not read; see the tracker's status)"
		return ck, true
	}
	if err != nil {
		ck.Status, ck.Detail = Fail, err.Error()
		ck.Fix = fmt.Sprintf("if the file is damaged, stop the tracker and move it away (mv %s %s.bad); queued readings in it are lost", path, path)
		return ck, false
	}
	n, size := q.Len()
	dropped := q.Dropped()
	if err := q.Close(); err != nil {
		ck.Status, ck.Detail = Fail, err.Error()
		return ck, false
	}
	maxN, maxB := opts.MaxCount, opts.MaxBytes
	if maxN <= 0 {
		maxN = queue.DefaultMaxCount
	}
	if maxB <= 0 {
		maxB = queue.DefaultMaxBytes
	}
	ck.Detail = fmt.Sprintf("%d readings queued (%d KiB of %d KiB), %d dropped since installation", n, size>>10, maxB>>10, dropped)
	switch {
	case n*10 >= maxN*9 || size*10 >= maxB*9:
		ck.Status = Warn
		ck.Fix = "the queue is nearly full and will drop the oldest readings: restore the uplink (see dps endpoint and hub)"
	case dropped > 0:
		ck.Status = Warn
		ck.Fix = "readings were lost while the tracker was offline longer than the queue holds; nothing to do now unless it keeps growing (raise queue.maxMessages / queue.maxBytes)"
	default:
		ck.Status = OK
	}
	return ck, false
}
