package cache

import (
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/reefer/tracker/provisioning/iothub"
)

// FuzzLoad: the cache file sits on the state filesystem, where a power cut,
// a full disk or a hand edit can leave anything. Its decoder never panics;
// an assignment it accepts is usable: the hub client takes its hub and
// device id (otherwise the tracker would retry a hub it can never reach
// instead of going back to DPS); and, once per distinct assignment, Load
// returns it from the file, Save writes it back and Load reads the same.
// Refused contents make Load wrap ErrNoCache and ErrCorrupt (checked on
// each refused input's first byte value, to keep file writes rare).
// Seeds: testdata/fuzz/FuzzLoad/ (files as Save writes them, damaged ones).
func FuzzLoad(f *testing.F) {
	f.Add([]byte(`{"version":1,"hub":"hub-x.azure-devices.net","deviceId":"sensor-thl-001","certFingerprintSha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","assignedAt":"2026-12-03T10:00:00Z"}`))
	f.Add([]byte(`{"version":1,"hub":"127.0.0.1:8884","deviceId":"d","certFingerprintSha256":"ab","assignedAt":"0001-01-01T00:00:00Z"}`))
	// File writes are the slow part under load: one directory per fuzzing
	// process, and the on-disk path only for what is new.
	dir, dir2 := f.TempDir(), f.TempDir()
	seen := map[Assignment]bool{}
	refused := map[byte]bool{}
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := decode(data)
		if err != nil {
			if len(data) == 0 || refused[data[0]] {
				return
			}
			refused[data[0]] = true
			if err := os.WriteFile(filepath.Join(dir, FileName), data, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := Load(dir); !errors.Is(err, ErrNoCache) || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Load of refused contents: %v; want ErrNoCache and ErrCorrupt", err)
			}
			return
		}
		c, err := iothub.New(iothub.Config{Hub: a.Hub, DeviceID: a.DeviceID, TLS: &tls.Config{}})
		if err != nil {
			t.Fatalf("accepted assignment %+v is unusable: %v", a, err)
		}
		c.Close()
		if seen[*a] {
			return
		}
		seen[*a] = true
		if err := os.WriteFile(filepath.Join(dir, FileName), data, 0o600); err != nil {
			t.Fatal(err)
		}
		if l, err := Load(dir); err != nil || !same(*l, *a) {
			t.Fatalf("Load of accepted contents: %+v, %v; want %+v", l, err, a)
		}
		if err := Save(dir2, a); err != nil {
			t.Fatalf("Save(accepted %+v): %v", a, err)
		}
		b, err := Load(dir2)
		if err != nil {
			t.Fatalf("Load after Save: %v", err)
		}
		if !same(*a, *b) {
			t.Fatalf("round trip %+v -> %+v", a, b)
		}
	})
}

func same(a, b Assignment) bool {
	if !a.AssignedAt.Equal(b.AssignedAt) {
		return false
	}
	a.AssignedAt, b.AssignedAt = time.Time{}, time.Time{}
	return reflect.DeepEqual(a, b)
}
