package azrest

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// ErrBadConnectionString means a connection string could not be used.
var ErrBadConnectionString = errors.New("bad connection string")

// ConnectionString is a service connection string,
// "HostName=<host>;SharedAccessKeyName=<policy>;SharedAccessKey=<base64>",
// as `az iot hub connection-string show` and `az iot dps connection-string
// show` print it (docs/protocol.md D, E).
type ConnectionString struct {
	HostName string
	KeyName  string
	Key      string
}

func (c ConnectionString) String() string {
	return "HostName=" + c.HostName + ";SharedAccessKeyName=" + c.KeyName + ";SharedAccessKey=" + c.Key
}

// ParseConnectionString parses a service connection string. Keys are
// case-insensitive and may come in any order; unknown keys (e.g.
// DeviceId, which marks a device connection string) are refused so a
// wrong string is caught before anything is sent.
func ParseConnectionString(s string) (ConnectionString, error) {
	var c ConnectionString
	fail := func(format string, args ...any) (ConnectionString, error) {
		return ConnectionString{}, fmt.Errorf("%w: %s (want HostName=<host>;SharedAccessKeyName=<policy>;SharedAccessKey=<key>)", ErrBadConnectionString, fmt.Sprintf(format, args...))
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return fail("empty")
	}
	for _, part := range strings.Split(s, ";") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return fail("%q is not key=value", part)
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "hostname":
			c.HostName = strings.TrimSpace(v)
		case "sharedaccesskeyname":
			c.KeyName = strings.TrimSpace(v)
		case "sharedaccesskey":
			c.Key = strings.TrimSpace(v)
		case "deviceid", "moduleid":
			return fail("this is a device connection string; the operator tool needs a service policy's (e.g. iothubowner)")
		default:
			return fail("unknown key %q", strings.TrimSpace(k))
		}
	}
	switch {
	case c.HostName == "":
		return fail("HostName is missing")
	case strings.Contains(c.HostName, "/"):
		return fail("HostName %q must be a host name, not a URL", c.HostName)
	case c.KeyName == "":
		return fail("SharedAccessKeyName is missing")
	case c.Key == "":
		return fail("SharedAccessKey is missing")
	}
	if b, err := base64.StdEncoding.DecodeString(c.Key); err != nil || len(b) == 0 {
		return fail("SharedAccessKey is not base64")
	}
	return c, nil
}
