package emulator

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestIndependentOfDeviceCode keeps the emulator an independent
// implementation of the service side: no package under deploy/emulator
// may import the project's device packages, and none but emulatortest
// imports testing outside its tests.
func TestIndependentOfDeviceCode(t *testing.T) {
	forbidden := []string{"github.com/reefer/tracker/provisioning", "github.com/reefer/tracker/firmware", "github.com/reefer/tracker/drivers"}
	fset := token.NewFileSet()
	n := 0
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
			return err
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		n++
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			// Test helpers live in emulatortest: the emulator proper
			// carries no test code.
			if p == "testing" && !strings.HasSuffix(path, "_test.go") && !strings.HasPrefix(path, "emulatortest"+string(filepath.Separator)) {
				t.Errorf("%s imports testing; test helpers belong in package emulatortest", path)
			}
			for _, bad := range forbidden {
				if p == bad || strings.HasPrefix(p, bad+"/") {
					t.Errorf("%s imports %s; the emulator must not depend on device code", path, p)
				}
			}
		}
		return nil
	})
	if err != nil || n < 10 {
		t.Fatalf("walked %d files: %v", n, err)
	}
}
