package gps

import (
	"errors"
	"strconv"
	"time"

	nmea "github.com/adrianmo/go-nmea"

	"github.com/reefer/tracker/drivers"
)

// knotMS is one knot in m/s (1852 m per hour).
const knotMS = 1852.0 / 3600.0

// Fix is one position report merged from an RMC and a GGA sentence.
type Fix struct {
	// Time is the receiver's UTC time of the fix (RMC date and time).
	Time      time.Time `json:"time"`
	Latitude  float64   `json:"latitude"`  // degrees, north positive
	Longitude float64   `json:"longitude"` // degrees, east positive
	AltitudeM float64   `json:"altitude"`  // metres above mean sea level (GGA); 0 when unknown
	SpeedMS   float64   `json:"speed"`     // speed over ground, m/s
	CourseDeg float64   `json:"course"`    // course over ground, degrees true
	// Quality is the GGA fix quality (1 GPS, 2 DGPS, 4 RTK, ...). Without
	// a current GGA it is inferred from the RMC mode. 0 never escapes
	// Latest: it means no fix.
	Quality    int     `json:"quality"`
	Satellites int     `json:"satellites"` // satellites in use (GGA); 0 when unknown
	HDOP       float64 `json:"hdop"`       // horizontal dilution of precision (GGA); 0 when unknown
	// Received is the local clock when the RMC was parsed; staleness is
	// judged on it, because the receiver's own clock says nothing about
	// whether the serial link is still alive.
	Received time.Time      `json:"received"`
	Source   drivers.Source `json:"source"`
}

// rmcState is the last RMC: position, motion, date and validity.
type rmcState struct {
	seq    uint64 // order of arrival; 0 = never seen
	valid  bool
	tod    nmea.Time
	utc    time.Time
	lat    float64
	lon    float64
	knots  float64
	course float64
	mode   string
	at     time.Time
}

// ggaState is the last GGA: fix quality, satellites, HDOP, altitude.
type ggaState struct {
	seq     uint64
	valid   bool
	tod     nmea.Time
	quality int
	sats    int
	hdop    float64
	alt     float64
	at      time.Time
}

// decoder turns lines into fix state and counters. It is not safe for
// concurrent use; Receiver guards it.
type decoder struct {
	parser nmea.SentenceParser
	seq    uint64
	rmc    rmcState
	gga    ggaState
	stats  Stats
}

// errNoPosition marks a sentence that claims a fix but has empty
// coordinate fields; go-nmea parses those as 0, which would put us on
// null island.
var errNoPosition = errors.New("fix without coordinates")

// line counts one lineReader result.
func (d *decoder) lineError(err error) {
	d.stats.Bad++
	if errors.Is(err, ErrLineTooLong) {
		d.stats.TooLong++
	}
}

// feed parses one line received at now. It returns the parse error for
// logging; counters are updated either way.
func (d *decoder) feed(line string, now time.Time) error {
	s, err := d.parser.Parse(line)
	var unsupported *nmea.NotSupportedError
	switch {
	case errors.As(err, &unsupported):
		// Checksum was fine, we just don't use this type (GSV, GSA, ...).
		d.ok(now)
		return nil
	case err != nil:
		d.stats.Bad++
		return err
	}
	switch m := s.(type) {
	case nmea.RMC:
		err = d.onRMC(m, now)
	case nmea.GGA:
		err = d.onGGA(m, now)
	}
	if err != nil {
		d.stats.Bad++
		return err
	}
	d.ok(now)
	return nil
}

func (d *decoder) ok(now time.Time) {
	d.stats.Sentences++
	d.stats.LastSentence = now
}

func hasPosition(f []string, first int) bool {
	for i := first; i < first+4; i++ {
		if i >= len(f) || f[i] == "" {
			return false
		}
	}
	return true
}

func (d *decoder) onRMC(m nmea.RMC, now time.Time) error {
	st := rmcState{seq: d.seq + 1, tod: m.Time, at: now}
	if m.Validity == nmea.ValidRMC {
		if !hasPosition(m.Fields, 2) {
			return errNoPosition // malformed: dropped like a bad checksum
		}
		// The two-digit year is resolved against the local clock's year;
		// a receiver reporting the far past is rejected as invalid below.
		st.utc = nmea.DateTime(now.UTC().Year(), m.Date, m.Time)
		st.lat, st.lon = m.Latitude, m.Longitude
		st.knots, st.course, st.mode = m.Speed, m.Course, m.FFAMode
		// Exactly 0,0 is what broken receivers print for "no fix"; no
		// container ship sits on that buoy. Without a date there is no
		// usable UTC time either (receivers send that before almanac).
		st.valid = !st.utc.IsZero() && !(st.lat == 0 && st.lon == 0)
	}
	d.seq++
	d.rmc = st
	return nil
}

func (d *decoder) onGGA(m nmea.GGA, now time.Time) error {
	q, _ := strconv.Atoi(m.FixQuality)
	st := ggaState{seq: d.seq + 1, tod: m.Time, at: now, quality: q}
	if q > 0 {
		if !hasPosition(m.Fields, 1) {
			return errNoPosition // malformed: dropped like a bad checksum
		}
		st.valid = true
		st.sats, st.hdop, st.alt = int(m.NumSatellites), m.HDOP, m.Altitude
	}
	d.seq++
	d.gga = st
	return nil
}

// rmcModeQuality maps the NMEA 2.3 RMC mode letter to a GGA quality for
// receivers configured to send RMC only.
func rmcModeQuality(mode string) int {
	switch mode {
	case "D":
		return 2
	case "P":
		return 3
	case "R":
		return 4
	case "F":
		return 5
	case "E":
		return 6
	}
	return 1
}

// fix merges the latest RMC and GGA as seen at now. RMC is required: it
// alone carries the date. A GGA saying "no fix" vetoes an RMC of the same
// epoch (same time of day) or an older one, since the receiver's most
// recent word wins.
func (d *decoder) fix(now time.Time, maxAge time.Duration, src drivers.Source) (Fix, bool) {
	r, g := d.rmc, d.gga
	if r.seq == 0 || !r.valid || now.Sub(r.at) > maxAge {
		return Fix{}, false
	}
	ggaFresh := g.seq != 0 && now.Sub(g.at) <= maxAge
	sameEpoch := g.tod == r.tod
	if ggaFresh && !g.valid && (sameEpoch || g.seq > r.seq) {
		return Fix{}, false
	}
	f := Fix{
		Time:      r.utc,
		Latitude:  r.lat,
		Longitude: r.lon,
		SpeedMS:   r.knots * knotMS,
		CourseDeg: r.course,
		Quality:   rmcModeQuality(r.mode),
		Received:  r.at,
		Source:    src,
	}
	if ggaFresh && g.valid {
		f.Quality, f.Satellites, f.HDOP, f.AltitudeM = g.quality, g.sats, g.hdop, g.alt
	}
	return f, true
}
