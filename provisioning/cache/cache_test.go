package cache

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const fp = "3f2a9c0d5e6b7a8f9e0d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a6f7e8d9c0b1a2f"

func sample() *Assignment {
	return &Assignment{
		Hub:                   "hub-x.azure-devices.net",
		DeviceID:              "sensor-thl-001",
		CertFingerprintSHA256: fp,
		AssignedAt:            time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC),
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	want := sample()
	if err := Save(dir, want); err != nil {
		t.Fatal(err)
	}
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if *got != *want {
		t.Errorf("Load = %+v; want %+v", got, want)
	}
	st, err := os.Stat(Path(dir))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v; want 0600", st.Mode().Perm())
	}
	// Overwrite: the new value wins and no temporary files are left behind.
	want.Hub = "127.0.0.1:40002"
	if err := Save(dir, want); err != nil {
		t.Fatal(err)
	}
	if got, _ := Load(dir); got == nil || got.Hub != want.Hub {
		t.Errorf("Load after overwrite = %+v; want hub %q", got, want.Hub)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("dir has %d entries; want only %s", len(entries), FileName)
	}
}

func TestLoadMissing(t *testing.T) {
	t.Parallel()
	_, err := Load(t.TempDir())
	if !errors.Is(err, ErrNoCache) || errors.Is(err, ErrCorrupt) {
		t.Errorf("Load(empty dir) = %v; want ErrNoCache only", err)
	}
}

func TestLoadCorrupt(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, content, want string
	}{
		{"empty", "", "EOF"},
		{"truncated", `{"version":1,"hub":"h`, "unexpected EOF"},
		{"garbage", "\x00\x01\x02", "invalid character"},
		{"wrong version", `{"version":9,"hub":"h","deviceId":"d","certFingerprintSha256":"f"}`, "version 9"},
		{"no hub", `{"version":1,"deviceId":"d","certFingerprintSha256":"f"}`, "hub is empty"},
		{"no fingerprint", `{"version":1,"hub":"h","deviceId":"d"}`, "certFingerprintSha256 is empty"},
		// A hub the client cannot dial must not be retried forever.
		{"hub with a path", `{"version":1,"hub":"h.example/x","deviceId":"d","certFingerprintSha256":"f"}`, "not host[:port]"},
		{"hub with a bad port", `{"version":1,"hub":"localhost:99999","deviceId":"d","certFingerprintSha256":"f"}`, "not host[:port]"},
		{"hub with a space", `{"version":1,"hub":"hub x","deviceId":"d","certFingerprintSha256":"f"}`, "not host[:port]"},
		{"unknown field", `{"version":1,"hub":"h","deviceId":"d","certFingerprintSha256":"f","x":1}`, "unknown field"},
		{"bad time", `{"version":1,"hub":"h","deviceId":"d","certFingerprintSha256":"f","assignedAt":"yesterday"}`, "cannot parse"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, FileName), []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			a, err := Load(dir)
			if a != nil || !errors.Is(err, ErrNoCache) || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Load(%q) = %v, %v; want ErrNoCache and ErrCorrupt", tt.content, a, err)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), FileName) {
				t.Errorf("Load(%q) error %q; want it to name the file and contain %q", tt.content, err, tt.want)
			}
		})
	}
}

func TestLoadUnreadable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// A directory where the file should be: a read error that is not "missing".
	if err := os.Mkdir(Path(dir), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); err == nil || errors.Is(err, ErrNoCache) {
		t.Errorf("Load = %v; want a plain I/O error", err)
	}
}

func TestSaveRejectsIncomplete(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a := sample()
	a.DeviceID = ""
	if err := Save(dir, a); err == nil {
		t.Fatal("Save(incomplete) = nil")
	}
	if _, err := os.Stat(Path(dir)); !os.IsNotExist(err) {
		t.Errorf("file written despite error: %v", err)
	}
}

func TestSaveMissingDir(t *testing.T) {
	t.Parallel()
	if err := Save(filepath.Join(t.TempDir(), "nope"), sample()); err == nil {
		t.Error("Save into a missing dir = nil")
	}
}

func TestRemove(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := Remove(dir); err != nil {
		t.Errorf("Remove(missing) = %v", err)
	}
	if err := Save(dir, sample()); err != nil {
		t.Fatal(err)
	}
	if err := Remove(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); !errors.Is(err, ErrNoCache) {
		t.Errorf("Load after Remove = %v; want ErrNoCache", err)
	}
}

func TestValid(t *testing.T) {
	t.Parallel()
	colon := "3F:2A:9C:0D:5E:6B:7A:8F:9E:0D:1C:2B:3A:4F:5E:6D:7C:8B:9A:0F:1E:2D:3C:4B:5A:6F:7E:8D:9C:0B:1A:2F"
	incomplete := sample()
	incomplete.Hub = ""
	tests := []struct {
		name string
		a    *Assignment
		fp   string
		want bool
	}{
		{"same cert", sample(), fp, true},
		{"upper case with colons", sample(), colon, true},
		{"renewed cert", sample(), strings.Replace(fp, "3f", "40", 1), false},
		{"empty fingerprint", sample(), "", false},
		{"nil", nil, fp, false},
		{"incomplete", incomplete, fp, false},
	}
	for _, tt := range tests {
		if got := Valid(tt.a, tt.fp); got != tt.want {
			t.Errorf("Valid(%s) = %v; want %v", tt.name, got, tt.want)
		}
	}
}

func TestValidHub(t *testing.T) {
	t.Parallel()
	for h, want := range map[string]bool{
		"contoso.azure-devices.net": true, "localhost": true, "localhost:40113": true, "127.0.0.1:8883": true,
		"": false, ":8883": false, "host:": false, "host:0": false, "host:65536": false, "a/b": false, "a b": false, "h#x": false,
	} {
		if got := validHub(h); got != want {
			t.Errorf("validHub(%q) = %v; want %v", h, got, want)
		}
	}
}
