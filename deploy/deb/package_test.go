package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The package built from the repository's files holds what Debian policy
// and the unit expect, with /etc/default/tracker as its only conffile and
// the maintainer scripts in place.
func TestBuild(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("dpkg-deb not installed: cannot read the package")
	}
	dir := t.TempDir()
	// A stand-in tracker that answers -h like the real one.
	bin := filepath.Join(dir, "tracker")
	script := "#!/bin/sh\ncase \"$*\" in\n" +
		"help) printf 'usage: tracker <command> [flags]\\n\\nThe firmware.\\n\\ncommands:\\n  run   the daemon\\n' ;;\n" +
		"'run -h') printf 'usage: tracker run [flags]\\n\\nRuns it.\\n' ;;\n" +
		"*) exit 2 ;;\nesac\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "dist")
	path, err := build(options{root: "../..", binary: bin, goarch: "arm", goarm: "7", describe: "v1.2.0-3-g2feb77c", out: out})
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(out, "tracker_1.2.0+git3.2feb77c_armhf.deb"); path != want {
		t.Errorf("package at %s; want %s", path, want)
	}

	list, err := exec.Command("dpkg-deb", "--contents", path).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"-rwxr-xr-x root/root .* ./usr/bin/tracker",
		"-rw-r--r-- root/root .* ./lib/systemd/system/tracker.service",
		"./etc/default/tracker", "./usr/lib/sysusers.d/tracker.conf", "./usr/share/man/man1/tracker.1.gz",
		"./usr/share/doc/tracker/examples/tracker.json", "./usr/share/doc/tracker/copyright",
		"./usr/share/doc/tracker/changelog.gz", "./usr/share/lintian/overrides/tracker",
	} {
		if !containsLine(string(list), want) {
			t.Errorf("package lacks %s:\n%s", want, list)
		}
	}
	// Not a live config: a fresh install must not start the tracker.
	if strings.Contains(string(list), "./etc/tracker/") {
		t.Errorf("package ships files in /etc/tracker:\n%s", list)
	}

	ctl := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "--control", path, ctl).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb --control: %v\n%s", err, out)
	}
	conffiles, _ := os.ReadFile(filepath.Join(ctl, "conffiles"))
	if got := strings.Fields(string(conffiles)); !slices.Equal(got, []string{"/etc/default/tracker"}) {
		t.Errorf("conffiles = %q; want only /etc/default/tracker", got)
	}
	control, _ := os.ReadFile(filepath.Join(ctl, "control"))
	for _, want := range []string{"Package: tracker\n", "Version: 1.2.0+git3.2feb77c\n", "Architecture: armhf\n", "Depends: systemd | systemd-standalone-sysusers, init-system-helpers"} {
		if !strings.Contains(string(control), want) {
			t.Errorf("control lacks %q:\n%s", want, control)
		}
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		b, err := os.ReadFile(filepath.Join("", s+".sh"))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(filepath.Join(ctl, s))
		if string(got) != string(b) {
			t.Errorf("DEBIAN/%s differs from %s.sh", s, s)
		}
	}
}

// containsLine reports whether some line of text has every space-separated
// part of want, in order (dpkg-deb pads its columns).
func containsLine(text, want string) bool {
	parts := strings.Split(want, " .* ")
	for _, line := range strings.Split(text, "\n") {
		rest, ok := line, true
		for _, p := range parts {
			i := strings.Index(rest, p)
			if i < 0 {
				ok = false
				break
			}
			rest = rest[i+len(p):]
		}
		if ok && strings.HasSuffix(line, parts[len(parts)-1]) {
			return true
		}
	}
	return false
}
