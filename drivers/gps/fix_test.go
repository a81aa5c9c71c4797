package gps

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	nmea "github.com/adrianmo/go-nmea"

	"github.com/reefer/tracker/drivers"
)

// sentence wraps an NMEA body ("GPRMC,...") as "$body*XX" with a correct
// checksum.
func sentence(body string) string {
	return "$" + body + "*" + nmea.Checksum(body)
}

const (
	// Rotterdam approaches, 12:35:19 UTC on 2024-03-23, 22.4 kn at 084.4°.
	rmcValid  = "GPRMC,123519.00,A,5157.1234,N,00403.5000,E,022.4,084.4,230324,,,A"
	ggaValid  = "GPGGA,123519.00,5157.1234,N,00403.5000,E,1,08,0.9,12.5,M,46.9,M,,"
	rmcVoid   = "GPRMC,123520.00,V,,,,,,,230324,,,N"
	ggaNoFix  = "GPGGA,123520.00,,,,,0,00,99.99,,,,,,"
	rmcVoidFx = "GPRMC,123519.00,V,5157.1234,N,00403.5000,E,,,230324,,,N"
)

var t0 = time.Date(2024, 3, 23, 12, 35, 19, 500e6, time.UTC)

func near(a, b, eps float64) bool { return math.Abs(a-b) <= eps }

func TestDecoderFix(t *testing.T) {
	t.Parallel()
	wantLat := 51 + 57.1234/60
	wantLon := 4 + 3.5/60
	tests := []struct {
		name    string
		lines   []string // bodies; checksums are added
		wantOK  bool
		wantQ   int
		wantSat int
		wantBad uint64
	}{
		{"rmc+gga", []string{rmcValid, ggaValid}, true, 1, 8, 0},
		{"gga first", []string{ggaValid, rmcValid}, true, 1, 8, 0},
		{"rmc only infers quality", []string{rmcValid}, true, 1, 0, 0},
		{"rmc dgps mode", []string{strings.Replace(rmcValid, ",,,A", ",,,D", 1)}, true, 2, 0, 0},
		{"gga only has no date", []string{ggaValid}, false, 0, 0, 0},
		{"rmc void empty fields", []string{rmcVoid}, false, 0, 0, 0},
		{"rmc void with stale coordinates", []string{rmcVoidFx}, false, 0, 0, 0},
		{"gga quality 0", []string{ggaNoFix}, false, 0, 0, 0},
		{"gga quality 0 vetoes same epoch rmc", []string{rmcValid, "GPGGA,123519.00,,,,,0,00,99.99,,,,,,"}, false, 0, 0, 0},
		{"later gga quality 0 vetoes", []string{rmcValid, ggaValid, ggaNoFix}, false, 0, 0, 0},
		{"fix lost then rmc void", []string{rmcValid, ggaValid, rmcVoid}, false, 0, 0, 0},
		{"fix regained", []string{rmcVoid, ggaNoFix, ggaValid, rmcValid}, true, 1, 8, 0},
		{"rmc A with empty coordinates", []string{"GPRMC,123519.00,A,,,,,022.4,084.4,230324,,,A"}, false, 0, 0, 1},
		{"gga 1 with empty coordinates", []string{rmcValid, "GPGGA,123519.00,,,,,1,08,0.9,12.5,M,46.9,M,,"}, true, 1, 0, 1},
		{"null island rmc", []string{"GPRMC,123519.00,A,0000.0000,N,00000.0000,E,0.0,0.0,230324,,,A"}, false, 0, 0, 0},
		{"rmc A without date", []string{"GPRMC,123519.00,A,5157.1234,N,00403.5000,E,022.4,084.4,,,,A"}, false, 0, 0, 0},
		{"GN talker", []string{strings.Replace(rmcValid, "GP", "GN", 1), strings.Replace(ggaValid, "GP", "GN", 1)}, true, 1, 8, 0},
		{"dgps gga", []string{rmcValid, strings.Replace(ggaValid, ",E,1,08,", ",E,2,11,", 1)}, true, 2, 11, 0},
		{"unsupported type is ok", []string{rmcValid, "GPGSV,1,1,01,07,79,048,42"}, true, 1, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var d decoder
			for _, body := range tt.lines {
				_ = d.feed(sentence(body), t0)
			}
			f, ok := d.fix(t0.Add(time.Second), 5*time.Second, drivers.Hardware)
			if ok != tt.wantOK {
				t.Fatalf("fix(%q) ok = %v; want %v (fix %+v)", tt.lines, ok, tt.wantOK, f)
			}
			if d.stats.Bad != tt.wantBad {
				t.Errorf("bad = %d; want %d", d.stats.Bad, tt.wantBad)
			}
			if wantSentences := uint64(len(tt.lines)) - tt.wantBad; d.stats.Sentences != wantSentences {
				t.Errorf("sentences = %d; want %d", d.stats.Sentences, wantSentences)
			}
			if !ok {
				if f != (Fix{}) {
					t.Errorf("no-fix returned non-zero Fix %+v", f)
				}
				return
			}
			if !near(f.Latitude, wantLat, 1e-9) || !near(f.Longitude, wantLon, 1e-9) {
				t.Errorf("position = %v,%v; want %v,%v", f.Latitude, f.Longitude, wantLat, wantLon)
			}
			if want := time.Date(2024, 3, 23, 12, 35, 19, 0, time.UTC); !f.Time.Equal(want) {
				t.Errorf("time = %v; want %v", f.Time, want)
			}
			if !near(f.SpeedMS, 22.4*0.514444, 1e-3) {
				t.Errorf("speed = %v m/s; want %v", f.SpeedMS, 22.4*0.514444)
			}
			if f.CourseDeg != 84.4 {
				t.Errorf("course = %v; want 84.4", f.CourseDeg)
			}
			if f.Quality != tt.wantQ || f.Satellites != tt.wantSat {
				t.Errorf("quality, satellites = %d, %d; want %d, %d", f.Quality, f.Satellites, tt.wantQ, tt.wantSat)
			}
			if tt.wantSat == 8 && (f.HDOP != 0.9 || f.AltitudeM != 12.5) {
				t.Errorf("hdop, altitude = %v, %v; want 0.9, 12.5", f.HDOP, f.AltitudeM)
			}
			if !f.Received.Equal(t0) || f.Source != drivers.Hardware {
				t.Errorf("received, source = %v, %v; want %v, hardware", f.Received, f.Source, t0)
			}
		})
	}
}

func TestDecoderRejects(t *testing.T) {
	t.Parallel()
	good := sentence(rmcValid)
	tests := []struct {
		name string
		line string
	}{
		{"bad checksum", good[:len(good)-2] + "00"},
		{"no checksum", "$" + rmcValid},
		{"flipped byte", strings.Replace(good, "5157", "5158", 1)},
		{"empty", ""},
		{"dollar only", "$"},
		{"latitude out of range", sentence("GPRMC,123519.00,A,9157.1234,N,00403.5000,E,022.4,084.4,230324,,,A")},
		{"bad time", sentence("GPRMC,12X519.00,A,5157.1234,N,00403.5000,E,022.4,084.4,230324,,,A")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var d decoder
			if err := d.feed(tt.line, t0); err == nil {
				t.Errorf("feed(%q) = nil; want error", tt.line)
			}
			if d.stats.Bad != 1 || d.stats.Sentences != 0 {
				t.Errorf("bad, sentences = %d, %d; want 1, 0", d.stats.Bad, d.stats.Sentences)
			}
			if _, ok := d.fix(t0, time.Minute, drivers.Hardware); ok {
				t.Errorf("fix after %q; want none", tt.line)
			}
		})
	}
}

func TestDecoderStale(t *testing.T) {
	t.Parallel()
	var d decoder
	for _, b := range []string{rmcValid, ggaValid} {
		if err := d.feed(sentence(b), t0); err != nil {
			t.Fatal(err)
		}
	}
	maxAge := 3 * time.Second
	for _, tc := range []struct {
		age  time.Duration
		want bool
	}{{0, true}, {maxAge, true}, {maxAge + time.Millisecond, false}, {time.Hour, false}} {
		if _, ok := d.fix(t0.Add(tc.age), maxAge, drivers.Hardware); ok != tc.want {
			t.Errorf("fix at age %v ok = %v; want %v", tc.age, ok, tc.want)
		}
	}
	// A stale GGA no longer contributes satellites, but the fresh RMC
	// still makes a fix.
	if err := d.feed(sentence(strings.Replace(rmcValid, "123519", "123529", 1)), t0.Add(10*time.Second)); err != nil {
		t.Fatal(err)
	}
	f, ok := d.fix(t0.Add(10*time.Second), maxAge, drivers.Hardware)
	if !ok || f.Satellites != 0 || f.Quality != 1 {
		t.Errorf("fix with stale GGA = %+v, %v; want ok, 0 satellites, quality 1", f, ok)
	}
}

func TestFixJSON(t *testing.T) {
	t.Parallel()
	var d decoder
	_ = d.feed(sentence(rmcValid), t0)
	_ = d.feed(sentence(ggaValid), t0)
	f, _ := d.fix(t0, time.Second, drivers.Simulated)
	b := fmt.Sprintf("%s", mustJSON(t, f))
	for _, key := range []string{`"time":`, `"latitude":`, `"longitude":`, `"altitude":12.5`, `"speed":`, `"course":84.4`, `"quality":1`, `"satellites":8`, `"hdop":0.9`, `"received":`, `"source":"simulated"`} {
		if !strings.Contains(b, key) {
			t.Errorf("JSON %s lacks %s", b, key)
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
