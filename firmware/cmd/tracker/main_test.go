package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"
)

func runArgs(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, stdio{&out, &errb})
	return code, out.String(), errb.String()
}

func TestVersion(t *testing.T) {
	code, out, _ := runArgs(t, "version")
	if want := "tracker " + build.String() + "\n"; code != exitOK || out != want {
		t.Errorf("tracker version = %d, %q; want 0, %q", code, out, want)
	}
	if !strings.Contains(out, runtime.Version()) {
		t.Errorf("tracker version = %q; want the Go version %s in it", out, runtime.Version())
	}
}

// A plain `go build` (no -ldflags) still says which source it came from:
// the toolchain's module version and VCS revision, not "dev".
func TestVersionOfPlainBuild(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	out, err := exec.Command("git", "rev-parse", "--path-format=absolute", "HEAD", "--git-dir", "--git-common-dir").Output()
	if err != nil {
		t.Skipf("not in a git checkout (git rev-parse: %v); the toolchain records no revision", err)
	}
	rev, dirs := out[:40], strings.Fields(string(out[41:]))
	if len(dirs) == 2 && dirs[0] != dirs[1] {
		t.Skip("a git worktree: the go command stamps VCS information only in a repository's main checkout")
	}
	bin := filepath.Join(t.TempDir(), "tracker")
	build := exec.Command("go", "build", "-o", bin, ".")
	// The go command's default; a GOFLAGS=-buildvcs=false in the
	// environment (or go env) would hide what is under test.
	build.Env = append(os.Environ(), "GOFLAGS=-buildvcs=auto")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatalf("tracker version: %v", err)
	}
	want := regexp.MustCompile(`^tracker \S+ \(revision ` + string(rev[:12]) + `(, modified)?, \S+, go1\.\d+.* linux/\w+\)\n$`)
	if !want.Match(out) || strings.HasPrefix(string(out), "tracker dev") || strings.HasPrefix(string(out), "tracker devel ") {
		t.Errorf("plain build: tracker version = %q; want it to match %s", out, want)
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		args     []string
		wantCode int
		wantErr  string
	}{
		{nil, exitUsage, "usage: tracker"},
		{[]string{"nope"}, exitUsage, `unknown command "nope"`},
		{[]string{"version", "extra"}, exitUsage, `tracker version: unexpected argument "extra"`},
		{[]string{"run", "extra"}, exitUsage, `tracker run: unexpected argument "extra"`},
		{[]string{"doctor", "--bogus"}, exitUsage, "tracker doctor: flag provided but not defined: -bogus\nrun 'tracker doctor -h' for its flags\n"},
		{[]string{"sensors", "--watch", "soon"}, exitUsage, `tracker sensors: invalid value "soon" for flag -watch`},
		{[]string{"help", "nope"}, exitUsage, `unknown command "nope"`},
	}
	for _, tt := range tests {
		code, stdout, stderr := runArgs(t, tt.args...)
		if code != tt.wantCode || !strings.Contains(stderr, tt.wantErr) || stdout != "" {
			t.Errorf("tracker %q = %d, stdout %q, stderr %q; want %d, nothing on stdout, stderr containing %q", tt.args, code, stdout, stderr, tt.wantCode, tt.wantErr)
		}
	}
}

// Help is an answer, not an error: stdout, exit 0, nothing on stderr, for
// the tracker and every command, in each spelling.
func TestHelp(t *testing.T) {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	_, top, _ := runArgs(t, "help")
	for _, n := range names {
		if !strings.Contains(top, "\n  "+n+" ") {
			t.Errorf("tracker help does not list %q:\n%s", n, top)
		}
	}
	tests := [][]string{{"-h"}, {"--help"}, {"help"}}
	for _, n := range names {
		tests = append(tests, []string{n, "-h"}, []string{n, "--help"}, []string{"help", n})
	}
	for _, args := range tests {
		code, stdout, stderr := runArgs(t, args...)
		want := "usage: tracker "
		if len(args) == 2 {
			want = "usage: tracker " + map[bool]string{true: args[1], false: args[0]}[args[0] == "help"] + " [flags]\n\n"
		}
		if code != exitOK || stderr != "" || !strings.HasPrefix(stdout, want) || strings.Contains(stdout, "help requested") {
			t.Errorf("tracker %q = %d, stdout %q, stderr %q; want 0, stdout starting %q, empty stderr", args, code, stdout, stderr, want)
		}
	}
	// Flags are listed with their defaults.
	if _, out, _ := runArgs(t, "run", "-h"); !strings.Contains(out, "\nflags:\n") || !strings.Contains(out, "-config file") {
		t.Errorf("tracker run -h lacks its flags:\n%s", out)
	}
}
