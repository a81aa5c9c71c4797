// Command fleetctl is the operator's tool for a tracker fleet on Azure IoT
// DPS + IoT Hub, or on the local emulator: enrollment groups, disenrolling
// and re-enrolling trackers (one, or a port call's worth from a CSV),
// registration records, hub identities, twins, direct methods and, on the
// emulator, telemetry. See docs/fleetctl.md and `fleetctl help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/reefer/tracker/deploy/fleetctl/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}
