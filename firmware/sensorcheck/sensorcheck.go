// Package sensorcheck takes one reading from each sensor for a technician
// (`tracker sensors`, and later `tracker doctor`) and says plainly what is
// missing. It reads through the same drivers the daemon uses.
package sensorcheck

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/reefer/tracker/drivers"
	"github.com/reefer/tracker/drivers/gps"
)

// Receiver is the part of gps.Receiver a check needs.
type Receiver interface {
	Latest() (gps.Fix, bool)
	Stats() gps.Stats
	Source() drivers.Source
}

// Report is one reading of every sensor, with what went wrong.
type Report struct {
	Time     time.Time    `json:"time"`
	Env      *drivers.Env `json:"env,omitempty"`
	EnvError string       `json:"envError,omitempty"`
	// EnvErr is the error EnvError says, for errors.Is.
	EnvErr error    `json:"-"`
	GPS    *gps.Fix `json:"gps,omitempty"`
	// GPSSource is set whenever a receiver exists, fix or not, so a
	// simulated receiver without a fix still says it is simulated.
	GPSSource drivers.Source `json:"gpsSource,omitempty"`
	GPSStats  *gps.Stats     `json:"gpsStats,omitempty"`
	GPSError  string         `json:"gpsError,omitempty"`
}

// Options control one check.
type Options struct {
	// FixWait is how long to wait for a GPS fix.
	FixWait time.Duration
	// Poll is how often to look for a fix while waiting (default 100 ms).
	Poll time.Duration
	Now  func() time.Time
	// Port names the GPS port in messages.
	Port string
}

// Read reads env once and waits up to FixWait for a fix from rx. Either may
// be nil when it could not be opened; openErr says why.
func Read(ctx context.Context, env drivers.EnvSensor, envOpenErr error, rx Receiver, gpsOpenErr error, o Options) Report {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Poll <= 0 {
		o.Poll = 100 * time.Millisecond
	}
	r := Report{Time: o.Now().UTC()}
	switch {
	case envOpenErr != nil:
		r.EnvError, r.EnvErr = envOpenErr.Error(), envOpenErr
	case env != nil:
		e, err := env.Sense(ctx)
		if err != nil {
			r.EnvError, r.EnvErr = err.Error(), err
		} else {
			r.Env = &e
		}
	}
	switch {
	case gpsOpenErr != nil:
		r.GPSError = gpsOpenErr.Error()
	case rx != nil:
		r.GPSSource = rx.Source()
		fix, ok := waitFix(ctx, rx, o.FixWait, o.Poll)
		st := rx.Stats()
		r.GPSStats = &st
		switch {
		case ok:
			r.GPS = &fix
		case st.Sentences == 0:
			r.GPSError = fmt.Sprintf("no NMEA on %s within %s", o.Port, o.FixWait)
		default:
			r.GPSError = fmt.Sprintf("NMEA on %s but no fix within %s (%d sentences; the antenna needs a view of the sky)", o.Port, o.FixWait, st.Sentences)
		}
	}
	return r
}

func waitFix(ctx context.Context, rx Receiver, wait, poll time.Duration) (gps.Fix, bool) {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		if fix, ok := rx.Latest(); ok {
			return fix, true
		}
		select {
		case <-ctx.Done():
			return gps.Fix{}, false
		case <-deadline.C:
			return rx.Latest()
		case <-tick.C:
		}
	}
}

// Problems lists what is missing or wrong, one line each; empty means all
// sensors gave a reading.
func (r Report) Problems() []string {
	var p []string
	if r.EnvError != "" {
		p = append(p, "env: "+r.EnvError)
	}
	if r.GPSError != "" {
		p = append(p, "gps: "+r.GPSError)
	}
	return p
}

// Simulated says whether any reading came from a simulator.
func (r Report) Simulated() bool {
	return (r.Env != nil && r.Env.Source == drivers.Simulated) || r.GPSSource == drivers.Simulated
}

// WriteTable prints the report for a person.
func (r Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SENSOR\tSOURCE\tREADING")
	switch {
	case r.Env != nil:
		e := r.Env
		hum := "humidity absent (no humidity sensor)"
		if e.HumidityRH != nil {
			hum = fmt.Sprintf("%.1f %%RH", *e.HumidityRH)
		}
		fmt.Fprintf(tw, "env\t%s\t%s: %.2f °C, %.2f hPa, %s\n", e.Source, e.Chip, e.TemperatureC, e.PressureHPa, hum)
	default:
		fmt.Fprintf(tw, "env\t-\tFAIL: %s\n", r.EnvError)
	}
	switch {
	case r.GPS != nil:
		f := r.GPS
		fmt.Fprintf(tw, "gps\t%s\t%s, quality %d, %d satellites, HDOP %.1f, %.1f kn, course %.0f°, at %s\n",
			f.Source, latLon(f.Latitude, f.Longitude), f.Quality, f.Satellites, f.HDOP,
			f.SpeedMS/0.514444, f.CourseDeg, f.Time.UTC().Format(time.RFC3339))
	default:
		src := string(r.GPSSource)
		if src == "" {
			src = "-"
		}
		fmt.Fprintf(tw, "gps\t%s\tFAIL: %s\n", src, r.GPSError)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if r.Simulated() {
		_, err := fmt.Fprintln(w, "\nNOTE: simulated readings are not from this tracker's hardware.")
		return err
	}
	return nil
}

func latLon(lat, lon float64) string {
	ns, ew := "N", "E"
	if lat < 0 {
		ns, lat = "S", -lat
	}
	if lon < 0 {
		ew, lon = "W", -lon
	}
	return strings.TrimSpace(fmt.Sprintf("%.5f %s %.5f %s", lat, ns, lon, ew))
}
