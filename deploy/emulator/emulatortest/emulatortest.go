// Package emulatortest starts the local DPS + IoT Hub emulator for a test,
// so the emulator itself need not import package testing.
package emulatortest

import (
	"testing"

	"github.com/reefer/tracker/deploy/emulator"
)

// Start starts an emulator for a test: data in t.TempDir(), every listener
// on 127.0.0.1 with a free port, DPS retry-after 0 (emulator.LocalConfig),
// closed by t.Cleanup. mod may adjust the config (e.g. Hubs, rate limits).
// Set AZEMU_TEST_LOG=1 to see the emulator's debug log on stderr.
func Start(t testing.TB, mod ...func(*emulator.Config)) *emulator.Emulator {
	t.Helper()
	e, err := emulator.StartLocal(t.TempDir(), mod...)
	if err != nil {
		t.Fatalf("start emulator: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}
