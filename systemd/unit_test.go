package systemd

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const (
	unitFile    = "tracker.service"
	shippedExec = "/usr/bin/tracker"
	maxExposure = 2.5
)

// unit is a parsed unit file: section -> key -> values in order.
type unit map[string]map[string][]string

func parseUnit(t *testing.T, text string) unit {
	t.Helper()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		case strings.HasSuffix(line, `\`):
			t.Fatalf("%s:%d: line continuations are not supported by this test", unitFile, n)
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not key=value in a section: %q", unitFile, n, line)
			}
			u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	return u
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// words splits every value of key into space-separated words.
func (u unit) words(section, key string) []string {
	var w []string
	for _, v := range u[section][key] {
		w = append(w, strings.Fields(v)...)
	}
	return w
}

func TestUnitDirectives(t *testing.T) {
	t.Parallel()
	u := parseUnit(t, readFile(t, unitFile))

	exact := []struct{ section, key, want string }{
		{"Service", "Type", "notify"},
		{"Service", "NotifyAccess", "main"},
		{"Service", "Restart", "on-failure"},
		{"Service", "ExecStart", shippedExec + " run --config /etc/tracker/tracker.json $FLAGS"},
		{"Service", "EnvironmentFile", "-/etc/default/tracker"},
		{"Service", "StateDirectory", "tracker"},
		{"Service", "ConfigurationDirectory", "tracker"},
		{"Service", "ConfigurationDirectoryMode", "0750"},
		{"Unit", "ConditionPathExists", "/etc/tracker/tracker.json"},
		{"Service", "User", "tracker"},
		{"Service", "NoNewPrivileges", "yes"},
		{"Service", "ProtectSystem", "strict"},
		{"Service", "ProtectHome", "yes"},
		{"Service", "PrivateTmp", "yes"},
		{"Service", "DevicePolicy", "closed"},
		{"Service", "ProtectKernelTunables", "yes"},
		{"Service", "ProtectKernelModules", "yes"},
		{"Service", "ProtectKernelLogs", "yes"},
		{"Service", "ProtectControlGroups", "yes"},
		{"Service", "RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"},
		{"Service", "CapabilityBoundingSet", ""},
		{"Service", "LockPersonality", "yes"},
		{"Service", "MemoryDenyWriteExecute", "yes"},
		{"Service", "RestrictSUIDSGID", "yes"},
		{"Service", "SystemCallArchitectures", "native"},
	}
	for _, tt := range exact {
		if got := u[tt.section][tt.key]; len(got) != 1 || got[0] != tt.want {
			t.Errorf("[%s] %s = %q; want exactly %q", tt.section, tt.key, got, tt.want)
		}
	}

	contains := []struct {
		section, key string
		want         []string
	}{
		{"Unit", "After", []string{"time-sync.target", "network-online.target"}},
		{"Unit", "Wants", []string{"network-online.target"}},
		{"Service", "SupplementaryGroups", []string{"i2c", "dialout"}},
		{"Service", "SystemCallFilter", []string{"@system-service"}},
		{"Service", "RestartPreventExitStatus", []string{"78"}},
		{"Install", "WantedBy", []string{"multi-user.target"}},
	}
	for _, tt := range contains {
		got := u.words(tt.section, tt.key)
		for _, w := range tt.want {
			if !slices.Contains(got, w) {
				t.Errorf("[%s] %s = %q; want it to contain %q", tt.section, tt.key, got, w)
			}
		}
	}

	allow := u["Service"]["DeviceAllow"]
	for _, want := range []string{"/dev/i2c-1 rw", "/dev/serial0 rw", "char-ttyUSB rw", "char-ttyACM rw"} {
		if !slices.Contains(allow, want) {
			t.Errorf("DeviceAllow = %q; want an entry %q", allow, want)
		}
	}

	// The health package pings at half the interval; it must be long enough
	// for a slow boot's first loop iteration, short enough to matter.
	wd := u["Service"]["WatchdogSec"]
	if len(wd) != 1 {
		t.Fatalf("WatchdogSec = %q; want one value", wd)
	}
	if s, err := strconv.Atoi(wd[0]); err != nil || s < 10 || s > 300 {
		t.Errorf("WatchdogSec = %q; want whole seconds between 10 and 300", wd[0])
	}
}

// The unit's "do not restart" status must be the code the tracker exits
// with for a bad config.
func TestRestartPreventMatchesTrackerExitConfig(t *testing.T) {
	t.Parallel()
	main := readFile(t, filepath.Join("..", "firmware", "cmd", "tracker", "main.go"))
	m := regexp.MustCompile(`exitConfig\s*=\s*(\d+)`).FindStringSubmatch(main)
	if m == nil {
		t.Fatal("firmware/cmd/tracker/main.go does not define exitConfig")
	}
	u := parseUnit(t, readFile(t, unitFile))
	if got := u.words("Service", "RestartPreventExitStatus"); !slices.Contains(got, m[1]) {
		t.Errorf("RestartPreventExitStatus = %q; want the tracker's exitConfig %s", got, m[1])
	}
}

// An unattended tracker must never stop being restarted: once the start
// limit is hit systemd leaves the unit failed until someone reboots the
// board, which at sea means until the container is back in port. A crash
// loop (a corrupt queue, a wedged bus) restarts every RestartSec, so the
// limit must be off or out of that loop's reach.
func TestCrashLoopNeverExhaustsStartLimit(t *testing.T) {
	t.Parallel()
	u := parseUnit(t, readFile(t, unitFile))
	seconds := func(section, key string, def int) int {
		v := u[section][key]
		if len(v) == 0 {
			return def
		}
		n, err := strconv.Atoi(v[len(v)-1])
		if err != nil {
			t.Fatalf("[%s] %s = %q; want whole seconds", section, key, v)
		}
		return n
	}
	// systemd's defaults: DefaultStartLimitIntervalSec=10s, burst 5, RestartSec=100ms.
	interval := seconds("Unit", "StartLimitIntervalSec", 10)
	burst := seconds("Unit", "StartLimitBurst", 5)
	restart := seconds("Service", "RestartSec", 0)
	if restart < 1 {
		t.Errorf("RestartSec = %d; want at least 1 s between restarts (no busy crash loop)", restart)
	}
	if interval != 0 && burst*restart <= interval {
		t.Errorf("StartLimitIntervalSec=%d, StartLimitBurst=%d, RestartSec=%d: a crash loop reaches the start limit "+
			"after %d s and the tracker stays down for good; want StartLimitIntervalSec=0", interval, burst, restart, burst*restart)
	}
}

func TestDefaultsAndSysusers(t *testing.T) {
	t.Parallel()
	defaults := readFile(t, "tracker.defaults")
	if !regexp.MustCompile(`(?m)^FLAGS=""$`).MatchString(defaults) {
		t.Errorf(`tracker.defaults lacks the line FLAGS=""`)
	}
	u := parseUnit(t, readFile(t, unitFile))
	sysusers := readFile(t, "tracker.sysusers")
	user := u["Service"]["User"][0]
	if !regexp.MustCompile(`(?m)^u ` + user + ` `).MatchString(sysusers) {
		t.Errorf("tracker.sysusers does not create the unit's User=%s", user)
	}
	for _, g := range u.words("Service", "SupplementaryGroups") {
		if !regexp.MustCompile(`(?m)^m ` + user + ` ` + g + `$`).MatchString(sysusers) {
			t.Errorf("tracker.sysusers does not add %s to group %s", user, g)
		}
	}
}

// testUnit writes the shipped unit into a temp dir, with ExecStart pointing
// at a temp executable: verify insists the binary exists, and nothing else
// changes.
func testUnit(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "tracker")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	text := readFile(t, unitFile)
	if strings.Count(text, shippedExec+" ") != 1 {
		t.Fatalf("%s: want exactly one %q", unitFile, shippedExec)
	}
	path := filepath.Join(dir, unitFile)
	if err := os.WriteFile(path, []byte(strings.Replace(text, shippedExec+" ", bin+" ", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func systemdAnalyze(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (apt-get install systemd); cannot check the unit")
	}
	return p
}

// verify returns what systemd-analyze verify says about unit (ignoring
// complaints about other units on this machine) and whether it failed.
func verify(t *testing.T, sa, path string) (complaints []string, failed bool) {
	t.Helper()
	out, err := exec.Command(sa, "verify", path).CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, path) || strings.Contains(line, unitFile) {
			complaints = append(complaints, line)
		}
	}
	return complaints, err != nil
}

func TestSystemdAnalyzeVerify(t *testing.T) {
	t.Parallel()
	sa := systemdAnalyze(t)
	path := testUnit(t)
	if complaints, failed := verify(t, sa, path); failed || len(complaints) > 0 {
		t.Errorf("systemd-analyze verify %s: failed=%v\n%s", unitFile, failed, strings.Join(complaints, "\n"))
	}

	// The check must be able to fail: a typo'd directive is reported.
	broken := filepath.Join(filepath.Dir(path), "broken.service")
	text := strings.Replace(readFile(t, path), "Type=notify", "Type=notifyy\nProtectSytem=strict", 1)
	if err := os.WriteFile(broken, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if complaints, failed := verify(t, sa, broken); !failed && len(complaints) < 2 {
		t.Errorf("systemd-analyze verify of a broken unit reported %q; want both typos", complaints)
	}
}

var exposureRE = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)

func TestSystemdAnalyzeSecurity(t *testing.T) {
	t.Parallel()
	sa := systemdAnalyze(t)
	path := testUnit(t)
	out, err := exec.Command(sa, "security", "--offline=true", "--no-pager", path).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security --offline=true: %v\n%s", err, out)
	}
	m := exposureRE.FindSubmatch(out)
	if m == nil {
		t.Fatalf("no \"Overall exposure level\" line in:\n%s", out)
	}
	score, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("exposure %.1f", score)
	if score > maxExposure {
		t.Errorf("exposure level = %.1f; want <= %.1f\n%s", score, maxExposure, out)
	}
}
