package firmware

import (
	"os"
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

// firmwareImports places every firmware package in the layers of README
// "Layout": the module packages each one may import (a prefix allows what
// is below it). A firmware package missing here fails TestFirmwareLayers,
// so a new one has to take its place deliberately.
var firmwareImports = map[string][]string{
	"firmware":                 {},
	"firmware/buildinfo":       {},
	"firmware/health":          {},
	"firmware/model":           {"internal"},
	"firmware/telemetry":       {"drivers"},
	"firmware/config":          {"drivers", "firmware/telemetry", "provisioning/opcert"},
	"firmware/queue":           {"internal"},
	"firmware/statequeue":      {"firmware/queue"},
	"firmware/sensorcheck":     {"drivers"},
	"firmware/sensors":         {"drivers", "firmware/config", "firmware/sensorcheck"},
	"firmware/command":         {"firmware/telemetry", "internal"},
	"firmware/agent":           {"drivers", "firmware/command", "firmware/telemetry", "internal"},
	"firmware/agent/agenttest": {"drivers", "firmware/agent", "firmware/command", "firmware/telemetry", "internal"},
	"firmware/lifecycle":       {"firmware/buildinfo", "provisioning", "internal"},
	"firmware/doctor": {"drivers", "firmware/config", "firmware/lifecycle", "firmware/queue", "firmware/sensorcheck",
		"firmware/statequeue", "provisioning", "internal"},
	"firmware/daemon": {"drivers", "firmware/agent", "firmware/command", "firmware/config", "firmware/doctor", "firmware/health",
		"firmware/lifecycle", "firmware/model", "firmware/queue", "firmware/sensorcheck", "firmware/sensors",
		"firmware/statequeue", "firmware/telemetry", "provisioning", "internal"},
	// main only wires; it alone registers periph's host drivers.
	"firmware/cmd/tracker": {"drivers", "firmware/buildinfo", "firmware/config", "firmware/daemon", "firmware/doctor",
		"firmware/health", "firmware/lifecycle", "firmware/sensorcheck", "firmware/sensors", "provisioning", "internal"},
}

// TestFirmwareLayers checks every firmware package's imports of the
// module (and of periph's host drivers) against firmwareImports. Nothing
// imports the emulator, the operator tools or the benchmarks.
func TestFirmwareLayers(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}:{{join .Imports " "}}`, module+"/firmware/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	seen := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, ":")
		rel := strings.TrimPrefix(strings.TrimPrefix(pkg, module), "/")
		allowed, ok := firmwareImports[rel]
		if !ok {
			t.Errorf("%s has no place in the import layers: add it to firmwareImports (and README Layout)", rel)
			continue
		}
		seen++
		for _, imp := range strings.Fields(imports) {
			if strings.HasPrefix(imp, "periph.io/x/host") && rel != "firmware/cmd/tracker" {
				t.Errorf("%s imports %s; only the tracker command registers the host drivers", rel, imp)
			}
			dep, inModule := strings.CutPrefix(imp, module+"/")
			if !inModule {
				continue
			}
			ok := false
			for _, a := range allowed {
				ok = ok || dep == a || strings.HasPrefix(dep, a+"/")
			}
			if !ok {
				t.Errorf("%s imports %s; its layer allows only %v", rel, dep, allowed)
			}
		}
	}
	if seen < len(firmwareImports) {
		t.Errorf("go list found %d of the %d firmware packages in firmwareImports; drop the ones that are gone", seen, len(firmwareImports))
	}
}

// TestReadmeLayout keeps README's layout table in step with the firmware
// packages: each one is named there (a subpackage by its parent).
func TestReadmeLayout(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, layout, ok := strings.Cut(string(readme), "## Layout")
	if !ok {
		t.Fatal("README has no Layout section")
	}
	for pkg := range firmwareImports {
		if pkg == "firmware" {
			continue
		}
		named := false
		for p := pkg; strings.Contains(p, "/") && !named; p = p[:strings.LastIndex(p, "/")] {
			named = strings.Contains(layout, "`"+p+"`")
		}
		if !named {
			t.Errorf("README's layout table does not name %s", pkg)
		}
	}
}
