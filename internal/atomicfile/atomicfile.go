// Package atomicfile replaces a file's content in one step, so that a
// reader, and the file after a crash or a power cut, holds either the old
// content or the new one, never a mix or a torn write. The tracker's cached
// hub assignment and queue sequence floor and the emulator's state files
// are written this way.
//
// The new content goes to a temporary file beside the target (same file
// system, so the rename is atomic), which is fsynced, renamed over the
// target, and then the directory is fsynced so the rename itself survives a
// power cut.
package atomicfile

import (
	"bufio"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// WriteFile replaces path's content with data; the file gets perm. With
// sync false (tests, or state that may be lost) nothing is fsynced.
func WriteFile(path string, data []byte, perm fs.FileMode, sync bool) error {
	// Straight to the file: a buffer would only copy data (and cost a
	// 64 KiB allocation per write, which the emulator makes per device).
	return replace(path, perm, sync, func(f *os.File) error {
		_, err := f.Write(data)
		return err
	})
}

// Write replaces path's content with what write writes (buffered); the
// file gets perm. With sync false nothing is fsynced. When write or any
// step fails, path is left as it was and the temporary file is removed.
func Write(path string, perm fs.FileMode, sync bool, write func(io.Writer) error) error {
	return replace(path, perm, sync, func(f *os.File) error {
		w := bufio.NewWriterSize(f, 64<<10)
		if err := write(w); err != nil {
			return err
		}
		return w.Flush()
	})
}

// replace does the steps of Write with fill writing the temporary file.
func replace(path string, perm fs.FileMode, sync bool, fill func(*os.File) error) (err error) {
	dir, name := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if err = fill(f); err != nil {
		return err
	}
	if sync {
		if err = f.Sync(); err != nil {
			return err
		}
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	if sync {
		return SyncDir(dir)
	}
	return nil
}

// SyncDir fsyncs a directory, making a rename or a new entry in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
