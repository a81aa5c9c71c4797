package fleet

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reefer/tracker/deploy/fleetctl/azrest"
)

func TestReadIDs(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"container,deviceId\nMSCU1,dev-1\nMSCU2, dev-2\n", "dev-1 dev-2"},
		{"dev-1\n# a comment\n\ndev-2\nDEV-1\n", "dev-1 dev-2"}, // no header, one column, duplicate (case-insensitive) kept once
		{"MSCU1;x,dev-1\n", "dev-1"},                            // no header: the last column
		{"deviceId,container\ndev-9,MSCU9\n", "dev-9"},          // header names the column
	}
	for _, tt := range tests {
		ids, err := ReadIDs(strings.NewReader(tt.in))
		if err != nil || strings.Join(ids, " ") != tt.want {
			t.Errorf("ReadIDs(%q) = %q, %v; want %q", tt.in, ids, err, tt.want)
		}
	}
	for in, want := range map[string]string{
		"":                           "no device ids",
		"deviceId\n":                 "no device ids",
		"deviceId\nok\nbad id\nx!\n": "line 3",
	} {
		if _, err := ReadIDs(strings.NewReader(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ReadIDs(%q) = %v; want an error with %q", in, err, want)
		}
	}
}

// A throttled call is retried after the service's Retry-After; bulk work
// is cut into operations of at most 10.
func TestBulkChunksAndRetriesThrottled(t *testing.T) {
	t.Parallel()
	var calls, throttled atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 2 {
			throttled.Add(1)
			w.Header().Set("Retry-After", "3")
			w.WriteHeader(429)
			w.Write([]byte(`{"errorCode":429001,"message":"throttled"}`))
			return
		}
		w.Write([]byte(`{"isSuccessful":true,"errors":[]}`))
	}))
	defer srv.Close()
	d, _ := azrest.NewDPS(azrest.ConnectionString{HostName: "dps", KeyName: "p", Key: "a2V5"}, azrest.Options{BaseURL: srv.URL, HTTP: srv.Client()})
	var waited []time.Duration
	var steps []int
	f := &Fleet{DPS: d, Parallel: 1,
		Sleep:    func(_ context.Context, d time.Duration) error { waited = append(waited, d); return nil },
		Progress: func(_ string, done, _ int) { steps = append(steps, done) }}
	ids := make([]string, 25)
	for i := range ids {
		ids[i] = "dev-" + string(rune('a'+i))
	}
	s, err := f.BulkReenroll(context.Background(), ids)
	if err != nil || s.Done != 25 || len(s.Failed) != 0 {
		t.Fatalf("BulkReenroll = %+v, %v", s, err)
	}
	if calls.Load() != 4 || throttled.Load() != 1 { // 10 + 10 + 5, one retried
		t.Errorf("%d calls, %d throttled; want 4 and 1", calls.Load(), throttled.Load())
	}
	if len(waited) != 1 || waited[0] != 3*time.Second {
		t.Errorf("waited %v; want [3s] (Retry-After)", waited)
	}
	if fmt.Sprint(steps) != "[10 20 25]" {
		t.Errorf("progress %v; want 10 20 25", steps)
	}
}
