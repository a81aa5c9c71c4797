package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/reefer/tracker/firmware/telemetry"
	"github.com/reefer/tracker/internal/pnp"
)

// Twin property names. Desired (the model's writable properties):
// telemetryDelay, temperatureAlertThreshold, temperatureAlertHysteresis,
// temperatureAlertMinDuration; the agent reports each of them as a Plug and
// Play acknowledgement (pnp.Ack) once a desired section or patch told it
// about them, and the rest as plain values.
const (
	PropTelemetryDelay   = "telemetryDelay"              // seconds, 1..3600
	PropAlertThreshold   = "temperatureAlertThreshold"   // °C, -40..85
	PropAlertHysteresis  = "temperatureAlertHysteresis"  // °C, 0..10
	PropAlertMinDuration = "temperatureAlertMinDuration" // seconds, 0..3600
	PropAlertActive      = "alertActive"                 // bool: any alert in force
	PropAlerts           = "alerts"                      // {"temperature": bool, "envSensorLost": bool, "gpsLost": bool}
	PropLastDesiredError = "lastDesiredError"            // string, null when the last apply was clean
	PropDesiredVersion   = "desiredVersion"              // $version of the desired twin last applied
	PropFirmwareVersion  = "firmwareVersion"
	PropSensors          = "sensors" // {"env": "hardware"|"simulated", "gps": ...}
	PropQueueDepth       = "queueDepth"
	PropQueueBytes       = "queueBytes"
	PropDroppedMessages  = "droppedMessages" // queue drops plus this run's holding-area drops
	PropHeldSamples      = "heldSamples"     // samples held until the wall clock is set
	PropLastProvisioned  = "lastProvisioned" // RFC 3339 UTC, null before the first

	// Cloud-to-device commands (docs/commands.md).
	PropTelemetryInterval = "telemetryInterval"         // seconds in force: an override's, else telemetryDelay
	PropIntervalOverride  = "telemetryIntervalOverride" // {"seconds", "until"?, "messageId"}, null when none
	PropLastCommand       = "lastCommand"               // the last command's outcome (command.Outcome)
)

// desired is the desired properties the agent obeys (docs/protocol.md B.5), decoded
// from a patch or from the twin's desired section. Other properties are
// ignored.
type desired struct {
	TelemetryDelay setting // PropTelemetryDelay
	AlertThreshold setting // PropAlertThreshold
	Hysteresis     setting // PropAlertHysteresis
	MinDuration    setting // PropAlertMinDuration
}

// setting is one desired property: absent from a patch (unchanged), null
// (deleted: the configured value returns) or a value, kept as JSON decoded
// it and judged when applied.
type setting struct {
	Present bool
	Value   any // nil for null
}

// UnmarshalJSON records that the property is present, and its value.
func (s *setting) UnmarshalJSON(b []byte) error {
	s.Present = true
	return json.Unmarshal(b, &s.Value)
}

// ApplyDesired applies a desired-properties patch (docs/protocol.md B.5): the JSON
// object the hub sent, without its $version, which is version.
//
//   - Patches are applied in the order they come: ordering them is the hub
//     client's job (iothub.Config.OnDesired hands over strictly increasing
//     versions, each connection's full twin first, and never a stale one).
//   - telemetryDelay: seconds, a number or a numeric string ("1" in the
//     reference flow), 1..3600; temperatureAlertThreshold: °C, -40..85.
//     Both take effect at once. A null value (a deleted property) restores
//     the configured value. Unknown properties are ignored.
//   - A bad value is rejected and the previous value kept; the reported
//     lastDesiredError says what was rejected. The returned error wraps
//     ErrBadDesired for each one.
//
// Each property in the patch is answered through the Reporter with a Plug
// and Play acknowledgement (writable.apply says which code, value and
// version).
func (a *Agent) ApplyDesired(version int64, props json.RawMessage) error {
	d, err := decodeDesired(version, props)
	if err != nil {
		return err
	}
	return a.apply(version, d)
}

// ApplyTwin applies the desired section of a full twin read (the GET after
// every connect, docs/protocol.md B.5). It is authoritative whatever its
// $version (a device identity that DPS re-created after a deletion starts
// its versions again): a property the section lacks is treated as deleted
// (null), and the configured value returns. Every writable property is
// acknowledged against this version, so a change made while the tracker
// was offline is answered (docs/protocol.md B.5). Call it from the
// goroutine that delivers desired updates, so that no patch overtakes it.
func (a *Agent) ApplyTwin(version int64, props json.RawMessage) error {
	d, err := decodeDesired(version, props)
	if err != nil {
		return err
	}
	d.TelemetryDelay.Present, d.AlertThreshold.Present = true, true
	d.Hysteresis.Present, d.MinDuration.Present = true, true
	return a.apply(version, d)
}

// decodeDesired decodes props; one that is not a JSON object is rejected
// whole, and nothing changes.
func decodeDesired(version int64, props json.RawMessage) (desired, error) {
	// Twin property names are case-sensitive (docs/protocol.md F); json.Unmarshal into
	// the struct would match "TelemetryDelay" too, a different property
	// (found by FuzzApplyDesired). Pick the exact names from the object.
	var members map[string]json.RawMessage
	if err := json.Unmarshal(props, &members); err != nil {
		return desired{}, fmt.Errorf("%w: version %d: %w", ErrBadDesired, version, err)
	}
	var d desired
	for name, s := range map[string]*setting{PropTelemetryDelay: &d.TelemetryDelay, PropAlertThreshold: &d.AlertThreshold,
		PropAlertHysteresis: &d.Hysteresis, PropAlertMinDuration: &d.MinDuration} {
		if raw, ok := members[name]; ok {
			if err := s.UnmarshalJSON(raw); err != nil {
				return desired{}, fmt.Errorf("%w: version %d: %s: %w", ErrBadDesired, version, name, err)
			}
		}
	}
	return d, nil
}

func (a *Agent) apply(version int64, d desired) error {
	a.mu.Lock()
	var errs []error
	oldInterval := a.st.interval
	for _, w := range a.writablesLocked(d) {
		if !w.s.Present {
			continue
		}
		ack, err := w.apply(version)
		if err != nil {
			errs = append(errs, err)
		}
		if a.st.acks == nil {
			a.st.acks = map[string]pnp.Ack{}
		}
		a.st.acks[w.name] = ack
	}
	a.st.desiredVersion = version
	err := errors.Join(errs...)
	a.st.desiredErr = ""
	if err != nil {
		a.st.desiredErr = fmt.Sprintf("version %d: %s", version, strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	interval, threshold := a.st.interval, a.st.threshold
	a.mu.Unlock()

	if interval != oldInterval {
		signal(a.intervalChanged)
	}
	signal(a.wakeReporter)
	a.log.Info("desired properties applied", "version", version,
		"telemetryDelay", interval.Seconds(), "temperatureAlertThreshold", threshold)
	if err != nil {
		a.log.Warn("desired properties rejected", "version", version, "err", err)
	}
	return err
}

// writable is one writable property (docs/model.md): its desired setting,
// the configured value a missing desired value leaves in force, the bounds
// check (which returns the value as applied) and where the value lives.
type writable struct {
	name  string
	s     setting
	def   float64
	check func(float64) (float64, error)
	get   func() float64
	set   func(float64)
}

// writablesLocked lists the writable properties with d's settings. Caller
// holds mu (get and set touch the state).
func (a *Agent) writablesLocked(d desired) []writable {
	return []writable{
		{PropTelemetryDelay, d.TelemetryDelay, a.cfg.TelemetryDelay.Seconds(), checkDelay,
			func() float64 { return a.st.interval.Seconds() }, func(f float64) { a.st.interval = seconds(f) }},
		{PropAlertThreshold, d.AlertThreshold, *a.cfg.AlertThreshold, checkThreshold,
			func() float64 { return a.st.threshold }, func(f float64) { a.st.threshold = f }},
		{PropAlertHysteresis, d.Hysteresis, *a.cfg.AlertHysteresis, checkHysteresis,
			func() float64 { return a.st.alerts.hysteresis }, func(f float64) { a.st.alerts.hysteresis = f }},
		{PropAlertMinDuration, d.MinDuration, a.cfg.AlertMinDuration.Seconds(), checkMinDuration,
			func() float64 { return a.st.alerts.minDuration.Seconds() }, func(f float64) { a.st.alerts.minDuration = seconds(f) }},
	}
}

// apply judges the desired value, applies it when good, and returns the
// Plug and Play acknowledgement to report (docs/protocol.md B.5 "Writable
// properties under the Plug and Play conventions"):
//
//   - no desired value (null, or absent from the twin): the configured
//     value, 203 with av 0, as a device that sets a value itself answers;
//   - a good value: 200 with the value as applied and av the desired
//     $version; when that is not the desired value as written (a numeric
//     string, a duration rounded to the millisecond) ad says so;
//   - a bad one (not a number, out of bounds): 400 with the value still
//     in use, av the desired $version, ad the reason; the error wraps
//     ErrBadDesired.
func (w writable) apply(version int64) (pnp.Ack, error) {
	if w.s.Value == nil {
		w.set(w.def)
		return pnp.Ack{Value: w.def, Code: pnp.SetByDevice, Version: 0,
			Description: "no desired value: the configured value is in use"}, nil
	}
	f, err := number(w.s.Value)
	if err != nil {
		err = fmt.Errorf("%w: %s %w", ErrBadDesired, w.name, err)
	}
	applied := f
	if err == nil {
		applied, err = w.check(f)
	}
	if err != nil {
		return pnp.Ack{Value: w.get(), Code: pnp.Rejected, Version: version,
			Description: err.Error() + "; the value in use is kept"}, err
	}
	w.set(applied)
	ad := "applied"
	if s, ok := w.s.Value.(string); ok {
		ad += fmt.Sprintf("; the string %q read as the number %v", s, f)
	}
	if applied != f {
		ad += fmt.Sprintf("; %v rounded to the millisecond: %v", f, applied)
	}
	return pnp.Ack{Value: applied, Code: pnp.Accepted, Version: version, Description: ad}, nil
}

// seconds converts a checked number of seconds to a duration, to the
// millisecond.
func seconds(f float64) time.Duration {
	return time.Duration(math.Round(f*1000)) * time.Millisecond
}

// toMillisecond rounds seconds to the millisecond: plenty for an interval,
// and it keeps the reported value tidy.
func toMillisecond(f float64) float64 {
	return math.Round(f*1000) / 1000
}

// The bounds checks of the writable properties (firmware/telemetry's
// bounds, shared with the config); each returns the value as applied.

// checkDelay bounds telemetryDelay, in seconds.
func checkDelay(f float64) (float64, error) {
	return toMillisecond(f), within(PropTelemetryDelay, f, telemetry.MinDelay.Seconds(), telemetry.MaxDelay.Seconds(), "s")
}

// checkThreshold bounds temperatureAlertThreshold: the BME280's range.
func checkThreshold(f float64) (float64, error) {
	return f, within(PropAlertThreshold, f, telemetry.MinAlertThreshold, telemetry.MaxAlertThreshold, "°C")
}

// checkHysteresis bounds temperatureAlertHysteresis.
func checkHysteresis(f float64) (float64, error) {
	return f, within(PropAlertHysteresis, f, telemetry.MinAlertHysteresis, telemetry.MaxAlertHysteresis, "°C")
}

// checkMinDuration bounds temperatureAlertMinDuration, in seconds.
func checkMinDuration(f float64) (float64, error) {
	return toMillisecond(f), within(PropAlertMinDuration, f, telemetry.MinAlertMinDuration.Seconds(), telemetry.MaxAlertMinDuration.Seconds(), "s")
}

// within refuses f outside lo..hi, naming the property and the unit.
func within(name string, f, lo, hi float64, unit string) error {
	if !(f >= lo && f <= hi) {
		return fmt.Errorf("%w: %s %v outside %v..%v %s", ErrBadDesired, name, f, lo, hi, unit)
	}
	return nil
}

// number accepts a JSON number, and a numeric string: operators type
// '{"telemetryDelay":"1"}' too.
func number(v any) (float64, error) {
	var f float64
	switch x := v.(type) {
	case float64:
		f = x
	case string:
		var err error
		f, err = strconv.ParseFloat(strings.TrimSpace(x), 64)
		if err != nil {
			return 0, fmt.Errorf("%q is not a number", x)
		}
	default:
		b, _ := json.Marshal(v)
		return 0, fmt.Errorf("%s is %T, not a number", b, v)
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%v is not a finite number", v)
	}
	return f, nil
}

// reported is the full reported-properties document. It is small (well
// under the 32 KB limit, docs/protocol.md F), so every report sends all of it and a
// failed report needs no merging: the next one carries everything.
func (a *Agent) reported() map[string]any {
	depth, bytes := a.cfg.Queue.Len()
	dropped := a.cfg.Queue.Dropped()
	src := a.sources()
	// null deletes a reason once the sensor is back (docs/protocol.md B.5).
	sensors := map[string]any{"env": string(src.Env), "gps": string(src.GPS), "envError": nil, "gpsError": nil}
	if src.EnvError != "" {
		sensors["envError"] = src.EnvError
	}
	if src.GPSError != "" {
		sensors["gpsError"] = src.GPSError
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var desiredErr, provisioned, override, lastCmd any // JSON null deletes the member (docs/protocol.md B.5)
	if a.st.override != nil {
		override = *a.st.override
	}
	if a.st.lastCmd != nil {
		lastCmd = *a.st.lastCmd
	}
	if a.st.desiredErr != "" {
		desiredErr = a.st.desiredErr
	}
	if !a.st.provisioned.IsZero() {
		provisioned = a.st.provisioned.UTC().Format(time.RFC3339)
	}
	doc := map[string]any{
		PropFirmwareVersion:  a.cfg.FirmwareVersion,
		PropDesiredVersion:   a.st.desiredVersion,
		PropLastDesiredError: desiredErr,
		PropSensors:          sensors,
		PropQueueDepth:       depth,
		PropQueueBytes:       bytes,
		PropDroppedMessages:  dropped + a.st.heldDropped,
		PropHeldSamples:      len(a.st.held),
		PropLastProvisioned:  provisioned,

		PropTelemetryInterval: a.effectiveLocked().Seconds(),
		PropAlertActive:       a.st.alerts.any(),
		PropAlerts:            a.st.alerts.state(),
		PropIntervalOverride:  override,
		PropLastCommand:       lastCmd,
	}
	// Writable properties are answered only once the desired section (or
	// a patch) was read: until then the twin keeps the last run's answer,
	// which a reported patch without the member leaves alone.
	for name, ack := range a.st.acks {
		doc[name] = ack
	}
	return doc
}

// reporter sends the reported document while connected: on connect, after
// a desired change or provisioning, and every ReportInterval. A failed
// report is retried with back-off.
func (a *Agent) reporter(ctx context.Context) {
	tick := a.clock.NewTicker(a.cfg.ReportInterval)
	defer tick.Stop()
	dirty := true
	failures := 0
	var retry <-chan time.Time
	for {
		if dirty && retry == nil {
			// Consume a pending link signal before reading the state it
			// stands for, so a stale one cannot cut the retry wait short.
			select {
			case <-a.connReporter:
			default:
			}
		}
		if dirty && retry == nil && a.connected() {
			err := a.cfg.Reporter.UpdateReported(ctx, a.reported())
			switch {
			case err == nil:
				dirty, failures = false, 0
			case ctx.Err() != nil:
				return
			default:
				failures++
				a.log.Warn("report properties failed", "err", err, "consecutive", failures)
				retry = a.clock.After(a.backoffDelay(failures))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-a.wakeReporter:
			dirty = true
		case <-a.connReporter:
			// After a reconnect the hub may have missed reports: send all.
			dirty, retry = true, nil
		case <-tick.C():
			dirty = true
		case <-retry:
			retry = nil
		}
	}
}
