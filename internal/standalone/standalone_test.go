package standalone

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// outside matches references to things a clone does not have. The patterns
// are written so that this file does not match them itself (a backslash or
// a group sits inside each literal), and the test cases build their inputs
// by concatenation for the same reason.
var outside = []*regexp.Regexp{
	regexp.MustCompile(`(\.\./)+shared\b`),                     // a sibling checkout
	regexp.MustCompile(`\bshared/+docs\b`),                     // the machine's shared documents
	regexp.MustCompile(`\b(scenario|azure-iot-mqtt)\.md\b`),    // documents that only exist there
	regexp.MustCompile(`(?m)(^|[^\w.~$-])/(work|home|Users)/`), // absolute machine paths
}

// findOutside returns the first reference to something outside the
// repository in text, or "".
func findOutside(text []byte) string {
	for _, re := range outside {
		if m := re.Find(text); m != nil {
			return string(m)
		}
	}
	return ""
}

func TestFindOutside(t *testing.T) {
	for _, tc := range []struct {
		text string
		want bool
	}{
		{"see ../" + "shared" + "/docs/x.md", true},
		{"see ../../.." + "/shared", true},
		{"cited from shared" + "/docs/azure.md", true},
		{"as in scenario" + ".md step 2", true},
		{"the azure-iot-mqtt" + ".md reference", true},
		{"cd /" + "work/main && make", true},
		{"first line\n/" + "work/main on a later line", true},
		{"`/" + "home/pi/certs`", true},
		{"path=/" + "Users/x/go", true},
		{"docs/protocol.md section A.4", false},
		{"spec B.5; reference flow step 7", false},
		{"POST $E/certificates/root/verify", false},
		{"$HOME/work/x and ~/work/y and ./work/z", false},
		{"internal/syncbuf: a shared buffer", false},
		{"README.md and docs/README.md", false},
	} {
		if got := findOutside([]byte(tc.text)) != ""; got != tc.want {
			t.Errorf("findOutside(%q) found = %v; want %v", tc.text, got, tc.want)
		}
	}
}

// TestRepositoryStandsAlone reads every tracked file (or, outside a git
// checkout, every file under the module root except .git and bin) and fails
// on the first outside reference in each.
func TestRepositoryStandsAlone(t *testing.T) {
	root := moduleRoot(t)
	files := trackedFiles(t, root)
	if len(files) < 50 {
		t.Fatalf("found only %d files under %s; the file listing is broken", len(files), root)
	}
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			if os.IsNotExist(err) {
				continue // deleted in the work tree, not yet committed
			}
			t.Fatal(err)
		}
		if bytes.IndexByte(b, 0) >= 0 {
			continue // binary
		}
		if findOutside(b) == "" {
			continue // the common case: one pass over the whole file
		}
		for i, line := range bytes.Split(b, []byte("\n")) {
			if m := findOutside(line); m != "" {
				t.Errorf("%s:%d refers outside the repository (%q); point it at docs/ instead", f, i+1, m)
			}
		}
	}
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

func trackedFiles(t *testing.T, root string) []string {
	t.Helper()
	cmd := exec.Command("git", "ls-files", "-z")
	cmd.Dir = root
	if out, err := cmd.Output(); err == nil {
		return strings.Split(strings.TrimRight(string(out), "\x00"), "\x00")
	}
	var files []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() && (rel == ".git" || rel == "bin") {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() {
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}
