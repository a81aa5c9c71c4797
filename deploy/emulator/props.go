package emulator

import (
	"fmt"
	"net/url"
	"sort"
	"strings"
)

// docs/protocol.md B.3: system property keys of the telemetry property bag, with the
// long names the hub records them under.
var systemProps = map[string]string{
	"mid":   "message-id",
	"cid":   "correlation-id",
	"uid":   "user-id",
	"ct":    "content-type",
	"ce":    "content-encoding",
	"ctime": "iothub-creation-time-utc",
	"exp":   "absolute-expiry-time",
	"to":    "to",
	"sub":   "dt-subject",
	"on":    "iothub-outputname",
	"ifid":  "iothub-interface-id",
}

// parsePropertyBag decodes a `k1=v1&k2=v2` bag (docs/protocol.md B.3). Keys starting
// with `$.` (or the escaped `%24.`) are system properties and are returned
// under their long names; everything else is an application property. A
// bare key is a property with an empty value. Values are query-unescaped;
// '+' stays a literal plus, since devices must encode spaces as %20.
func parsePropertyBag(bag string) (sys, app map[string]string, err error) {
	sys, app = map[string]string{}, map[string]string{}
	if bag == "" {
		return sys, app, nil
	}
	for _, kv := range strings.Split(bag, "&") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		key, err := url.PathUnescape(k)
		if err != nil {
			return nil, nil, fmt.Errorf("property name %q: %w", k, err)
		}
		val, err := url.PathUnescape(v)
		if err != nil {
			return nil, nil, fmt.Errorf("property %q value: %w", key, err)
		}
		if name, ok := strings.CutPrefix(key, "$."); ok {
			long, known := systemProps[name]
			if !known {
				long = "$." + name
			}
			sys[long] = val
			continue
		}
		if key == "" {
			return nil, nil, fmt.Errorf("empty property name")
		}
		app[key] = val
	}
	return sys, app, nil
}

// escapeBagValue percent-encodes a bag name or value; spaces become %20,
// never '+' (docs/protocol.md B.3).
func escapeBagValue(s string) string {
	return strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
}

// encodePropertyBag builds a C2D property bag (docs/protocol.md B.4): system properties
// first as $.x, then application properties sorted by name. An empty value
// is written as `key=`.
func encodePropertyBag(sys [][2]string, app map[string]string) string {
	var parts []string
	for _, kv := range sys {
		if kv[1] == "" {
			continue
		}
		parts = append(parts, "%24."+kv[0]+"="+escapeBagValue(kv[1]))
	}
	keys := make([]string, 0, len(app))
	for k := range app {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		parts = append(parts, escapeBagValue(k)+"="+escapeBagValue(app[k]))
	}
	return strings.Join(parts, "&")
}

// topicQuery splits "prefix/?a=b&c=d" into its parameters. Values are
// unescaped.
func topicQuery(topic string) (url.Values, bool) {
	i := strings.IndexByte(topic, '?')
	if i < 0 {
		return nil, false
	}
	q := url.Values{}
	for _, kv := range strings.Split(topic[i+1:], "&") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		uk, err1 := url.PathUnescape(k)
		uv, err2 := url.PathUnescape(v)
		if err1 != nil || err2 != nil {
			return nil, false
		}
		q.Add(uk, uv)
	}
	return q, true
}
