package queue

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/reefer/tracker/internal/atomicfile"
)

// The sequence floor lives outside bbolt so it survives the loss of the
// database: NextSeq reserves numbers in blocks of SeqBlock and, before it
// hands out the first number of a new block, records the block's upper
// bound in path+SeqSuffix. A queue rebuilt after corruption starts above
// that bound, so no message id ({deviceId}-{seq}) is ever reused and the
// cloud's de-duplication never silently drops a new reading.
//
// The price is a gap: after a recovery (or when the database is deleted)
// the numbers between the last one issued and the reserved bound are never
// used. Gaps are harmless; the cloud only de-duplicates, it does not
// expect consecutive numbers.

// SeqSuffix names the sequence floor file next to the database.
const SeqSuffix = ".seq"

// DefaultSeqBlock is how many sequence numbers one side-file write
// reserves: one small write per ~3 hours at the default 10 s interval.
const DefaultSeqBlock = 1000

// seqFileMagic heads the floor file; the CRC after the number catches a
// damaged file (the atomic rename already rules out a torn one).
const seqFileMagic = "queue-seq-v1"

var errSeqFileCorrupt = errors.New("sequence floor file corrupt")

// readSeqFloor returns the reserved upper bound in the file, 0 when the
// file does not exist.
func readSeqFloor(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	f := strings.Fields(string(b))
	if len(f) != 3 || f[0] != seqFileMagic {
		return 0, fmt.Errorf("%s: %w", path, errSeqFileCorrupt)
	}
	n, err1 := strconv.ParseUint(f[1], 10, 64)
	sum, err2 := strconv.ParseUint(f[2], 16, 32)
	if err1 != nil || err2 != nil || uint32(sum) != crc32.ChecksumIEEE([]byte(f[1])) {
		return 0, fmt.Errorf("%s: %w", path, errSeqFileCorrupt)
	}
	return n, nil
}

// writeSeqFloor replaces the file atomically and durably: temp file,
// fsync, rename, fsync of the directory, so after a power cut the file
// holds either the old bound or the new one, never a torn write.
func writeSeqFloor(path string, n uint64) error {
	num := strconv.FormatUint(n, 10)
	data := fmt.Sprintf("%s %s %08x\n", seqFileMagic, num, crc32.ChecksumIEEE([]byte(num)))
	if err := atomicfile.WriteFile(path, []byte(data), 0o600, true); err != nil {
		if isNoSpace(err) && overwriteSeqFloor(path, data) == nil {
			return nil
		}
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// overwriteSeqFloor rewrites the existing file in place, within the block
// it already has, for a full filesystem where the temp file cannot be
// created. A torn write fails the CRC and Open falls back to the
// database's own counter, which is exact as long as the database lives.
func overwriteSeqFloor(path, data string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err == nil && int64(len(data)) < fi.Size() {
		// Pad over the old content; the parser skips white space.
		data = strings.TrimSuffix(data, "\n") + strings.Repeat(" ", int(fi.Size())-len(data)) + "\n"
	}
	if err == nil {
		_, err = f.WriteAt([]byte(data), 0)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
