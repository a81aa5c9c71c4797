package queue

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/reefer/tracker/internal/atomicfile"
)

// ErrCorrupt is returned by Open, without Options.Recover, when the file
// is not a usable database: bbolt refuses it, panics on it, or its
// consistency check fails. A lock held by another process is not
// corruption and never yields ErrCorrupt.
var ErrCorrupt = errors.New("queue: database corrupt")

// CorruptSuffix precedes the UTC time in the name a corrupt database is
// moved to: queue.db.corrupt-20260102T150405Z.
const CorruptSuffix = ".corrupt-"

// MaxCorruptKept is how many moved-aside databases are kept for a
// post-mortem; older ones are deleted so a card that keeps failing does
// not fill up.
const MaxCorruptKept = 3

// Recovery describes a database that Open found corrupt and replaced.
type Recovery struct {
	Aside string    `json:"aside"` // where the corrupt file now is
	At    time.Time `json:"at"`    // when it was moved
	Cause string    `json:"cause"` // why it was judged corrupt
}

// isCorruptOpenErr tells a damaged file from a failure that says nothing
// about the file's content: the lock timeout (another process has it) and
// OS errors (permissions, read-only or full file system, out of memory
// for the mmap). Moving the file aside for those would lose good data.
func isCorruptOpenErr(err error) bool {
	if errors.Is(err, berrors.ErrTimeout) {
		return false
	}
	var errno syscall.Errno
	return !errors.As(err, &errno)
}

// openChecked opens path with bbolt and reads every record, turning
// errors and panics on a damaged file into ErrCorrupt. A panic inside
// bolt.Open itself (a damaged freelist) leaves bbolt's file open and
// locked until the garbage collector closes it; recovery still works
// because it renames the file and creates a new one (the lock is on the
// old inode), but reopening the same damaged file in the same process
// meanwhile times out.
func openChecked(path string, timeout time.Duration) (db *bolt.DB, err error) {
	// A truncated file leaves pages inside the mmap but past the end of
	// the file; touching them raises SIGBUS, fatal unless turned into a
	// panic for this goroutine.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if db != nil {
				func() {
					defer func() { _ = recover() }()
					db.Close()
				}()
			}
			db, err = nil, fmt.Errorf("%w: bbolt panicked: %v", ErrCorrupt, r)
		}
	}()
	db, err = bolt.Open(path, 0o600, boltOptions(timeout))
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("database locked by another process: %w", err)
		}
		if isCorruptOpenErr(err) {
			return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		return nil, err
	}
	// Read every bucket and record here, in this goroutine, rather than
	// with tx.Check: Check walks the pages in a goroutine of its own, where
	// bbolt's page assertions panic beyond any recover and kill the
	// tracker (seen in CI on a garbage file).
	err = db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(_ []byte, b *bolt.Bucket) error { return walkBucket(b) })
	})
	if err != nil {
		err = fmt.Errorf("%w: reading every record: %w", ErrCorrupt, err)
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// walkBucket touches every page of b and of the buckets nested in it.
func walkBucket(b *bolt.Bucket) error {
	return b.ForEach(func(k, v []byte) error {
		if v == nil {
			if nb := b.Bucket(k); nb != nil {
				return walkBucket(nb)
			}
		}
		return nil
	})
}

// moveAside renames a corrupt database out of the way, durably, and
// prunes old ones beyond MaxCorruptKept.
func moveAside(path string, now time.Time) (string, error) {
	base := path + CorruptSuffix + now.UTC().Format("20060102T150405Z")
	aside := base
	for i := 1; ; i++ {
		if _, err := os.Lstat(aside); errors.Is(err, os.ErrNotExist) {
			break
		}
		aside = fmt.Sprintf("%s.%d", base, i)
	}
	if err := os.Rename(path, aside); err != nil {
		return "", err
	}
	if err := atomicfile.SyncDir(filepath.Dir(path)); err != nil {
		return aside, err
	}
	old, _ := CorruptFiles(path)
	for len(old) > MaxCorruptKept {
		os.Remove(old[0])
		old = old[1:]
	}
	return aside, nil
}

// CorruptFiles lists the moved-aside copies of the database at path,
// oldest first. Doctor uses it to report a past recovery.
func CorruptFiles(path string) ([]string, error) {
	m, err := filepath.Glob(path + CorruptSuffix + "*")
	if err != nil {
		return nil, err
	}
	slices.Sort(m) // the UTC timestamp sorts by time
	return m, nil
}

// boltOptions: no free list written per commit (one page less per
// reading; Open rebuilds it by walking the tree, a few milliseconds for a
// full queue), kept as a hash map (cheap with many free pages).
func boltOptions(timeout time.Duration) *bolt.Options {
	return &bolt.Options{Timeout: timeout, NoFreelistSync: true, FreelistType: bolt.FreelistMapType}
}
