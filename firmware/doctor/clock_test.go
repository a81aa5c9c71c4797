package doctor

import (
	"errors"
	"testing"
	"time"
)

func TestCheckClock(t *testing.T) {
	t.Parallel()
	build := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	synced := func(ok bool, err error) func() (bool, error) { return func() (bool, error) { return ok, err } }
	tests := []struct {
		name        string
		now         time.Time
		floor       time.Time
		synced      func() (bool, error)
		st          Status
		detail, fix string
	}{
		{"synced", build.Add(30 * day), build, synced(true, nil), OK, "2026-03-03T00:00:00Z, synchronised", ""},
		{"pi booted in 1970", time.Unix(42, 0), build, synced(false, nil), Fail, "clock says 1970-01-01T00:00:42Z, before build (2026-02-01T00:00:00Z)", "NTP"},
		{"1970 even if the kernel says synced", time.Unix(42, 0), build, synced(true, nil), Fail, "1970", "no battery-backed clock"},
		{"not synced", build.Add(day), build, synced(false, nil), Warn, "not synchronised", "timedatectl"},
		{"unknown", build.Add(day), build, synced(false, errors.New("adjtimex: operation not permitted")), Warn, "cannot tell", "timedatectl"},
		{"no floor", time.Unix(42, 0), time.Time{}, synced(true, nil), OK, "synchronised", ""},
	}
	for _, tt := range tests {
		ck := CheckClock(tt.now, tt.floor, "build", tt.synced)
		wantCheck(t, ck, "clock", tt.st, tt.detail, tt.fix)
	}
}
