package fuzzscript

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// The fuzz targets of the throwaway module. Each misbehaves in one way.
const (
	// findingTarget fails on anything but its seed: a real finding.
	findingTarget = `package finding

import "testing"

func FuzzBad(f *testing.F) {
	f.Add("ok")
	f.Fuzz(func(t *testing.T, s string) {
		if s != "ok" {
			t.Fatalf("not ok: %q", s)
		}
	})
}
`
	// flakyTarget kills its fuzzing process on the first new input (the
	// marker file in FUZZSCRIPT_MARKER records that it did), as a worker
	// that hung or crashed would: go test writes that input, which passes
	// when rerun.
	flakyTarget = `package flaky

import (
	"os"
	"testing"
)

func FuzzFlaky(f *testing.F) {
	f.Add("a")
	f.Fuzz(func(t *testing.T, s string) {
		marker := os.Getenv("FUZZSCRIPT_MARKER")
		if s == "a" || !inFuzzWorker() {
			return
		}
		if _, err := os.Stat(marker); err == nil {
			return
		}
		if err := os.WriteFile(marker, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		os.Exit(7)
	})
}
`
	// killedTarget's fuzzing process is always killed (as the OOM killer
	// would): go test writes no input, and the retry fails too.
	killedTarget = `package killed

import (
	"syscall"
	"testing"
)

func FuzzKilled(f *testing.F) {
	f.Add("a")
	f.Fuzz(func(t *testing.T, s string) {
		if inFuzzWorker() {
			syscall.Kill(syscall.Getpid(), syscall.SIGKILL)
		}
	})
}
`
	// workerHelper goes into every package: whether this test process is
	// one of go test's fuzzing workers (not the coordinator or a rerun).
	workerHelper = `package %s

import "flag"

func inFuzzWorker() bool {
	w := flag.Lookup("test.fuzzworker")
	return w != nil && w.Value.String() == "true"
}
`
)

// runScript copies .ci/fuzz.sh into a new module holding the package pkg
// with the test file src, runs it on that package and returns the module
// directory, the output and whether the script succeeded.
func runScript(t *testing.T, pkg, src string, env ...string) (string, string, bool) {
	t.Helper()
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash is not installed; .ci/fuzz.sh needs it")
	}
	script, err := os.ReadFile(filepath.Join("..", "..", ".ci", "fuzz.sh"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// A module path of its own: go test keeps a fuzz corpus per module
	// path in GOCACHE, which parallel runs of this test must not share.
	suffix := make([]byte, 6)
	rand.Read(suffix)
	files := map[string]string{
		"go.mod":                     "module example.com/fuzzscript" + hex.EncodeToString(suffix) + "\n\ngo 1.26\n",
		".ci/fuzz.sh":                string(script),
		pkg + "/" + pkg + "_test.go": src,
		pkg + "/worker_test.go":      fmt.Sprintf(workerHelper, pkg),
	}
	for name, text := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("bash", filepath.Join(dir, ".ci", "fuzz.sh"), "./"+pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), append([]string{
		"GO=" + filepath.Join(runtime.GOROOT(), "bin", "go"),
		"GOFLAGS=-mod=mod",
		"FUZZTIME=200x",
	}, env...)...)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("running fuzz.sh: %v\n%s", err, out)
	}
	t.Logf("fuzz.sh output:\n%s", out)
	return dir, string(out), err == nil
}

func mustContain(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("fuzz.sh output lacks %q", w)
		}
	}
}

func TestFindingPrintsInputAndFails(t *testing.T) {
	t.Parallel()
	dir, out, ok := runScript(t, "finding", findingTarget)
	if ok {
		t.Fatal("fuzz.sh succeeded on a target that fails on every new input")
	}
	m := regexp.MustCompile(`input: (\./finding/testdata/fuzz/FuzzBad/[0-9a-f]+)\n`).FindStringSubmatch(out)
	if m == nil {
		t.Fatal("fuzz.sh did not name the failing input's file under the package's testdata/fuzz")
	}
	contents, err := os.ReadFile(filepath.Join(dir, m[1]))
	if err != nil {
		t.Fatalf("the input fuzz.sh named is not kept: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(contents)), "\n") {
		mustContain(t, out, "| "+line+"\n")
	}
	mustContain(t, out, "not ok:", "FINDING", "./finding FuzzBad (finding)")
	if strings.Contains(out, "INFRASTRUCTURE") {
		t.Error("a finding was reported as an infrastructure failure")
	}
}

func TestInfrastructureFailureIsRetriedOnce(t *testing.T) {
	t.Parallel()
	marker := filepath.Join(t.TempDir(), "crashed-once")
	dir, out, ok := runScript(t, "flaky", flakyTarget, "FUZZSCRIPT_MARKER="+marker)
	if !ok {
		t.Fatal("fuzz.sh failed although the retry of a worker crash passed")
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("the target never crashed its worker, so nothing was tested: %v", err)
	}
	mustContain(t, out, "fuzzing process hung or terminated unexpectedly", "input: ./flaky/testdata/fuzz/FuzzFlaky/",
		"| go test fuzz v1", "(it does not reproduce; its contents are above)", "INFRASTRUCTURE FAILURE",
		"running FuzzFlaky once more", "ok (retry after an infrastructure failure)")
	if strings.Contains(out, "FINDING") {
		t.Error("a crash that does not reproduce was reported as a finding")
	}
	left, _ := filepath.Glob(filepath.Join(dir, "flaky", "testdata", "fuzz", "FuzzFlaky", "*"))
	if len(left) > 0 {
		t.Errorf("an input that does not reproduce was left to be committed: %v", left)
	}
}

func TestInfrastructureFailureTwiceFails(t *testing.T) {
	t.Parallel()
	_, out, ok := runScript(t, "killed", killedTarget)
	if ok {
		t.Fatal("fuzz.sh succeeded although every fuzzing process was killed")
	}
	mustContain(t, out, "no input was written", "running FuzzKilled once more",
		"INFRASTRUCTURE FAILURE again", "./killed FuzzKilled (infrastructure failure twice)")
}

func TestFuzzTargetsSelects(t *testing.T) {
	t.Parallel()
	const two = `package two

import "testing"

func FuzzOne(f *testing.F) { f.Fuzz(func(t *testing.T, s string) {}) }
func FuzzTwo(f *testing.F) { f.Fuzz(func(t *testing.T, s string) {}) }
`
	_, out, ok := runScript(t, "two", two, "FUZZTARGETS=^FuzzTwo$")
	if !ok {
		t.Fatal("fuzz.sh failed on a target that cannot fail")
	}
	mustContain(t, out, "FuzzTwo", "1 targets, no findings")
	if strings.Contains(out, "FuzzOne") {
		t.Error("FUZZTARGETS=^FuzzTwo$ ran FuzzOne")
	}
}
