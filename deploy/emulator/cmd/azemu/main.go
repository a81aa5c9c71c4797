// Command azemu runs the local Azure IoT DPS + IoT Hub emulator for manual
// end-to-end runs on one machine (no Azure account):
//
//	azemu --data ./azemu-data [--mqtt 127.0.0.1:8883] [--https 127.0.0.1:8443] [--hubs 1] [--memory-limit 900MiB]
//
// On start it writes DATA/emulator.json (ID scope, DPS endpoint, hub host
// names, service connection strings, the key of every shared access policy
// (hubs[].policies, dps.policies), CA path) and logs "ready" once every
// listener accepts connections. Devices trust DATA/ca.pem and provision
// against the DPS endpoint with ID scope and X.509 certificate. SIGINT or
// SIGTERM stops it; state survives restarts.
//
// Certificate issuance (docs/protocol.md A.5): --credential-policy NAME
// (repeatable) creates an emulator credential policy at start, whose
// issuing CA signs the csr of devices whose enrollment names it in
// credentialPolicyName; certificates are valid for --issued-cert-validity
// (default 720h) unless the policy says otherwise. emulator.json lists the
// policies and the credential root CA (credentialRootCertPath).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/reefer/tracker/deploy/emulator"
	"github.com/reefer/tracker/deploy/emulator/store"
	"github.com/reefer/tracker/internal/fdlimit"
	"github.com/reefer/tracker/internal/memlimit"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "azemu:", err)
		os.Exit(1)
	}
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	err := l.UnmarshalText([]byte(strings.ToUpper(s)))
	return l, err
}

// run starts the emulator and blocks until ctx ends.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("azemu", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		data        = fs.String("data", "azemu-data", "directory for state and generated secrets (CA, keys, emulator.json)")
		mqttAddr    = fs.String("mqtt", "127.0.0.1:8883", "MQTT-over-TLS listener for DPS and hub 1 (port 0: pick once, then reuse)")
		httpsAddr   = fs.String("https", "127.0.0.1:8443", `HTTPS service API listener ("-" disables)`)
		hubs        = fs.Int("hubs", 1, "number of emulated IoT hubs; hub N>1 listens on the MQTT port + N-1")
		idScope     = fs.String("id-scope", "", "DPS ID scope (default: generated once and kept in --data)")
		logLevel    = fs.String("log-level", "info", "log level: debug, info, warn, error")
		retryAfter  = fs.Duration("retry-after", 3*time.Second, "retry-after DPS sends with 202 assigning")
		assignDelay = fs.Duration("assign-delay", 0, "how long a registration stays assigning")
		regRate     = fs.Int("registrations-per-minute", 1000, "DPS registration rate limit per instance (429 above it)")
		d2cRate     = fs.Int("telemetry-per-second", 0, "device-to-cloud messages per second per hub; above it the hub closes the sender's connection (0: unlimited)")
		validity    = fs.Duration("issued-cert-validity", store.DefaultIssuedCertValidity, "validity of certificates DPS issues for a csr under a credential policy created without one")
		policies    []string
		memLimit    memlimit.Bytes
	)
	fs.Func("credential-policy", "create this credential policy at start if missing, with --issued-cert-validity (an existing one keeps its CA and takes that validity; repeatable); enrollments name it in credentialPolicyName to have DPS issue certificates (docs/protocol.md A.5)", func(s string) error {
		policies = append(policies, s)
		return nil
	})
	fs.Var(&memLimit, "memory-limit", "soft memory limit: a `size` as GOMEMLIMIT takes it (e.g. 900MiB for 10,000 devices connecting at once); 0 keeps GOMEMLIMIT or none")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	lvl, err := parseLevel(*logLevel)
	if err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	if *d2cRate < 0 {
		return fmt.Errorf("--telemetry-per-second must not be negative")
	}
	if *hubs < 1 {
		return fmt.Errorf("--hubs must be at least 1")
	}
	if *validity < store.MinIssuedCertValidity || *validity > store.MaxIssuedCertValidity {
		return fmt.Errorf("--issued-cert-validity must be between %v and %v", store.MinIssuedCertValidity, store.MaxIssuedCertValidity)
	}
	ra := *retryAfter
	if ra == 0 {
		ra = -1 // Config treats 0 as "default"; the flag's 0 means 0.
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	fdlimit.Raise(log) // one socket per device
	if _, err := memlimit.Apply(memLimit, log); err != nil {
		return fmt.Errorf("--memory-limit: %w", err)
	}
	e, err := emulator.New(emulator.Config{
		DataDir:                *data,
		MQTTAddr:               *mqttAddr,
		HTTPSAddr:              *httpsAddr,
		Hubs:                   *hubs,
		IDScope:                *idScope,
		RetryAfter:             ra,
		AssignDelay:            *assignDelay,
		RegistrationsPerMinute: *regRate,
		TelemetryPerSecond:     *d2cRate,
		IssuedCertValidity:     *validity,
		CredentialPolicies:     policies,
		Logger:                 log,
	})
	if err != nil {
		return err
	}
	if err := e.Start(ctx); err != nil {
		e.Close()
		return err
	}
	<-ctx.Done()
	log.Info("stopping")
	return e.Close()
}
