package iothub

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestUsername(t *testing.T) {
	t.Parallel()
	tests := []struct {
		hub, dev, ct, model, want string
	}{
		{"hub-x.azure-devices.net", "sensor-thl-001", "reefer-tracker/1.2 (linux; arm64)", "",
			"hub-x.azure-devices.net/sensor-thl-001/?api-version=2021-04-12&DeviceClientType=reefer-tracker%2F1.2%20%28linux%3B%20arm64%29"},
		{"127.0.0.1:40002", "dev", "", "", "127.0.0.1:40002/dev/?api-version=2021-04-12"},
		{"h", "d", "c", "dtmi:com:example:Thermostat;1", "h/d/?api-version=2021-04-12&DeviceClientType=c&model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1"},
	}
	for _, tt := range tests {
		if got := Username(tt.hub, tt.dev, tt.ct, tt.model); got != tt.want {
			t.Errorf("Username(%q, %q, %q, %q) = %q; want %q", tt.hub, tt.dev, tt.ct, tt.model, got, tt.want)
		}
	}
}

func TestSubscriptionsWithinLimit(t *testing.T) {
	t.Parallel()
	subs := subscriptions("sensor-thl-001")
	if len(subs) > maxSubscriptions {
		t.Fatalf("%d subscriptions; the hub allows %d (docs/protocol.md B.2)", len(subs), maxSubscriptions)
	}
	want := []subscription{
		{"$iothub/twin/res/#", 0},
		{"$iothub/twin/PATCH/properties/desired/#", 0},
		{"$iothub/methods/POST/#", 0},
		{"devices/sensor-thl-001/messages/devicebound/#", 1},
	}
	if !reflect.DeepEqual(subs, want) {
		t.Errorf("subscriptions = %v; want %v", subs, want)
	}
}

func TestEncodePropertyBag(t *testing.T) {
	t.Parallel()
	ctime := time.Date(2025, 6, 1, 12, 30, 45, 123456789, time.FixedZone("CEST", 2*3600))
	tests := []struct {
		name string
		m    Message
		want string
	}{
		{"none", Message{}, ""},
		{"system", Message{MessageID: "42", ContentType: "application/json", ContentEncoding: "utf-8", CreationTime: ctime},
			"$.mid=42&$.ct=application%2Fjson&$.ce=utf-8&$.ctime=2025-06-01T10%3A30%3A45.123Z"},
		{"correlation", Message{CorrelationID: "c 1"}, "$.cid=c%201"},
		{"app sorted", Message{Properties: map[string]string{"temperatureAlert": "false", "b": "1", "a": "2"}},
			"a=2&b=1&temperatureAlert=false"},
		{"spaces never plus", Message{Properties: map[string]string{"door state": "half open"}}, "door%20state=half%20open"},
		{"reserved chars", Message{Properties: map[string]string{"k&=/$#+": "v&=/$#+?%"}},
			"k%26%3D%2F%24%23%2B=v%26%3D%2F%24%23%2B%3F%25"},
		{"unicode", Message{Properties: map[string]string{"ort": "Käse °C"}}, "ort=K%C3%A4se%20%C2%B0C"},
		{"empty value", Message{Properties: map[string]string{"k": ""}}, "k="},
		{"system then app", Message{MessageID: "1", Properties: map[string]string{"x": "y"}}, "$.mid=1&x=y"},
	}
	for _, tt := range tests {
		got, err := EncodePropertyBag(&tt.m)
		if err != nil || got != tt.want {
			t.Errorf("EncodePropertyBag(%s) = %q, %v; want %q", tt.name, got, err, tt.want)
		}
		if strings.ContainsAny(got, "+# ") {
			t.Errorf("EncodePropertyBag(%s) = %q contains a raw '+', '#' or space", tt.name, got)
		}
	}
}

func TestEncodePropertyBagRejects(t *testing.T) {
	t.Parallel()
	for _, props := range []map[string]string{{"": "x"}, {"$.mid": "x"}} {
		if _, err := EncodePropertyBag(&Message{Properties: props}); !errors.Is(err, ErrInvalidProperty) {
			t.Errorf("EncodePropertyBag(%v) = %v; want ErrInvalidProperty", props, err)
		}
	}
}

func TestPropertyBagRoundTrip(t *testing.T) {
	t.Parallel()
	in := Message{
		MessageID:       "mid with space & = / $",
		CorrelationID:   "ü",
		UserID:          "u",
		ContentType:     "application/json;charset=utf-8",
		ContentEncoding: "utf-8",
		CreationTime:    time.Date(2025, 1, 2, 3, 4, 5, 6000000, time.UTC),
		To:              "/devices/d/messages/deviceBound",
		ExpiryTime:      "2025-01-02T04:04:05Z",
		Properties: map[string]string{
			"a b":        "c d",
			"unicode ✓":  "温度 4 °C",
			"amp&eq=":    "x&y=z",
			"slash/":     "/a/b/",
			"dollar$":    "$5",
			"plus+hash#": "1+1#2",
			"percent%":   "100%",
			"empty":      "",
		},
	}
	bag, err := EncodePropertyBag(&in)
	if err != nil {
		t.Fatal(err)
	}
	var out Message
	if err := DecodePropertyBag(bag, &out); err != nil {
		t.Fatalf("DecodePropertyBag(%q): %v", bag, err)
	}
	if !reflect.DeepEqual(out, in) {
		t.Errorf("round trip via %q:\n got %+v\nwant %+v", bag, out, in)
	}
}

func TestDecodePropertyBag(t *testing.T) {
	t.Parallel()
	tests := []struct {
		bag  string
		want Message
	}{
		{"", Message{}},
		// The C SDK's escaped system-property form (docs/protocol.md B.3).
		{"%24.mid=7&%24.to=%2Fdevices%2Fd%2Fmessages%2FdeviceBound&%24.ct=text%2Fplain",
			Message{MessageID: "7", To: "/devices/d/messages/deviceBound", ContentType: "text/plain"}},
		// docs/protocol.md B.4: a bare key is null, "k=" is empty.
		{"nullkey&emptykey=&k=v", Message{Properties: map[string]string{"nullkey": "", "emptykey": "", "k": "v"}}},
		{"$.sub=thermostat1&a=1", Message{Properties: map[string]string{"$.sub": "thermostat1", "a": "1"}}},
		{"$.ctime=not-a-time", Message{Properties: map[string]string{"$.ctime": "not-a-time"}}},
		{"a=1&&b=2", Message{Properties: map[string]string{"a": "1", "b": "2"}}},
	}
	for _, tt := range tests {
		var got Message
		if err := DecodePropertyBag(tt.bag, &got); err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("DecodePropertyBag(%q) = %+v, %v; want %+v", tt.bag, got, err, tt.want)
		}
	}
	var m Message
	if err := DecodePropertyBag("a=%zz", &m); err == nil {
		t.Error("DecodePropertyBag(bad escape) = nil error")
	}
}

func TestParseC2D(t *testing.T) {
	t.Parallel()
	m, err := parseC2D("dev-1", "devices/dev-1/messages/devicebound/%24.mid=abc&%24.to=%2Fdevices%2Fdev-1%2Fmessages%2FdeviceBound&cmd=open%20door", []byte("hi"))
	if err != nil {
		t.Fatal(err)
	}
	want := Message{Body: []byte("hi"), MessageID: "abc", To: "/devices/dev-1/messages/deviceBound", Properties: map[string]string{"cmd": "open door"}}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("parseC2D = %+v; want %+v", m, want)
	}
	if m, err := parseC2D("dev-1", "devices/dev-1/messages/devicebound/", nil); err != nil || m.Properties != nil {
		t.Errorf("parseC2D(no bag) = %+v, %v", m, err)
	}
	if _, err := parseC2D("dev-1", "devices/dev-2/messages/devicebound/", nil); err == nil {
		t.Error("parseC2D(other device) = nil error")
	}
}

func TestTelemetryTopicAndSize(t *testing.T) {
	t.Parallel()
	m := Message{Body: []byte(`{"temperature":4.2}`), ContentType: "application/json", ContentEncoding: "utf-8",
		Properties: map[string]string{"temperatureAlert": "false"}}
	got, err := telemetryTopic("sensor-thl-001", &m)
	want := "devices/sensor-thl-001/messages/events/$.ct=application%2Fjson&$.ce=utf-8&temperatureAlert=false"
	if err != nil || got != want {
		t.Errorf("telemetryTopic = %q, %v; want %q", got, err, want)
	}
	if got, _ := telemetryTopic("d", &Message{}); got != "devices/d/messages/events/" {
		t.Errorf("telemetryTopic(no props) = %q", got)
	}

	// docs/protocol.md F: 256 KB counts body, system values, app names and values.
	tests := []struct {
		name    string
		m       Message
		wantErr error
	}{
		{"exactly at limit", Message{Body: make([]byte, MaxMessageSize-5), Properties: map[string]string{"k": "1234"}}, nil},
		{"one over via property", Message{Body: make([]byte, MaxMessageSize-5), Properties: map[string]string{"k": "12345"}}, ErrTooLarge},
		{"one over via system", Message{Body: make([]byte, MaxMessageSize), MessageID: "1"}, ErrTooLarge},
		{"long mid", Message{MessageID: strings.Repeat("m", 129)}, ErrInvalidProperty},
		{"topic too long", Message{Properties: map[string]string{"k": strings.Repeat("#", 30000)}}, ErrTooLarge},
	}
	for _, tt := range tests {
		_, err := telemetryTopic("d", &tt.m)
		if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
			t.Errorf("telemetryTopic(%s) = %v; want %v", tt.name, err, tt.wantErr)
		}
	}
}

func TestParseTwinResponseTopic(t *testing.T) {
	t.Parallel()
	tests := []struct {
		topic   string
		want    twinResponse
		wantErr bool
	}{
		{"$iothub/twin/res/200/?$rid=1", twinResponse{Status: 200, RID: "1"}, false},
		{"$iothub/twin/res/204/?$rid=17&$version=124", twinResponse{Status: 204, RID: "17", Version: 124}, false},
		{"$iothub/twin/res/429/?$rid=3", twinResponse{Status: 429, RID: "3"}, false},
		{"$iothub/twin/res/204/?$version=5&$rid=a%20b", twinResponse{Status: 204, RID: "a b", Version: 5}, false},
		{"$iothub/twin/res/abc/?$rid=1", twinResponse{}, true},
		{"$iothub/twin/res/200", twinResponse{}, true},
		{"$iothub/twin/res/200/?x=1", twinResponse{}, true},
		{"$iothub/twin/res/204/?$rid=1&$version=x", twinResponse{}, true},
		{"$dps/registrations/res/200/?$rid=1", twinResponse{}, true},
	}
	for _, tt := range tests {
		got, err := parseTwinResponseTopic(tt.topic)
		if (err != nil) != tt.wantErr || (!tt.wantErr && !reflect.DeepEqual(got, tt.want)) {
			t.Errorf("parseTwinResponseTopic(%q) = %+v, %v; want %+v, err=%v", tt.topic, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseDesiredTopic(t *testing.T) {
	t.Parallel()
	tests := []struct {
		topic   string
		v       int64
		ok      bool
		wantErr bool
	}{
		{"$iothub/twin/PATCH/properties/desired/?$version=13", 13, true, false},
		{"$iothub/twin/PATCH/properties/desired/", 0, false, false},
		{"$iothub/twin/PATCH/properties/desired/?$version=x", 0, false, true},
		{"$iothub/twin/PATCH/properties/reported/?$version=1", 0, false, true},
	}
	for _, tt := range tests {
		v, ok, err := parseDesiredTopic(tt.topic)
		if v != tt.v || ok != tt.ok || (err != nil) != tt.wantErr {
			t.Errorf("parseDesiredTopic(%q) = %d, %v, %v; want %d, %v, err=%v", tt.topic, v, ok, err, tt.v, tt.ok, tt.wantErr)
		}
	}
}

func TestParseMethodTopic(t *testing.T) {
	t.Parallel()
	tests := []struct {
		topic, name, rid string
		wantErr          bool
	}{
		{"$iothub/methods/POST/reboot/?$rid=1", "reboot", "1", false},
		{"$iothub/methods/POST/thermostat*getMaxMinReport/?$rid=ab12", "thermostat*getMaxMinReport", "ab12", false},
		{"$iothub/methods/POST//?$rid=1", "", "", true},
		{"$iothub/methods/POST/reboot/", "", "", true},
		{"$iothub/methods/POST/reboot", "", "", true},
		{"$iothub/methods/res/200/?$rid=1", "", "", true},
	}
	for _, tt := range tests {
		name, rid, err := parseMethodTopic(tt.topic)
		if name != tt.name || rid != tt.rid || (err != nil) != tt.wantErr {
			t.Errorf("parseMethodTopic(%q) = %q, %q, %v; want %q, %q, err=%v", tt.topic, name, rid, err, tt.name, tt.rid, tt.wantErr)
		}
	}
	if got, want := methodResponseTopic(404, "7"), "$iothub/methods/res/404/?$rid=7"; got != want {
		t.Errorf("methodResponseTopic = %q; want %q", got, want)
	}
}

func TestValidNames(t *testing.T) {
	t.Parallel()
	for _, n := range []string{"reboot", "set-interval", "thermostat*getMaxMinReport", "a_b.c~!"} {
		if err := validMethodName(n); err != nil {
			t.Errorf("validMethodName(%q) = %v; want nil", n, err)
		}
	}
	for _, n := range []string{"", "re boot", "a/b", "$x", "a?b", "a=b", "ä", "a\tb", "{x}"} {
		if err := validMethodName(n); err == nil {
			t.Errorf("validMethodName(%q) = nil; want error", n)
		}
	}
	for _, id := range []string{"sensor-thl-001", "a.b_c:d", "x@y$'(!)"} {
		if err := validDeviceID(id); err != nil {
			t.Errorf("validDeviceID(%q) = %v; want nil", id, err)
		}
	}
	for _, id := range []string{"", "a/b", "a+b", "a#b", "a b", strings.Repeat("x", 129)} {
		if err := validDeviceID(id); err == nil {
			t.Errorf("validDeviceID(%q) = nil; want error", id)
		}
	}
}

func TestValidateKeepAlive(t *testing.T) {
	t.Parallel()
	tests := []struct {
		k  time.Duration
		ok bool
	}{
		{30 * time.Second, true},
		{240 * time.Second, true},
		{1177 * time.Second, true},
		{1178 * time.Second, false},
		{30 * time.Minute, false},
		{0, false},
		{-time.Second, false},
		{1500 * time.Millisecond, false},
	}
	for _, tt := range tests {
		if err := ValidateKeepAlive(tt.k); (err == nil) != tt.ok {
			t.Errorf("ValidateKeepAlive(%s) = %v; want ok=%v", tt.k, err, tt.ok)
		}
	}
}
