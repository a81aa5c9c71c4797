package config

import (
	"errors"
	"flag"
	"fmt"
	"reflect"
	"strconv"

	"github.com/reefer/tracker/drivers"
)

// Overrides are the settings a technician may change without editing the
// file. main fills them from flags (RegisterFlags does it); the zero value
// of a field means "not set", which is never a valid value for these keys.
type Overrides struct {
	IDScope          string       // idScope, --id-scope
	DPSEndpoint      string       // dpsEndpoint, --dps-endpoint
	CertFile         string       // certFile, --cert
	KeyFile          string       // keyFile, --key
	CAFile           string       // caFile, --ca
	StateDir         string       // stateDir, --state-dir
	EnvMode          drivers.Mode // sensors.env.mode, --env-mode
	EnvBus           string       // sensors.env.bus, --env-bus
	EnvAddress       int          // sensors.env.address, --env-address
	GPSMode          drivers.Mode // sensors.gps.mode, --gps-mode
	GPSPort          string       // sensors.gps.port, --gps-port
	GPSBaud          int          // sensors.gps.baud, --gps-baud
	TelemetryDelay   int          // telemetryDelay in seconds, --telemetry-delay
	QueueMaxMessages int          // queue.maxMessages, --queue-max-messages
	QueueMaxBytes    int64        // queue.maxBytes, --queue-max-bytes
	LogLevel         string       // logLevel, --log-level
}

// override names one overridable key, its variable and flag, and where its
// value lives in Overrides. kind says how to parse it from a string. The
// table is the single list of overridable keys; the package doc mirrors it.
type override struct {
	key, env, flag, usage string
	kind                  byte // 's' string, 'i' int, 'a' int in any base, 'l' int64
	field                 func(*Overrides) any
}

var overrides = []override{
	{"idScope", "TRACKER_ID_SCOPE", "id-scope", "DPS ID scope", 's', func(o *Overrides) any { return &o.IDScope }},
	{"dpsEndpoint", "TRACKER_DPS_ENDPOINT", "dps-endpoint", "DPS `host:port`", 's', func(o *Overrides) any { return &o.DPSEndpoint }},
	{"certFile", "TRACKER_CERT_FILE", "cert", "device certificate chain (PEM) `file`", 's', func(o *Overrides) any { return &o.CertFile }},
	{"keyFile", "TRACKER_KEY_FILE", "key", "device private key (PEM) `file`", 's', func(o *Overrides) any { return &o.KeyFile }},
	{"caFile", "TRACKER_CA_FILE", "ca", "trust roots (PEM) `file`, replacing Azure's", 's', func(o *Overrides) any { return &o.CAFile }},
	{"stateDir", "TRACKER_STATE_DIR", "state-dir", "state `directory`", 's', func(o *Overrides) any { return &o.StateDir }},
	{"sensors.env.mode", "TRACKER_ENV_MODE", "env-mode", "BME280 `mode`: auto, hardware or simulated", 's', func(o *Overrides) any { return (*string)(&o.EnvMode) }},
	{"sensors.env.bus", "TRACKER_ENV_BUS", "env-bus", "BME280 I2C `bus`", 's', func(o *Overrides) any { return &o.EnvBus }},
	{"sensors.env.address", "TRACKER_ENV_ADDRESS", "env-address", "BME280 I2C `address` (0x76, 0x77, or 0 to probe both)", 'a', func(o *Overrides) any { return &o.EnvAddress }},
	{"sensors.gps.mode", "TRACKER_GPS_MODE", "gps-mode", "GPS `mode`: auto, hardware or simulated", 's', func(o *Overrides) any { return (*string)(&o.GPSMode) }},
	{"sensors.gps.port", "TRACKER_GPS_PORT", "gps-port", "GPS serial `device`", 's', func(o *Overrides) any { return &o.GPSPort }},
	{"sensors.gps.baud", "TRACKER_GPS_BAUD", "gps-baud", "GPS `baud` rate", 'i', func(o *Overrides) any { return &o.GPSBaud }},
	{"telemetryDelay", "TRACKER_TELEMETRY_DELAY", "telemetry-delay", "`seconds` between readings", 'i', func(o *Overrides) any { return &o.TelemetryDelay }},
	{"queue.maxMessages", "TRACKER_QUEUE_MAX_MESSAGES", "queue-max-messages", "most `messages` queued offline", 'i', func(o *Overrides) any { return &o.QueueMaxMessages }},
	{"queue.maxBytes", "TRACKER_QUEUE_MAX_BYTES", "queue-max-bytes", "most `bytes` queued offline", 'l', func(o *Overrides) any { return &o.QueueMaxBytes }},
	{"logLevel", "TRACKER_LOG_LEVEL", "log-level", "log `level`: debug, info, warn or error", 's', func(o *Overrides) any { return &o.LogLevel }},
}

// parse parses s into p, a *string, *int or *int64.
func parse(p any, s string, kind byte) error {
	switch p := p.(type) {
	case *string:
		*p = s
	case *int:
		base := 10
		if kind == 'a' {
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
	}
	return nil
}

// RegisterFlags defines the override flags on fs, writing into o. Numeric
// flags refuse 0, which Overrides could not tell from "not set".
func (o *Overrides) RegisterFlags(fs *flag.FlagSet) {
	for _, ov := range overrides {
		usage := ov.usage + " (overrides " + ov.key + ")"
		switch p := ov.field(o).(type) {
		case *string:
			fs.StringVar(p, ov.flag, "", usage)
		default:
			fs.Func(ov.flag, usage, func(s string) error {
				if err := parse(p, s, ov.kind); err != nil {
					return err
				}
				if s := fmt.Sprint(reflect.ValueOf(p).Elem()); s == "0" {
					return errors.New("must not be 0")
				}
				return nil
			})
		}
	}
}

// ApplyEnv applies the TRACKER_* variables read through getenv; empty ones
// are ignored. Parse errors name the variable and the key. Values are
// checked by Validate.
func (c *Config) ApplyEnv(getenv func(string) string) error {
	var errs []error
	for _, ov := range overrides {
		s := getenv(ov.env)
		if s == "" {
			continue
		}
		src := "env " + ov.env
		if err := parse(c.target(ov.key), s, ov.kind); err != nil {
			errs = append(errs, &Error{Path: c.path, Key: ov.key, Source: src, Msg: err.Error()})
			continue
		}
		c.setSource(ov.key, src)
	}
	return errors.Join(errs...)
}

// Apply applies the set (non-zero) fields of o, as flags.
func (c *Config) Apply(o Overrides) {
	for _, ov := range overrides {
		v := reflect.ValueOf(ov.field(&o)).Elem()
		if v.IsZero() {
			continue
		}
		reflect.ValueOf(c.target(ov.key)).Elem().Set(v)
		c.setSource(ov.key, "flag --"+ov.flag)
	}
}

func (c *Config) setSource(key, src string) {
	if c.source == nil {
		c.source = map[string]string{}
	}
	c.source[key] = src
}

// target is the field of c that an override key sets.
func (c *Config) target(key string) any {
	switch key {
	case "idScope":
		return &c.IDScope
	case "dpsEndpoint":
		return &c.DPSEndpoint
	case "certFile":
		return &c.CertFile
	case "keyFile":
		return &c.KeyFile
	case "caFile":
		return &c.CAFile
	case "stateDir":
		return &c.StateDir
	case "sensors.env.mode":
		return (*string)(&c.Sensors.Env.Mode)
	case "sensors.env.bus":
		return &c.Sensors.Env.Bus
	case "sensors.env.address":
		return &c.Sensors.Env.Address
	case "sensors.gps.mode":
		return (*string)(&c.Sensors.GPS.Mode)
	case "sensors.gps.port":
		return &c.Sensors.GPS.Port
	case "sensors.gps.baud":
		return &c.Sensors.GPS.Baud
	case "telemetryDelay":
		return &c.TelemetryDelay
	case "queue.maxMessages":
		return &c.Queue.MaxMessages
	case "queue.maxBytes":
		return &c.Queue.MaxBytes
	case "logLevel":
		return &c.LogLevel
	}
	panic("config: no target for override " + key)
}
