package pnp_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/reefer/tracker/internal/pnp"
)

func TestParseRoundTrip(t *testing.T) {
	for _, a := range []pnp.Ack{
		{Value: 3.0, Code: pnp.Accepted, Version: 7, Description: "applied"},
		{Value: 10.0, Code: pnp.SetByDevice, Version: 0},
		{Value: -18.5, Code: pnp.Rejected, Version: 12, Description: "refused"},
	} {
		b, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		got, err := pnp.Parse(b)
		if err != nil {
			t.Fatalf("Parse(%s) = %v", b, err)
		}
		f, ok := got.Number()
		if want, _ := a.Number(); !ok || f != want || got.Code != a.Code || got.Version != a.Version || got.Description != a.Description {
			t.Errorf("Parse(%s) = %+v; want %+v", b, got, a)
		}
		if _, isNum := got.Value.(json.Number); !isNum {
			t.Errorf("Parse(%s).Value is %T; want json.Number", b, got.Value)
		}
	}
	// From takes what a twin read as map[string]any holds.
	var twin map[string]any
	if err := json.Unmarshal([]byte(`{"telemetryDelay":{"value":3,"ac":200,"av":4,"ad":"applied"}}`), &twin); err != nil {
		t.Fatal(err)
	}
	a, err := pnp.From(twin["telemetryDelay"])
	if f, _ := a.Number(); err != nil || f != 3 || a.Version != 4 {
		t.Errorf("From = %+v, %v", a, err)
	}
}

// Anything but the convention's shape is refused, naming what is wrong.
func TestParseRejects(t *testing.T) {
	for _, doc := range []string{
		`3`,                                  // a plain value (model version 1's shape)
		`null`,                               //
		`[]`,                                 //
		`{"value":3,"ac":200}`,               // no av
		`{"value":3,"av":1}`,                 // no ac
		`{"ac":200,"av":1}`,                  // no value
		`{"value":3,"ac":"200","av":1}`,      // ac a string
		`{"value":3,"ac":200.5,"av":1}`,      // ac not an integer
		`{"value":3,"ac":42,"av":1}`,         // not a status code
		`{"value":3,"ac":200,"av":-1}`,       // negative version
		`{"value":3,"ac":200,"av":"1"}`,      // version a string
		`{"value":3,"ac":200,"av":1,"ad":5}`, // ad not a string
		`{"value":3,"ac":200,"av":1,"ad":null}`,
		`{"value":3,"ac":200,"av":1,"AC":200}`, // names are case-sensitive
		`{"value":3,"ac":200,"av":1,"status":"ok"}`,
	} {
		if a, err := pnp.Parse([]byte(doc)); !errors.Is(err, pnp.ErrNotAck) {
			t.Errorf("Parse(%s) = %+v, %v; want ErrNotAck", doc, a, err)
		}
	}
}
