package restopic

import (
	"net/url"
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	t.Parallel()
	const prefix = "$dps/registrations/res/"
	tests := []struct {
		topic      string
		wantStatus int
		wantQuery  url.Values
		wantErr    string
	}{
		{"$dps/registrations/res/202/?$rid=1&retry-after=3", 202, url.Values{"$rid": {"1"}, "retry-after": {"3"}}, ""},
		{"$dps/registrations/res/204/$rid=a%20b", 204, url.Values{"$rid": {"a b"}}, ""},
		{"$dps/registrations/res/500/", 500, url.Values{}, ""},
		{"$iothub/twin/res/200/?$rid=1", 0, nil, "is not a DPS response"},
		{"$dps/registrations/res/200", 0, nil, "no status segment"},
		{"$dps/registrations/res/abc/?$rid=1", 0, nil, "not an HTTP-like code"},
		{"$dps/registrations/res/20/?$rid=1", 0, nil, "not an HTTP-like code"},
		{"$dps/registrations/res/1000/?$rid=1", 0, nil, "not an HTTP-like code"},
		{"$dps/registrations/res/200/?$rid=%zz", 0, nil, "invalid URL escape"},
	}
	for _, tt := range tests {
		status, query, err := Parse(tt.topic, prefix, "DPS response")
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Parse(%q) error = %v; want one containing %q", tt.topic, err, tt.wantErr)
			}
			continue
		}
		if err != nil || status != tt.wantStatus || !reflect.DeepEqual(query, tt.wantQuery) {
			t.Errorf("Parse(%q) = %d, %v, %v; want %d, %v, nil", tt.topic, status, query, err, tt.wantStatus, tt.wantQuery)
		}
	}
}

func TestEscape(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"1", "1"},
		{"a b", "a%20b"},
		{"a+b", "a%2Bb"},
		{"#/&=$?", "%23%2F%26%3D%24%3F"},
		{"4.d0a671905ea5b2c8.e7173b7b-0e54", "4.d0a671905ea5b2c8.e7173b7b-0e54"},
	} {
		if got := Escape(tc.in); got != tc.want {
			t.Errorf("Escape(%q) = %q; want %q", tc.in, got, tc.want)
		}
		if got, err := url.QueryUnescape(Escape(tc.in)); err != nil || got != tc.in {
			t.Errorf("QueryUnescape(Escape(%q)) = %q, %v", tc.in, got, err)
		}
	}
}
