package service_test

import (
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCurlWithShellToken runs the README's shell token recipe and real curl
// against the service, so the documented way to use it keeps working. It
// is skipped where the tools are missing.
func TestCurlWithShellToken(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"bash", "curl", "jq", "openssl", "xxd", "base64"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	e := newEnv(t)
	e.device(hub1, "dev-1")
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	script := `
set -euo pipefail
sas() { # sas <resource> <policy> <base64 key> [ttl seconds]
  local sr se sig
  sr=$(printf %s "$1" | jq -sRr @uri); se=$(( $(date +%s) + ${4:-3600} ))
  sig=$(printf '%s\n%s' "$sr" "$se" | openssl dgst -sha256 -mac HMAC \
        -macopt hexkey:"$(printf %s "$3" | base64 -d | xxd -p -c 256)" -binary | base64)
  printf 'SharedAccessSignature sr=%s&sig=%s&se=%s&skn=%s' "$sr" "$(printf %s "$sig" | jq -sRr @uri)" "$se" "$2"
}
HUB=$(sas "$HUB_HOST" iothubowner "$HUB_KEY")
curl -sS --fail-with-body --cacert "$CA" -H "Authorization: $HUB" "$URL/devices/dev-1?api-version=2021-04-12" | jq -r .deviceId
HUB2=$(sas "$HUB2_HOST" iothubowner "$HUB2_KEY")
curl -sS --fail-with-body --cacert "$CA" -H "Authorization: $HUB2" "$URL/devices?api-version=2021-04-12"
echo
`
	cmd := exec.Command("bash", "-c", script)
	cmd.Env = append(os.Environ(), "HUB_HOST="+hub1, "HUB_KEY="+hub1Key, "HUB2_HOST="+hub2, "HUB2_KEY="+hub2Key, "CA="+caFile, "URL="+e.srv.URL)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("curl script: %v\n%s", err, out)
	}
	if got := strings.Fields(string(out)); len(got) != 2 || got[0] != "dev-1" || got[1] != "[]" {
		t.Errorf("curl script output = %q; want dev-1 and []", out)
	}
}
