package main

import (
	"os/exec"
	"testing"
	"time"
)

func TestDebianVersion(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 3, 17, 13, 10, 0, time.UTC)
	tests := []struct{ describe, want string }{
		{"v1.2.0", "1.2.0"},
		{"1.2.0", "1.2.0"},
		{"v1.2.0-dirty", "1.2.0+dirty"},
		{"v1.2.0-rc1", "1.2.0~rc1"},
		{"v1.2.0-3-g2feb77c", "1.2.0+git3.2feb77c"},
		{"v1.2.0-rc1-3-g2feb77c-dirty", "1.2.0~rc1+git3.2feb77c+dirty"},
		{"2feb77c", "0~git20261203171310.2feb77c"},
		{"2feb77c-dirty", "0~git20261203171310.2feb77c+dirty"},
	}
	for _, tt := range tests {
		got, err := debianVersion(tt.describe, at)
		if err != nil || got != tt.want {
			t.Errorf("debianVersion(%q) = %q, %v; want %q", tt.describe, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "release-one", "vX"} {
		if got, err := debianVersion(bad, at); err == nil {
			t.Errorf("debianVersion(%q) = %q; want an error", bad, got)
		}
	}
	if _, err := debianVersion("2feb77c", time.Time{}); err == nil {
		t.Error("an untagged description without a commit time gave a version")
	}
}

// The versions sort as their commits do, by dpkg's own rules.
func TestDebianVersionOrder(t *testing.T) {
	t.Parallel()
	dpkg, err := exec.LookPath("dpkg")
	if err != nil {
		t.Skip("dpkg not installed: cannot compare versions")
	}
	at := time.Date(2026, 12, 3, 17, 13, 10, 0, time.UTC)
	order := []struct {
		describe string
		at       time.Time
	}{
		{"2feb77c", at}, {"884c1db", at.Add(time.Hour)}, {"v1.2.0-rc1", at}, {"v1.2.0-rc1-2-gabcdef0", at},
		{"v1.2.0", at}, {"v1.2.0-3-g2feb77c", at}, {"v1.2.0-12-g884c1db", at}, {"v1.2.1", at},
	}
	for i := 1; i < len(order); i++ {
		a, err := debianVersion(order[i-1].describe, order[i-1].at)
		if err != nil {
			t.Fatal(err)
		}
		b, err := debianVersion(order[i].describe, order[i].at)
		if err != nil {
			t.Fatal(err)
		}
		if err := exec.Command(dpkg, "--compare-versions", a, "lt", b).Run(); err != nil {
			t.Errorf("dpkg: %s is not older than %s (%s, %s)", a, b, order[i-1].describe, order[i].describe)
		}
		if err := exec.Command(dpkg, "--validate-version", b).Run(); err != nil {
			t.Errorf("dpkg --validate-version %s: %v", b, err)
		}
	}
}

func TestDebianArch(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ goarch, goarm, want string }{
		{"amd64", "", "amd64"}, {"arm64", "7", "arm64"}, {"arm", "7", "armhf"}, {"arm", "6", "armhf"}, {"arm", "5", "armel"},
	} {
		if got, err := debianArch(tt.goarch, tt.goarm); err != nil || got != tt.want {
			t.Errorf("debianArch(%s, %s) = %q, %v; want %q", tt.goarch, tt.goarm, got, err, tt.want)
		}
	}
	if _, err := debianArch("arm", ""); err == nil {
		t.Error("GOARCH=arm without GOARM accepted")
	}
	if _, err := debianArch("wasm", ""); err == nil {
		t.Error("GOARCH=wasm accepted")
	}
}
