// Package restopic reads and writes the query part of the topics DPS and
// IoT Hub share the form of: PREFIX{status}/?{query}, as in
// $dps/registrations/res/202/?$rid=1 (docs/protocol.md A.2) and
// $iothub/twin/res/204/?$rid=1&$version=2 (docs/protocol.md B.5), and the property bags
// and request ids the device puts into its own topics.
package restopic

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// Parse splits topic, which must start with prefix, into its status and
// query values. what names the kind of topic in the error for another
// prefix ("DPS response"). As in the C SDK, the status is the integer
// between the prefix and the next "/" and must look like an HTTP code.
func Parse(topic, prefix, what string) (status int, query url.Values, err error) {
	rest, ok := strings.CutPrefix(topic, prefix)
	if !ok {
		return 0, nil, fmt.Errorf("topic %q is not a %s", topic, what)
	}
	statusStr, q, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, nil, fmt.Errorf("topic %q: no status segment", topic)
	}
	status, err = strconv.Atoi(statusStr)
	if err != nil || status < 100 || status > 999 {
		return 0, nil, fmt.Errorf("topic %q: status %q is not an HTTP-like code", topic, statusStr)
	}
	query, err = url.ParseQuery(strings.TrimPrefix(q, "?"))
	if err != nil {
		return 0, nil, fmt.Errorf("topic %q: %v", topic, err)
	}
	return status, query, nil
}

// Escape URL-encodes a value for a topic's query or property bag. docs/protocol.md B.3:
// spaces are %20, never "+"; QueryEscape already turns a literal "+" into
// %2B, so the only "+" left in its output stand for spaces. "#", "/", "&",
// "=" and "$" come out percent-encoded too, so no value can add a level,
// a parameter or an MQTT wildcard to the topic.
func Escape(s string) string {
	return strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
}

// CheckDeviceID accepts a device id the client can use inside its topics
// (devices/{id}/messages/...): printable ASCII without "/", "+" or "#", at
// most 128 characters (docs/protocol.md E). IoT Hub itself allows "+" and "#" in ids,
// but they cannot appear raw in an MQTT topic name; our ids never need them.
func CheckDeviceID(id string) error {
	if id == "" {
		return errors.New("device id is empty")
	}
	if len(id) > 128 {
		return fmt.Errorf("device id %q longer than 128 characters", id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c <= ' ' || c >= 0x7f || c == '/' || c == '+' || c == '#' {
			return fmt.Errorf("device id %q: character %q not allowed", id, c)
		}
	}
	return nil
}
