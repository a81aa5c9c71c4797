package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/reefer/tracker/firmware/config"
	"github.com/reefer/tracker/firmware/daemon"
	"github.com/reefer/tracker/firmware/lifecycle"
	"github.com/reefer/tracker/provisioning/cache"
	"github.com/reefer/tracker/provisioning/dps"
)

func init() {
	commands["provision"] = command{"register with DPS once and print the assigned hub (for technicians)", runProvision}
}

// provisionReport is what `tracker provision` prints (as a table or JSON).
type provisionReport struct {
	RegistrationID string `json:"registrationId"`
	// Status is DPS's: assigned, disabled, failed; or unauthorized / error
	// when no operation status came back.
	Status    string `json:"status"`
	Substatus string `json:"substatus,omitempty"`
	Hub       string `json:"hub,omitempty"`
	DeviceID  string `json:"deviceId,omitempty"`
	// Source is "dps", or "cache" when a valid cached assignment was used.
	Source     string    `json:"source,omitempty"`
	AssignedAt time.Time `json:"assignedAt,omitzero"`
	CacheFile  string    `json:"cacheFile,omitempty"`
	// IssuedNotAfter is the end of the hub certificate DPS issued with
	// this registration (certificateIssuance); the tracker switches to it
	// once the hub accepts it.
	IssuedNotAfter time.Time `json:"issuedNotAfter,omitzero"`
	// Meaning says what a refusal means and what the operator must do.
	Meaning   string `json:"meaning,omitempty"`
	ErrorCode int    `json:"errorCode,omitempty"`
	Error     string `json:"error,omitempty"`
}

func runProvision(ctx context.Context, io stdio, args []string) error {
	fs := newFlags("provision", aboutProvision)
	path, o := configFlags(fs)
	force := fs.Bool("force", false, "register with DPS even when a valid cached assignment exists")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	timeout := fs.Duration("timeout", 3*time.Minute, "give up after this long (clock wait and DPS retries included)")
	if err := parseFlags(fs, args, io); err != nil {
		return err
	}
	if *timeout <= 0 {
		return usageError{"--timeout must be positive"}
	}

	cfg, err := config.Load(*path, os.Getenv, *o)
	if err != nil {
		return configError{err}
	}
	log, err := newLogger(io.err, cfg.LogLevel)
	if err != nil {
		return configError{err}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	// The daemon's start-up sequence: identity and roots, state
	// directory, then the clock (a board without an RTC may still be in
	// 1970: say so instead of failing the certificate checks).
	dev, err := daemon.OpenDevice(cfg, time.Now())
	if err == nil {
		// The assignment is cached there.
		if err = os.MkdirAll(cfg.StateDir, 0o700); err != nil {
			err = fmt.Errorf("state directory: %w", err)
		}
	}
	if err == nil {
		err = dev.WaitForClock(ctx, time.Now, time.Second, log)
	}
	if errors.Is(err, daemon.ErrIdentity) {
		return configError{err}
	} else if err != nil {
		return err
	}
	p, err := dev.Provisioner(lifecycle.Config{DPS: dps.Config{MaxWait: *timeout}, Logger: log})
	if err != nil {
		return err
	}
	id := dev.Identity

	rep := provisionReport{RegistrationID: id.RegistrationID, CacheFile: cache.Path(cfg.StateDir)}
	if !*force {
		if a, err := cache.Load(cfg.StateDir); err == nil && cache.Valid(a, id.FingerprintSHA256) {
			rep.Status, rep.Hub, rep.DeviceID, rep.Source, rep.AssignedAt = "assigned", a.Hub, a.DeviceID, "cache", a.AssignedAt
			return printProvision(io.out, rep, *asJSON)
		}
	}
	out, perr := p.Provision(ctx)
	if out != nil {
		rep.Status, rep.Substatus, rep.Source = out.Result.Status, out.Result.Substatus, "dps"
		rep.Hub, rep.DeviceID, rep.AssignedAt = out.Assignment.Hub, out.Assignment.DeviceID, out.Assignment.AssignedAt
		if out.Issued != nil {
			rep.IssuedNotAfter = out.Issued.Leaf.NotAfter
		}
	}
	if perr != nil {
		rep.Error = perr.Error()
		rep.Meaning = lifecycle.Explain(perr)
		if out == nil {
			rep.Status = refusalStatus(perr)
			var de *dps.Error
			if errors.As(perr, &de) {
				rep.ErrorCode = de.ErrorCode
			}
		}
	}
	if err := printProvision(io.out, rep, *asJSON); err != nil {
		return err
	}
	switch {
	case perr == nil:
		return nil
	case errors.Is(perr, lifecycle.ErrCacheSave):
		return fmt.Errorf("assigned, but the cache was not updated (the daemon will register again): %w", perr)
	case rep.Meaning != "":
		return fmt.Errorf("not provisioned: %s", rep.Meaning)
	}
	return fmt.Errorf("not provisioned: %w", perr)
}

// refusalStatus names a failed registration for the report.
func refusalStatus(err error) string {
	switch {
	case errors.Is(err, dps.ErrDisabled):
		return "disabled"
	case errors.Is(err, dps.ErrFailed):
		return "failed"
	case errors.Is(err, dps.ErrUnauthorized):
		return "unauthorized"
	}
	return "error"
}

func printProvision(w io.Writer, r provisionReport, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s\t%s\n", k, v)
		}
	}
	row("registration id", r.RegistrationID)
	row("status", r.Status)
	row("substatus", r.Substatus)
	row("hub", r.Hub)
	row("device id", r.DeviceID)
	row("source", r.Source)
	if !r.AssignedAt.IsZero() {
		row("assigned at", r.AssignedAt.UTC().Format(time.RFC3339))
	}
	if r.Source != "" {
		row("cache", r.CacheFile)
	}
	if !r.IssuedNotAfter.IsZero() {
		row("hub certificate", "issued by DPS, valid until "+r.IssuedNotAfter.UTC().Format(time.RFC3339)+"; used once the hub accepts it")
	}
	if r.ErrorCode != 0 {
		row("error code", fmt.Sprint(r.ErrorCode))
	}
	row("meaning", r.Meaning)
	row("error", r.Error)
	return tw.Flush()
}

const aboutProvision = `Registers this device through DPS once and prints the assigned hub, or the
refusal and what it means. Uses a valid cached assignment unless --force.
Exits 0 only when the device is assigned.`
