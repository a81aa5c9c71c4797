package main

import (
	"context"
	"errors"
	"os"

	"github.com/reefer/tracker/firmware/config"
	"github.com/reefer/tracker/firmware/daemon"
	"github.com/reefer/tracker/firmware/health"
)

func init() {
	commands["run"] = command{"run the tracker daemon (the systemd service)", runRun}
}

// runRun is `tracker run`: load the config, then hand over to
// firmware/daemon until SIGTERM.
func runRun(ctx context.Context, io stdio, args []string) error {
	fs := newFlags("run", aboutRun)
	path, o := configFlags(fs)
	if err := parseFlags(fs, args, io); err != nil {
		return err
	}
	cfg, err := config.Load(*path, os.Getenv, *o)
	if err != nil {
		// systemctl status shows why the unit will not come back.
		_ = health.Status("invalid config: " + err.Error())
		return configError{err}
	}
	log, err := newLogger(io.err, cfg.LogLevel)
	if err != nil {
		return configError{err}
	}
	procs := setProcs(os.Getenv)
	log.Info("tracker starting", "version", build.Version, "revision", build.ShortRevision(), "modified", build.Modified, "go", build.GoVersion, "config", cfg.Path(), "pid", os.Getpid(), "gomaxprocs", procs)
	initHost(cfg.Sensors.Env.Mode, log)
	d, err := daemon.New(daemon.Config{
		Tracker:         cfg,
		FirmwareVersion: build.Version,
		Logger:          log,
		OpenI2C:         openI2C,
	})
	if err != nil {
		return configError{err}
	}
	err = d.Run(ctx)
	if errors.Is(err, daemon.ErrIdentity) {
		_ = health.Status("identity refused: " + err.Error())
		return configError{err}
	}
	return err
}

const aboutRun = `Runs the tracker daemon, as tracker.service does: checks the device identity,
waits for a plausible clock, uses the cached hub or provisions through DPS,
samples the sensors every telemetryDelay seconds, queues each reading on disk
and sends it to IoT Hub, and obeys the device twin and direct methods. Stops
cleanly on SIGTERM. Exits 78 when the config or the identity is invalid, which
the unit does not restart.`
