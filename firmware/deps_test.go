package firmware

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/reefer/tracker"

// TestImportDirection enforces the dependency arrows of the layout (see
// README "Layout"): drivers and provisioning never reach up into firmware,
// the emulator is an independent implementation that imports none of the
// device code, and only the tracker command touches periph's host drivers.
// Test files are exempt: tests in provisioning and firmware run against the
// emulator.
func TestImportDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}:{{join .Imports " "}}`, module+"/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	rules := []struct {
		from      string   // package prefix, relative to the module
		forbidden []string // import prefixes it must not use
	}{
		{"drivers", []string{module + "/firmware", module + "/provisioning", module + "/deploy", "periph.io/x/host"}},
		{"provisioning", []string{module + "/firmware", module + "/drivers", module + "/deploy", "periph.io/x/host"}},
		{"deploy", []string{module + "/firmware", module + "/drivers", module + "/provisioning", "periph.io/x/host"}},
		// The operator tool speaks the services' REST APIs only: it must
		// run against Azure, so it cannot lean on the emulator's code.
		{"deploy/fleetctl", []string{module + "/deploy/emulator", module + "/deploy/demo"}},
		{"firmware/telemetry", []string{module + "/provisioning", module + "/deploy", "periph.io/x/host"}},
		// Shared helpers sit below everything that uses them.
		{"internal", []string{module + "/firmware", module + "/drivers", module + "/provisioning", module + "/deploy", module + "/bench"}},
		// What a binary is: the standard library only.
		{"firmware/buildinfo", []string{module}},
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, ":")
		rel := strings.TrimPrefix(strings.TrimPrefix(pkg, module), "/")
		for _, r := range rules {
			if rel != r.from && !strings.HasPrefix(rel, r.from+"/") {
				continue
			}
			checked++
			for _, imp := range strings.Fields(imports) {
				for _, bad := range r.forbidden {
					if imp == bad || strings.HasPrefix(imp, bad+"/") {
						t.Errorf("%s imports %s; %s must not import %s", rel, imp, r.from, bad)
					}
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no packages checked; is the module path right?")
	}
}
