package config

import (
	"errors"
	"flag"
	"fmt"
	"strconv"

	"github.com/reefer/tracker/drivers"
)

// Overrides are settings given on the command line, by config key
// ("telemetryDelay": "60"); RegisterFlags collects them. Values are parsed
// like the environment's, and an empty value means "not set".
type Overrides map[string]string

// override is one overridable key: its environment variable, its flag and
// the field it sets. This table is the one list of overridable keys; the
// package doc's table is checked against it (TestOverridesDoc).
type override struct {
	key, env, flag, usage string
	field                 func(*Config) any // *string, *drivers.Mode, *int or *int64
	anyBase               bool              // an int also in hex (0x76)
}

var overrides = []override{
	{"idScope", "TRACKER_ID_SCOPE", "id-scope", "DPS ID `scope`", func(c *Config) any { return &c.IDScope }, false},
	{"dpsEndpoint", "TRACKER_DPS_ENDPOINT", "dps-endpoint", "DPS `host:port`", func(c *Config) any { return &c.DPSEndpoint }, false},
	{"certFile", "TRACKER_CERT_FILE", "cert", "device certificate chain (PEM) `file`", func(c *Config) any { return &c.CertFile }, false},
	{"keyFile", "TRACKER_KEY_FILE", "key", "device private key (PEM) `file`", func(c *Config) any { return &c.KeyFile }, false},
	{"caFile", "TRACKER_CA_FILE", "ca", "trust roots (PEM) `file`, replacing Azure's", func(c *Config) any { return &c.CAFile }, false},
	{"stateDir", "TRACKER_STATE_DIR", "state-dir", "state `directory`", func(c *Config) any { return &c.StateDir }, false},
	{"sensors.env.mode", "TRACKER_ENV_MODE", "env-mode", "BME280 `mode`: auto, hardware or simulated", func(c *Config) any { return &c.Sensors.Env.Mode }, false},
	{"sensors.env.bus", "TRACKER_ENV_BUS", "env-bus", "BME280 I2C `bus`", func(c *Config) any { return &c.Sensors.Env.Bus }, false},
	{"sensors.env.address", "TRACKER_ENV_ADDRESS", "env-address", "BME280 I2C `address` (0x76, 0x77, or 0 to probe both)", func(c *Config) any { return &c.Sensors.Env.Address }, true},
	{"sensors.gps.mode", "TRACKER_GPS_MODE", "gps-mode", "GPS `mode`: auto, hardware or simulated", func(c *Config) any { return &c.Sensors.GPS.Mode }, false},
	{"sensors.gps.port", "TRACKER_GPS_PORT", "gps-port", "GPS serial `device`", func(c *Config) any { return &c.Sensors.GPS.Port }, false},
	{"sensors.gps.baud", "TRACKER_GPS_BAUD", "gps-baud", "GPS `baud` rate", func(c *Config) any { return &c.Sensors.GPS.Baud }, false},
	{"telemetryDelay", "TRACKER_TELEMETRY_DELAY", "telemetry-delay", "`seconds` between readings", func(c *Config) any { return &c.TelemetryDelay }, false},
	{"queue.maxMessages", "TRACKER_QUEUE_MAX_MESSAGES", "queue-max-messages", "most `messages` queued offline", func(c *Config) any { return &c.Queue.MaxMessages }, false},
	{"queue.maxBytes", "TRACKER_QUEUE_MAX_BYTES", "queue-max-bytes", "most `bytes` queued offline", func(c *Config) any { return &c.Queue.MaxBytes }, false},
	{"logLevel", "TRACKER_LOG_LEVEL", "log-level", "log `level`: debug, info, warn or error", func(c *Config) any { return &c.LogLevel }, false},
}

// set parses s into ov's field of c. Values are checked by Validate.
func (ov override) set(c *Config, s string) error {
	switch p := ov.field(c).(type) {
	case *string:
		*p = s
	case *drivers.Mode:
		*p = drivers.Mode(s)
	case *int:
		base := 10
		if ov.anyBase {
			base = 0 // 0x76 as well as 118
		}
		n, err := strconv.ParseInt(s, base, strconv.IntSize)
		if err != nil {
			return fmt.Errorf("must be a whole number, got %q", s)
		}
		*p = int(n)
	case *int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("must be a whole number, got %q", s)
		}
		*p = n
	default:
		panic(fmt.Sprintf("config: override %s has a field of type %T", ov.key, p))
	}
	return nil
}

// RegisterFlags defines the override flags on fs, writing into o. A value
// that does not parse is a flag error; numeric flags refuse 0, which the
// file never means either.
func (o *Overrides) RegisterFlags(fs *flag.FlagSet) {
	if *o == nil {
		*o = Overrides{}
	}
	for _, ov := range overrides {
		fs.Func(ov.flag, ov.usage+" (overrides "+ov.key+")", func(s string) error {
			var scratch Config
			if err := ov.set(&scratch, s); err != nil {
				return err
			}
			switch p := ov.field(&scratch).(type) {
			case *int:
				if *p == 0 {
					return errors.New("must not be 0")
				}
			case *int64:
				if *p == 0 {
					return errors.New("must not be 0")
				}
			}
			(*o)[ov.key] = s
			return nil
		})
	}
}

// ApplyEnv applies the TRACKER_* variables read through getenv; empty ones
// are ignored. Parse errors name the variable and the key. Values are
// checked by Validate.
func (c *Config) ApplyEnv(getenv func(string) string) error {
	return c.apply(func(ov override) (string, string) { return getenv(ov.env), "env " + ov.env })
}

// Apply applies the set (non-empty) values of o, as flags. Parse errors
// name the flag and the key; values are checked by Validate.
func (c *Config) Apply(o Overrides) error {
	var errs []error
	for k := range o {
		if !overridable(k) {
			errs = append(errs, &Error{Path: c.path, Key: k, Msg: "cannot be overridden"})
		}
	}
	errs = append(errs, c.apply(func(ov override) (string, string) { return o[ov.key], "flag --" + ov.flag }))
	return errors.Join(errs...)
}

// apply sets each key that value gives a non-empty string for, recording
// where it came from.
func (c *Config) apply(value func(override) (s, source string)) error {
	var errs []error
	for _, ov := range overrides {
		s, src := value(ov)
		if s == "" {
			continue
		}
		if err := ov.set(c, s); err != nil {
			errs = append(errs, &Error{Path: c.path, Key: ov.key, Source: src, Msg: err.Error()})
			continue
		}
		c.setSource(ov.key, src)
	}
	return errors.Join(errs...)
}

func overridable(key string) bool {
	for _, ov := range overrides {
		if ov.key == key {
			return true
		}
	}
	return false
}

func (c *Config) setSource(key, src string) {
	if c.source == nil {
		c.source = map[string]string{}
	}
	c.source[key] = src
}
