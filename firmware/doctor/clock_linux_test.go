package doctor

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSystemClockSynced(t *testing.T) {
	t.Parallel()
	// Whether this machine is synchronised is not ours to assert; the
	// read-only adjtimex call itself must work.
	if _, err := SystemClockSynced(); err != nil {
		t.Errorf("SystemClockSynced() error = %v; want nil", err)
	}
}

// Under tracker.service, ProtectClock= and SystemCallFilter=~@privileged
// refuse even the read-only adjtimex (EPERM, systemd issue #26413), so the
// getStatus method's clock check must not depend on it alone.
func TestClockSyncedWhenAdjtimexRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	flag := filepath.Join(dir, "synchronized")
	refused := func(*unix.Timex) (int, error) { return 0, unix.EPERM }
	// Constants: Timex.Maxerror is int32 on armv7 and int64 on arm64.
	synced := func(tx *unix.Timex) (int, error) { tx.Maxerror = 1000; return 0, nil }
	unsynced := func(tx *unix.Timex) (int, error) { tx.Maxerror = maxSyncedError; return 0, nil }
	if err := os.WriteFile(filepath.Join(dir, "flagged"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		adj     func(*unix.Timex) (int, error)
		flag    string
		want    bool
		wantErr bool
	}{
		{"adjtimex synced", synced, flag, true, false},
		{"adjtimex unsynced", unsynced, filepath.Join(dir, "flagged"), false, false},
		{"refused, timesyncd synchronised", refused, filepath.Join(dir, "flagged"), true, false},
		{"refused, no flag", refused, flag, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := clockSynced(tt.adj, tt.flag)
			if got != tt.want || (err != nil) != tt.wantErr {
				t.Errorf("clockSynced() = %v, %v; want %v, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}
