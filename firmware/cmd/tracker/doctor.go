package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/reefer/tracker/firmware/config"
	"github.com/reefer/tracker/firmware/doctor"
	"github.com/reefer/tracker/firmware/sensorcheck"
	"github.com/reefer/tracker/firmware/sensors"
)

func init() {
	commands["doctor"] = command{"check config, certificate, clock, sensors, DPS, hub and queue; prints each fix", runDoctor}
}

func runDoctor(ctx context.Context, io stdio, args []string) error {
	fs := newFlags("doctor", aboutDoctor)
	cfgPath, ov := configFlags(fs)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	offline := fs.Bool("offline", false, "skip the checks that use the network (DPS, hub)")
	noSensors := fs.Bool("no-sensors", false, "skip the sensor checks")
	gpsWait := fs.Duration("gps-wait", 3*time.Second, "how long to wait for a GPS fix")
	timeout := fs.Duration("timeout", doctor.DefaultTimeout, "time limit of each network check")
	verbose := fs.Bool("v", false, "log what the drivers do, to stderr")
	if err := parseFlags(fs, args, io); err != nil {
		return err
	}
	level := "error"
	if *verbose {
		level = "debug"
	}
	log, err := newLogger(io.err, level)
	if err != nil {
		return usageError{err.Error()}
	}

	rep := doctor.Run(ctx, doctor.Inputs{
		ConfigPath: *cfgPath,
		Getenv:     os.Getenv,
		Overrides:  *ov,
		Sensors: func(ctx context.Context, c *config.Config) sensorcheck.Report {
			return readSensorsOnce(ctx, c, *gpsWait, log)
		},
		SkipSensors: *noSensors,
		Offline:     *offline,
		BuildTime:   build.Time,
		Timeout:     *timeout,
		Logger:      log,
	})
	if *asJSON {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintf(io.out, "%s\n", b)
	} else if err := rep.WriteText(io.out); err != nil {
		return err
	}
	if rep.Failed() {
		return errors.New("some checks failed; see the fix under each FAIL")
	}
	return nil
}

// readSensorsOnce opens the sensors the way `tracker sensors` does, but
// probing: "auto" is opened as hardware, so a missing sensor shows up
// instead of hiding behind the simulator.
func readSensorsOnce(ctx context.Context, c *config.Config, fixWait time.Duration, log *slog.Logger) sensorcheck.Report {
	o := sensors.Options{Probe: true, OpenI2C: openI2C, Seed: 1}
	initHost(sensors.Mode(c.Sensors.Env.Mode, o.Probe), log)
	set := sensors.Open(ctx, c.Sensors, o, log)
	defer set.Close()
	return set.Read(ctx, sensorcheck.Options{FixWait: fixWait})
}

const aboutDoctor = `Checks this tracker and prints OK, WARN or FAIL per check (config, key
permissions, certificate and its expiry, the DPS-issued operational
certificate with certificateIssuance, clock, sensors, DPS endpoint, cached
hub, whether the hub accepts the device, queue), with the fix. Exits 1 when
any check FAILs.`
