package simulated

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/reefer/tracker/drivers"
	"github.com/reefer/tracker/drivers/gps"
	"github.com/reefer/tracker/internal/faketime"
)

func TestNMEACoord(t *testing.T) {
	t.Parallel()
	tests := []struct {
		v          float64
		digits     int
		want, hemi string
	}{
		{51.952056, 2, "5157.1234", "N"},
		{-33.5, 2, "3330.0000", "S"},
		{4.058333333, 3, "00403.5000", "E"},
		{-74.04, 3, "07402.4000", "W"},
		{0.0000001, 2, "0000.0000", "N"},
		{49.9999999, 2, "5000.0000", "N"}, // 59.999994' rounds up into the next degree
		{-179.99999, 3, "17959.9994", "W"},
	}
	for _, tt := range tests {
		got, hemi := nmeaCoord(tt.v, tt.digits, map[int]string{2: "N", 3: "E"}[tt.digits], map[int]string{2: "S", 3: "W"}[tt.digits])
		if got != tt.want || hemi != tt.hemi {
			t.Errorf("nmeaCoord(%v) = %q %q; want %q %q", tt.v, got, hemi, tt.want, tt.hemi)
		}
	}
}

func TestNMEAFrame(t *testing.T) {
	t.Parallel()
	// Checksums from NMEA reference examples.
	tests := map[string]string{
		"GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,":    "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47",
		"GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W": "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A",
	}
	for body, want := range tests {
		if got := nmeaFrame(body); got != want {
			t.Errorf("nmeaFrame(%q) = %q; want %q", body, got, want)
		}
	}
}

var (
	rmcRe = regexp.MustCompile(`^\$GPRMC,(\d{6}\.\d{2}),A,(\d{4}\.\d{4}),([NS]),(\d{5}\.\d{4}),([EW]),(\d+\.\d),(\d+\.\d),(\d{6}),,,A\*([0-9A-F]{2})$`)
	ggaRe = regexp.MustCompile(`^\$GPGGA,(\d{6}\.\d{2}),(\d{4}\.\d{4}),([NS]),(\d{5}\.\d{4}),([EW]),1,(\d{2}),(\d+\.\d),(-?\d+\.\d),M,47\.0,M,,\*([0-9A-F]{2})$`)
)

func TestSentencesFormat(t *testing.T) {
	t.Parallel()
	r := NewRoute(42, routeT0)
	sats := map[int]bool{}
	for i := range 2000 {
		tt := routeT0.Add(time.Duration(i) * 7 * time.Minute)
		s := r.Sentences(tt)
		if len(s) != 2 {
			t.Fatalf("Sentences(%v) = %d sentences; want 2", tt, len(s))
		}
		m := rmcRe.FindStringSubmatch(s[0])
		g := ggaRe.FindStringSubmatch(s[1])
		if m == nil || g == nil {
			t.Fatalf("Sentences(%v) = %q; want RMC and GGA in NMEA format", tt, s)
		}
		for _, line := range s {
			body := line[1:strings.IndexByte(line, '*')]
			if want := nmeaFrame(body); want != line {
				t.Fatalf("checksum of %q; want %q", line, want)
			}
		}
		if m[1] != tt.Format("150405")+".00" || m[8] != tt.Format("020106") || g[1] != m[1] {
			t.Fatalf("time fields %q %q %q; want %v", m[1], m[8], g[1], tt)
		}
		if min, _ := strconv.Atoi(m[2][2:4]); min >= 60 {
			t.Fatalf("latitude minutes %q >= 60", m[2])
		}
		if kn, _ := strconv.ParseFloat(m[6], 64); i > 0 && (kn < 17.5 || kn > 18.5) {
			t.Fatalf("speed %v kn; want ≈18", kn)
		}
		n, _ := strconv.Atoi(g[6])
		if n < 7 || n > 12 {
			t.Fatalf("satellites %d; want 7–12", n)
		}
		sats[n] = true
		if h, _ := strconv.ParseFloat(g[7], 64); h < 0.7 || h > 1.5 {
			t.Fatalf("HDOP %v; want 0.7–1.5", h)
		}
	}
	if len(sats) < 4 {
		t.Errorf("satellite counts seen %v; want variety", sats)
	}
}

func TestSentencesDeterministic(t *testing.T) {
	t.Parallel()
	a, b := NewRoute(3, routeT0), NewRoute(3, routeT0)
	c := NewRoute(4, routeT0)
	differ := false
	for i := range 50 {
		tt := routeT0.Add(time.Duration(i) * 37 * time.Minute)
		sa, sb, sc := fmt.Sprint(a.Sentences(tt)), fmt.Sprint(b.Sentences(tt)), fmt.Sprint(c.Sentences(tt))
		if sa != sb {
			t.Fatalf("same seed differs at %v:\n%s\n%s", tt, sa, sb)
		}
		if sa2 := fmt.Sprint(a.Sentences(tt)); sa2 != sa {
			t.Fatalf("Sentences(%v) not a pure function of time", tt)
		}
		differ = differ || sa != sc
	}
	if !differ {
		t.Errorf("seeds 3 and 4 gave identical noise")
	}
}

// TestRouteThroughReceiver feeds the simulator through the same
// gps.Receiver parsing path a serial port uses.
func TestRouteThroughReceiver(t *testing.T) {
	t.Parallel()
	r := NewRoute(11, routeT0)
	clock := faketime.NewClock(routeT0.Add(36 * time.Hour)) // out in the Channel approaches; shared by the stream and the receiver
	tick := make(chan time.Time)
	rx := gps.New(gps.Options{
		Open: func(ctx context.Context) (io.ReadCloser, error) {
			return r.Reader(ctx, clock.Now, tick), nil
		},
		Now:    clock.Now,
		Source: drivers.Simulated,
	}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rx.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()

	latest := func(after time.Time) gps.Fix {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if f, ok := rx.Latest(); ok && !f.Time.Before(after) {
				return f
			}
			time.Sleep(2 * time.Millisecond)
		}
		t.Fatalf("no fix at or after %v; stats %+v", after, rx.Stats())
		return gps.Fix{}
	}
	f1 := latest(clock.Now().Truncate(time.Second))
	minLat, minLon, maxLat, maxLon := routeBox()
	if f1.Latitude < minLat || f1.Latitude > maxLat || f1.Longitude < minLon || f1.Longitude > maxLon {
		t.Errorf("fix %v,%v outside the route box", f1.Latitude, f1.Longitude)
	}
	if f1.Source != drivers.Simulated || f1.Quality != 1 || f1.Satellites < 7 || f1.Satellites > 12 {
		t.Errorf("fix = %+v; want simulated, quality 1, 7–12 satellites", f1)
	}
	if kn := f1.SpeedMS * 3600 / 1852; math.Abs(kn-RouteSpeedKnots) > 0.5 {
		t.Errorf("speed = %.2f kn; want ≈18", kn)
	}
	want, _ := r.At(clock.Now())
	if d := distanceNM(want, Waypoint{f1.Latitude, f1.Longitude}); d > 0.01 {
		t.Errorf("fix is %.3f nm from the route position; want within noise", d)
	}

	clock.Advance(time.Hour)
	tick <- clock.Now()
	f2 := latest(clock.Now().Truncate(time.Second))
	if d := distanceNM(Waypoint{f1.Latitude, f1.Longitude}, Waypoint{f2.Latitude, f2.Longitude}); math.Abs(d-18) > 0.3 {
		t.Errorf("moved %.2f nm in an hour; want ≈18", d)
	}
	if s := rx.Stats(); s.Bad != 0 || s.Sentences < 4 {
		t.Errorf("stats = %+v; want ≥4 sentences, none bad", s)
	}
}

func TestStreamClose(t *testing.T) {
	t.Parallel()
	r := NewRoute(5, routeT0)
	rc := r.Stream(context.Background(), nil, 5*time.Millisecond)
	sc := bufio.NewScanner(rc)
	for i := 0; i < 6; i++ {
		if !sc.Scan() {
			t.Fatalf("stream ended after %d lines: %v", i, sc.Err())
		}
		if line := strings.TrimSuffix(sc.Text(), "\r"); !rmcRe.MatchString(line) && !ggaRe.MatchString(line) {
			t.Fatalf("line %q is not RMC or GGA", line)
		}
	}
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := rc.Read(make([]byte, 10)); err == nil {
		t.Errorf("Read after Close = nil error; want closed")
	}
}

func TestReaderStopsWithContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	rc := NewRoute(5, routeT0).Reader(ctx, func() time.Time { return routeT0 }, nil)
	cancel() // before anyone reads the first burst
	if _, err := io.ReadAll(rc); err != nil && err != context.Canceled {
		t.Errorf("ReadAll after cancel = %v; want EOF or context.Canceled", err)
	}
	_ = rc.Close()
}
