// Package cache persists the DPS assignment (hub, device id) in the state
// directory so a restarted tracker goes straight to its hub instead of
// registering again (DPS registrations are billable and rate-limited, docs/protocol.md F).
//
// The file is written atomically: a temporary file in the same directory is
// written, fsynced and renamed over the old one, then the directory is
// fsynced, so a power cut leaves either the old or the new assignment.
package cache

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/reefer/tracker/internal/atomicfile"
	"github.com/reefer/tracker/provisioning/internal/restopic"
)

// FileName is the cache file inside the state directory.
const FileName = "dps-assignment.json"

// version is bumped when the file format changes incompatibly.
const version = 1

// ErrNoCache means there is no usable assignment: the file is missing, or it
// is unreadable or corrupt (then the error says why and also wraps
// ErrCorrupt). Either way the caller registers with DPS.
var ErrNoCache = errors.New("no cached assignment")

// ErrCorrupt marks a cache file that exists but cannot be used.
var ErrCorrupt = errors.New("corrupt assignment cache")

// Assignment is a DPS result bound to the certificate that obtained it.
type Assignment struct {
	Hub                   string    `json:"hub"` // host[:port]
	DeviceID              string    `json:"deviceId"`
	CertFingerprintSHA256 string    `json:"certFingerprintSha256"` // hex
	AssignedAt            time.Time `json:"assignedAt"`
}

type file struct {
	Version int `json:"version"`
	Assignment
}

// Path returns the cache file path in dir.
func Path(dir string) string { return filepath.Join(dir, FileName) }

// Load reads the assignment from dir. A missing file returns ErrNoCache; a
// corrupt one returns an error wrapping both ErrNoCache and ErrCorrupt.
func Load(dir string) (*Assignment, error) {
	p := Path(dir)
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("cache load %s: %w", p, ErrNoCache)
	}
	if err != nil {
		return nil, fmt.Errorf("cache load %s: %w", p, err)
	}
	a, err := decode(b)
	if err != nil {
		return nil, fmt.Errorf("cache load %s: %w: %w: %v", p, ErrNoCache, ErrCorrupt, err)
	}
	return a, nil
}

// decode reads the file's contents: the format, without the file system.
func decode(b []byte) (*Assignment, error) {
	var f file
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, err
	}
	if f.Version != version {
		return nil, fmt.Errorf("version %d, want %d", f.Version, version)
	}
	if err := f.validate(); err != nil {
		return nil, err
	}
	a := f.Assignment
	return &a, nil
}

func (a *Assignment) validate() error {
	switch {
	case a.Hub == "":
		return errors.New("hub is empty")
	case !validHub(a.Hub):
		// A hub the client cannot even dial must send the tracker back to
		// DPS, not into retrying it forever.
		return fmt.Errorf("hub %q is not host[:port]", a.Hub)
	case restopic.CheckDeviceID(a.DeviceID) != nil:
		// Same reason: an id the hub client refuses would be retried
		// forever (found by FuzzLoad).
		return restopic.CheckDeviceID(a.DeviceID)
	case a.CertFingerprintSHA256 == "":
		return errors.New("certFingerprintSha256 is empty")
	}
	return nil
}

// Save writes a to dir atomically with mode 0600.
func Save(dir string, a *Assignment) error {
	p := Path(dir)
	if err := a.validate(); err != nil {
		return fmt.Errorf("cache save %s: %w", p, err)
	}
	b, err := json.MarshalIndent(file{Version: version, Assignment: *a}, "", "  ")
	if err != nil {
		return fmt.Errorf("cache save %s: %w", p, err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, FileName), append(b, '\n'), 0o600, true); err != nil {
		return fmt.Errorf("cache save %s: %w", p, err)
	}
	return nil
}

// Remove deletes the cache (for example after the hub refused the device, so
// the next start registers again). A missing file is not an error.
func Remove(dir string) error {
	if err := os.Remove(Path(dir)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cache remove: %w", err)
	}
	return nil
}

// Valid reports whether a may be used with the certificate whose SHA-256
// fingerprint is given. A renewed certificate needs a fresh DPS run: the hub
// identity stores the old thumbprint and refuses the new one (docs/protocol.md B.1).
func Valid(a *Assignment, fingerprintSHA256 string) bool {
	if a == nil || a.validate() != nil || fingerprintSHA256 == "" {
		return false
	}
	return normFP(a.CertFingerprintSHA256) == normFP(fingerprintSHA256)
}

// normFP compares fingerprints regardless of case and ":" separators.
func normFP(s string) string {
	return strings.ToLower(strings.ReplaceAll(s, ":", ""))
}

// validHub accepts what DPS puts in assignedHub: a host name, with a port
// when the hub is not on 8883 (the emulator's localhost:PORT).
func validHub(h string) bool {
	host, port := h, ""
	if i := strings.LastIndexByte(h, ':'); i >= 0 {
		host, port = h[:i], h[i+1:]
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return false
		}
	}
	if host == "" || len(host) > 253 {
		return false
	}
	for _, c := range host {
		if !(c == '-' || c == '.' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}
