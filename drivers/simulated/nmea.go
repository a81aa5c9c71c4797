package simulated

import (
	"context"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Sentences returns the NMEA burst a GPS module on the ship would send at
// t: one RMC and one GGA, checksummed, without line endings. Position,
// HDOP and speed carry small seeded noise; satellites in use vary 7–12.
func (r *Route) Sentences(t time.Time) []string {
	t = t.UTC()
	pos, course := r.At(t)
	sec := t.Unix()
	// A few metres of position jitter, like a real receiver at sea.
	const jitterM = 3.0
	lat := pos.Lat + routeNoise(r.seed, sec, 1)*jitterM/111320
	lon := pos.Lon + routeNoise(r.seed, sec, 2)*jitterM/(111320*math.Cos(pos.Lat*deg))
	knots := RouteSpeedKnots + 0.3*routeNoise(r.seed, sec, 3)
	course = math.Mod(course+0.5*routeNoise(r.seed, sec, 4)+360, 360)
	hdop := 0.7 + 0.4*(routeNoise(r.seed, sec, 5)+1) // 0.7–1.5
	sats := 7 + int(routeUnit(r.seed, sec/60, 6)*6)  // 7–12, changes each minute
	alt := 32 + 1.5*routeNoise(r.seed, sec, 7)       // antenna on the bridge
	if r.TravelledNM(t) == 0 {
		knots = 0 // alongside in Rotterdam before departure
	}

	hms := fmt.Sprintf("%02d%02d%02d.%02d", t.Hour(), t.Minute(), t.Second(), t.Nanosecond()/1e7)
	latS, ns := nmeaCoord(lat, 2, "N", "S")
	lonS, ew := nmeaCoord(lon, 3, "E", "W")
	rmc := strings.Join([]string{
		"GPRMC", hms, "A", latS, ns, lonS, ew,
		strconv.FormatFloat(knots, 'f', 1, 64),
		strconv.FormatFloat(course, 'f', 1, 64),
		t.Format("020106"), "", "", "A",
	}, ",")
	gga := strings.Join([]string{
		"GPGGA", hms, latS, ns, lonS, ew, "1",
		fmt.Sprintf("%02d", sats),
		strconv.FormatFloat(hdop, 'f', 1, 64),
		strconv.FormatFloat(alt, 'f', 1, 64), "M",
		"47.0", "M", "", "",
	}, ",")
	return []string{nmeaFrame(rmc), nmeaFrame(gga)}
}

// nmeaCoord formats degrees as NMEA (d)ddmm.mmmm with a hemisphere
// letter. Rounding happens on the whole value in 1e-4 minutes so that
// 59.99997' carries into the next degree instead of printing "60.0000".
func nmeaCoord(v float64, degDigits int, pos, neg string) (string, string) {
	hemi := pos
	if v < 0 {
		hemi, v = neg, -v
	}
	units := int64(math.Round(v * 60 * 1e4)) // 1e-4 minutes
	d := units / (60 * 1e4)
	rem := units % (60 * 1e4)
	return fmt.Sprintf("%0*d%02d.%04d", degDigits, d, rem/1e4, rem%1e4), hemi
}

// nmeaFrame wraps a sentence body as "$body*XX".
func nmeaFrame(body string) string {
	var sum byte
	for i := 0; i < len(body); i++ {
		sum ^= body[i]
	}
	return fmt.Sprintf("$%s*%02X", body, sum)
}

// routeUnit is a deterministic pseudo-random number in [0,1) for (seed,
// index, channel): a splitmix64 hash, so Sentences stays a pure function
// of time with no generator state.
func routeUnit(seed, idx int64, ch uint64) float64 {
	z := uint64(seed) ^ uint64(idx)*0x9e3779b97f4a7c15 ^ ch*0xd1b54a32d192ed03
	z += 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	return float64(z>>11) / (1 << 53)
}

// routeNoise is routeUnit mapped to [-1,1).
func routeNoise(seed, idx int64, ch uint64) float64 { return 2*routeUnit(seed, idx, ch) - 1 }

// Reader streams the route as a GPS module would: one burst of sentences
// (CR LF terminated) at once and then one per tick, each for now(). It
// ends when ctx is done or it is closed, so a gps.Receiver reads simulated
// data through exactly the path it uses for a serial port.
func (r *Route) Reader(ctx context.Context, now func() time.Time, tick <-chan time.Time) io.ReadCloser {
	return r.stream(ctx, now, tick, nil)
}

// Stream is Reader driven by its own ticker every interval (a second for
// a real-time feed); the ticker stops when the stream ends.
func (r *Route) Stream(ctx context.Context, now func() time.Time, interval time.Duration) io.ReadCloser {
	tk := time.NewTicker(interval)
	return r.stream(ctx, now, tk.C, tk.Stop)
}

func (r *Route) stream(ctx context.Context, now func() time.Time, tick <-chan time.Time, stop func()) io.ReadCloser {
	if now == nil {
		now = time.Now
	}
	ctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	s := &routeStream{pr: pr, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		if stop != nil {
			defer stop()
		}
		burst := func() error {
			var b strings.Builder
			for _, line := range r.Sentences(now()) {
				b.WriteString(line)
				b.WriteString("\r\n")
			}
			_, err := pw.Write([]byte(b.String()))
			return err
		}
		// Unblocks a pending write when ctx ends before the reader reads.
		defer context.AfterFunc(ctx, func() { pw.CloseWithError(ctx.Err()) })()
		if burst() != nil {
			return
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick:
				if burst() != nil {
					return
				}
			}
		}
	}()
	return s
}

// routeStream is the read end of a simulated serial line.
type routeStream struct {
	pr     *io.PipeReader
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

func (s *routeStream) Read(p []byte) (int, error) { return s.pr.Read(p) }

// Close stops the generator and waits for it, like unplugging the module.
func (s *routeStream) Close() error {
	s.once.Do(func() {
		s.cancel()
		_ = s.pr.Close()
	})
	<-s.done
	return nil
}
