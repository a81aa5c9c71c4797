package cache_test

import (
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/reefer/tracker/provisioning/cache"
	"github.com/reefer/tracker/provisioning/iothub"
)

// FuzzLoad: the cache file sits on the state filesystem, where a power cut,
// a full disk or a hand edit can leave anything. Load never panics; a file
// it refuses wraps ErrNoCache (and ErrCorrupt when it exists), so the
// tracker registers with DPS again; a file it accepts is usable: the hub
// client takes its hub and device id (otherwise the tracker would retry a
// hub it can never reach instead of going back to DPS), and saving it and
// loading it again gives the same assignment.
// Seeds: testdata/fuzz/FuzzLoad/ (files as Save writes them, damaged ones).
func FuzzLoad(f *testing.F) {
	f.Add([]byte(`{"version":1,"hub":"hub-x.azure-devices.net","deviceId":"sensor-thl-001","certFingerprintSha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","assignedAt":"2026-12-03T10:00:00Z"}`))
	f.Add([]byte(`{"version":1,"hub":"127.0.0.1:8884","deviceId":"d","certFingerprintSha256":"ab","assignedAt":"0001-01-01T00:00:00Z"}`))
	// One directory per fuzzing process, rewritten each time: a fresh
	// t.TempDir per input made the campaign crawl.
	dir, dir2 := f.TempDir(), f.TempDir()
	seen := map[cache.Assignment]bool{}
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, cache.FileName), data, 0o600); err != nil {
			t.Fatal(err)
		}
		a, err := cache.Load(dir)
		if err != nil {
			if !errors.Is(err, cache.ErrNoCache) || !errors.Is(err, cache.ErrCorrupt) {
				t.Fatalf("Load error %v does not wrap ErrNoCache and ErrCorrupt", err)
			}
			return
		}
		if _, err := iothub.New(iothub.Config{Hub: a.Hub, DeviceID: a.DeviceID, TLS: &tls.Config{}}); err != nil {
			t.Fatalf("accepted assignment %+v is unusable: %v", a, err)
		}
		// Save fsyncs the file and the directory; once per distinct
		// assignment is enough (the campaign sees the same one often).
		if seen[*a] {
			return
		}
		seen[*a] = true
		if err := cache.Save(dir2, a); err != nil {
			t.Fatalf("Save(accepted %+v): %v", a, err)
		}
		b, err := cache.Load(dir2)
		if err != nil {
			t.Fatalf("Load after Save: %v", err)
		}
		if !b.AssignedAt.Equal(a.AssignedAt) {
			t.Fatalf("assignedAt %v came back as %v", a.AssignedAt, b.AssignedAt)
		}
		a.AssignedAt, b.AssignedAt = time.Time{}, time.Time{}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("round trip %+v -> %+v", a, b)
		}
	})
}
