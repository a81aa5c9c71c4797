package iothub

import (
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/reefer/tracker/provisioning/internal/restopic"
)

// APIVersion is the IoT Hub api-version put in the MQTT user name (docs/protocol.md B.1).
const APIVersion = "2021-04-12"

// Limits (docs/protocol.md F, B.2).
const (
	MaxMessageSize    = 256 * 1024 // D2C body + properties
	MaxMethodPayload  = 128 * 1024 // direct method request or response
	MaxReportedSize   = 32 * 1024  // properties.reported section
	MaxKeepAlive      = 1177 * time.Second
	maxSubscriptions  = 5
	maxTopicLen       = 65535 // MQTT UTF-8 string limit
	twinResPrefix     = "$iothub/twin/res/"
	twinResFilter     = "$iothub/twin/res/#"
	desiredPrefix     = "$iothub/twin/PATCH/properties/desired/"
	desiredFilter     = "$iothub/twin/PATCH/properties/desired/#"
	twinGetPrefix     = "$iothub/twin/GET/?$rid="
	reportedPrefix    = "$iothub/twin/PATCH/properties/reported/?$rid="
	methodPostPrefix  = "$iothub/methods/POST/"
	methodPostFilter  = "$iothub/methods/POST/#"
	methodResTemplate = "$iothub/methods/res/%d/?$rid=%s"
)

// Username builds the IoT Hub MQTT user name (docs/protocol.md B.1). hub keeps its
// ":port" when it has one; the hub matches the name against its host name.
func Username(hub, deviceID, clientType, modelID string) string {
	u := hub + "/" + deviceID + "/?api-version=" + APIVersion
	if clientType != "" {
		u += "&DeviceClientType=" + restopic.Escape(clientType)
	}
	if modelID != "" {
		u += "&model-id=" + restopic.Escape(modelID)
	}
	return u
}

// subscription is one topic filter the client subscribes to on every connect.
type subscription struct {
	filter string
	qos    byte
}

// subscriptions lists every filter. docs/protocol.md B.2/F: at most 5 per device.
// Twin and method traffic is QoS 0 like the SDKs; C2D is QoS 1 so the
// PUBACK completes the message (docs/protocol.md B.4).
func subscriptions(deviceID string) []subscription {
	return []subscription{
		{twinResFilter, 0},
		{desiredFilter, 0},
		{methodPostFilter, 0},
		{c2dPrefix(deviceID) + "#", 1},
	}
}

func telemetryPrefix(deviceID string) string { return "devices/" + deviceID + "/messages/events/" }
func c2dPrefix(deviceID string) string       { return "devices/" + deviceID + "/messages/devicebound/" }

// Message is a device-to-cloud or cloud-to-device message.
type Message struct {
	Body []byte

	// System properties (docs/protocol.md B.3). Empty means "not set".
	MessageID       string    // $.mid, at most 128 ASCII characters
	CorrelationID   string    // $.cid
	UserID          string    // $.uid
	ContentType     string    // $.ct, e.g. "application/json"
	ContentEncoding string    // $.ce, e.g. "utf-8"
	CreationTime    time.Time // $.ctime, sent in UTC
	To              string    // $.to (set by the hub on C2D)
	ExpiryTime      string    // $.exp (C2D; kept as sent)

	// Properties are application properties. On C2D, system properties this
	// type has no field for appear here under their "$.x" name.
	Properties map[string]string
}

// systemProps returns the set system properties in a fixed order.
func (m *Message) systemProps() [][2]string {
	var out [][2]string
	add := func(k, v string) {
		if v != "" {
			out = append(out, [2]string{k, v})
		}
	}
	add("$.mid", m.MessageID)
	add("$.cid", m.CorrelationID)
	add("$.uid", m.UserID)
	add("$.ct", m.ContentType)
	add("$.ce", m.ContentEncoding)
	if !m.CreationTime.IsZero() {
		add("$.ctime", m.CreationTime.UTC().Format("2006-01-02T15:04:05.000Z"))
	}
	add("$.to", m.To)
	add("$.exp", m.ExpiryTime)
	return out
}

// ErrInvalidProperty is returned for property names the bag cannot carry.
var ErrInvalidProperty = errors.New("invalid property")

// EncodePropertyBag renders the property bag of a message: system properties
// first (as "$.x", the documented form), then application properties sorted
// by name. Names and values are URL-encoded with %20 for spaces (docs/protocol.md B.3).
func EncodePropertyBag(m *Message) (string, error) {
	var b strings.Builder
	sep := func() {
		if b.Len() > 0 {
			b.WriteByte('&')
		}
	}
	for _, kv := range m.systemProps() {
		sep()
		b.WriteString(kv[0])
		b.WriteByte('=')
		b.WriteString(restopic.Escape(kv[1]))
	}
	keys := make([]string, 0, len(m.Properties))
	for k := range m.Properties {
		if k == "" {
			return "", fmt.Errorf("%w: empty name", ErrInvalidProperty)
		}
		// Any key starting with "$." is a system property to the hub.
		if strings.HasPrefix(k, "$.") {
			return "", fmt.Errorf("%w: %q is reserved for system properties", ErrInvalidProperty, k)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		sep()
		b.WriteString(restopic.Escape(k))
		b.WriteByte('=')
		b.WriteString(restopic.Escape(m.Properties[k]))
	}
	return b.String(), nil
}

// DecodePropertyBag parses a property bag into m's property fields. Spec
// B.4: a bare key is a null value and "key=" an empty string; both become "".
// Keys may use the "$.x" or "%24.x" form.
func DecodePropertyBag(bag string, m *Message) error {
	if bag == "" {
		return nil
	}
	for _, part := range strings.Split(bag, "&") {
		if part == "" {
			continue
		}
		rk, rv, _ := strings.Cut(part, "=")
		k, err := url.QueryUnescape(rk)
		if err != nil {
			return fmt.Errorf("property name %q: %w", rk, err)
		}
		v, err := url.QueryUnescape(rv)
		if err != nil {
			return fmt.Errorf("property %q value: %w", k, err)
		}
		switch k {
		case "$.mid":
			m.MessageID = v
		case "$.cid":
			m.CorrelationID = v
		case "$.uid":
			m.UserID = v
		case "$.ct":
			m.ContentType = v
		case "$.ce":
			m.ContentEncoding = v
		case "$.to":
			m.To = v
		case "$.exp":
			m.ExpiryTime = v
		case "$.ctime":
			if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
				m.CreationTime = t
				continue
			}
			fallthrough // keep an unparsable time visible
		default:
			if m.Properties == nil {
				m.Properties = make(map[string]string)
			}
			m.Properties[k] = v
		}
	}
	return nil
}

// ErrTooLarge is returned before sending anything that exceeds an IoT Hub limit.
var ErrTooLarge = errors.New("too large")

// messageSize is what the hub counts against the 256 KB limit (docs/protocol.md F): the
// body, system property values, and application property names and values.
func messageSize(m *Message) int {
	n := len(m.Body)
	for _, kv := range m.systemProps() {
		n += len(kv[1])
	}
	for k, v := range m.Properties {
		n += len(k) + len(v)
	}
	return n
}

// telemetryTopic builds devices/{id}/messages/events/{bag} and checks sizes.
func telemetryTopic(deviceID string, m *Message) (string, error) {
	if n := messageSize(m); n > MaxMessageSize {
		return "", fmt.Errorf("%w: message is %d bytes, limit %d (docs/protocol.md F)", ErrTooLarge, n, MaxMessageSize)
	}
	if len(m.MessageID) > 128 {
		return "", fmt.Errorf("%w: message id longer than 128 characters", ErrInvalidProperty)
	}
	bag, err := EncodePropertyBag(m)
	if err != nil {
		return "", err
	}
	topic := telemetryPrefix(deviceID) + bag
	if len(topic) > maxTopicLen {
		return "", fmt.Errorf("%w: topic with properties is %d bytes, MQTT allows %d", ErrTooLarge, len(topic), maxTopicLen)
	}
	return topic, nil
}

// parseC2D decodes a message received on devices/{id}/messages/devicebound/{bag}.
func parseC2D(deviceID, topic string, body []byte) (Message, error) {
	m := Message{Body: body}
	bag, ok := strings.CutPrefix(topic, c2dPrefix(deviceID))
	if !ok {
		return m, fmt.Errorf("topic %q is not a C2D topic for %q", topic, deviceID)
	}
	if err := DecodePropertyBag(bag, &m); err != nil {
		return m, fmt.Errorf("topic %q: %w", topic, err)
	}
	return m, nil
}

// twinResponse is a message on $iothub/twin/res/{status}/?$rid={rid}[&$version={v}].
type twinResponse struct {
	Status  int
	RID     string
	Version int64 // new reported version on 204; 0 if absent
	Body    []byte
}

// parseTwinResponseTopic splits a twin response topic (docs/protocol.md B.5: the status
// segment must parse as an integer).
func parseTwinResponseTopic(topic string) (twinResponse, error) {
	status, vals, err := restopic.Parse(topic, twinResPrefix, "twin response")
	if err != nil {
		return twinResponse{}, err
	}
	r := twinResponse{Status: status, RID: vals.Get("$rid")}
	if r.RID == "" {
		return r, fmt.Errorf("topic %q: no $rid", topic)
	}
	if v := vals.Get("$version"); v != "" {
		if r.Version, err = strconv.ParseInt(v, 10, 64); err != nil {
			return r, fmt.Errorf("topic %q: bad $version %q", topic, v)
		}
	}
	return r, nil
}

// parseDesiredTopic returns the $version of a desired-properties notification
// ($iothub/twin/PATCH/properties/desired/?$version={v}); ok is false when the
// topic does not carry one.
func parseDesiredTopic(topic string) (version int64, ok bool, err error) {
	rest, found := strings.CutPrefix(topic, desiredPrefix)
	if !found {
		return 0, false, fmt.Errorf("topic %q is not a desired patch", topic)
	}
	vals, err := url.ParseQuery(strings.TrimPrefix(rest, "?"))
	if err != nil {
		return 0, false, fmt.Errorf("topic %q: %v", topic, err)
	}
	v := vals.Get("$version")
	if v == "" {
		return 0, false, nil
	}
	version, err = strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("topic %q: bad $version %q", topic, v)
	}
	return version, true, nil
}

// parseMethodTopic splits $iothub/methods/POST/{name}/?$rid={rid}.
func parseMethodTopic(topic string) (name, rid string, err error) {
	rest, ok := strings.CutPrefix(topic, methodPostPrefix)
	if !ok {
		return "", "", fmt.Errorf("topic %q is not a method request", topic)
	}
	name, query, ok := strings.Cut(rest, "/")
	if !ok || name == "" {
		return "", "", fmt.Errorf("topic %q: no method name", topic)
	}
	vals, err := url.ParseQuery(strings.TrimPrefix(query, "?"))
	if err != nil {
		return "", "", fmt.Errorf("topic %q: %v", topic, err)
	}
	rid = vals.Get("$rid")
	if rid == "" {
		return "", "", fmt.Errorf("topic %q: no $rid", topic)
	}
	return name, rid, nil
}

// methodResponseTopic is where a method reply goes (docs/protocol.md B.6). The rid is
// echoed encoded, as it is a property value.
func methodResponseTopic(status int, rid string) string {
	return fmt.Sprintf(methodResTemplate, status, restopic.Escape(rid))
}

// validMethodName applies docs/protocol.md F: printable US-ASCII without
// $ ( ) < > @ , ; : \ " / [ ] ? = { }, space and tab.
func validMethodName(name string) error {
	if name == "" {
		return errors.New("method name is empty")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`$()<>@,;:\"/[]?={}`, c) >= 0 {
			return fmt.Errorf("method name %q: character %q not allowed", name, c)
		}
	}
	return nil
}

// validDeviceID is the rule for device ids the client puts in its topics;
// the assignment cache and the DPS client apply the same one.
var validDeviceID = restopic.CheckDeviceID
