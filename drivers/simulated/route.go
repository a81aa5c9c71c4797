package simulated

import (
	"math"
	"time"
)

// Waypoint is a point on a sea lane, in degrees (north and east positive).
type Waypoint struct{ Lat, Lon float64 }

// RotterdamNewYork follows the usual container-ship lane: out of the
// Maas, down the North Sea traffic separation schemes, through the Dover
// Strait and the English Channel, past Scilly, across the North Atlantic
// south of the Grand Banks and Nantucket Shoals, in by Ambrose to the
// Narrows. Legs are great-circle arcs; none crosses land.
var RotterdamNewYork = []Waypoint{
	{51.955, 4.020},   // Rotterdam, Maasvlakte
	{52.000, 3.600},   // Maas approach
	{51.450, 2.400},   // West Hinder
	{51.000, 1.500},   // Dover Strait
	{50.600, 0.500},   // off Beachy Head
	{50.450, -1.200},  // south of the Isle of Wight
	{50.100, -3.300},  // off Start Point
	{49.750, -5.400},  // off the Lizard
	{49.700, -6.600},  // south of Scilly
	{49.000, -15.000}, // Western Approaches
	{47.500, -25.000},
	{45.500, -35.000},
	{43.000, -45.000},
	{41.500, -55.000}, // south of the Grand Banks
	{40.600, -65.000},
	{40.300, -69.500}, // south of Nantucket Shoals
	{40.450, -73.600},
	{40.460, -73.830}, // Ambrose
	{40.600, -74.040}, // the Narrows
}

// RouteSpeedKnots is the simulated ship's speed through the water.
const RouteSpeedKnots = 18.0

const (
	earthRadiusNM = 3440.065 // mean Earth radius in nautical miles
	deg           = math.Pi / 180
)

// Route is a ship moving along RotterdamNewYork at RouteSpeedKnots from
// start, then back again, forever. Its state is a pure function of time,
// so the same (seed, start, t) always gives the same answer.
type Route struct {
	seed  int64
	start time.Time
	pts   []Waypoint
	cum   []float64 // distance from the first waypoint to each, nm
}

// NewRoute returns the Rotterdam–New York route departing at start. The
// seed drives the small measurement noise only.
func NewRoute(seed int64, start time.Time) *Route {
	r := &Route{seed: seed, start: start, pts: RotterdamNewYork}
	r.cum = make([]float64, len(r.pts))
	for i := 1; i < len(r.pts); i++ {
		r.cum[i] = r.cum[i-1] + distanceNM(r.pts[i-1], r.pts[i])
	}
	return r
}

// LengthNM is the one-way length of the route in nautical miles.
func (r *Route) LengthNM() float64 { return r.cum[len(r.cum)-1] }

// Start is the departure time.
func (r *Route) Start() time.Time { return r.start }

// TravelledNM is the distance sailed since start (0 before start).
func (r *Route) TravelledNM(t time.Time) float64 {
	h := t.Sub(r.start).Hours()
	if h < 0 {
		return 0
	}
	return h * RouteSpeedKnots
}

// At returns the true (noise-free) position and course over ground at t.
// After arriving the ship turns round and sails the route backwards.
func (r *Route) At(t time.Time) (pos Waypoint, courseDeg float64) {
	d := r.TravelledNM(t)
	total := r.LengthNM()
	m := math.Mod(d, 2*total)
	forward := m <= total
	if !forward {
		m = 2*total - m
	}
	pos = r.pointAt(m)
	// Course: bearing towards a point a little further along the way.
	const step = 0.05 // nm
	if forward {
		if m+step <= total {
			courseDeg = bearingDeg(pos, r.pointAt(m+step))
		} else {
			courseDeg = bearingDeg(r.pointAt(m-step), pos)
		}
	} else {
		if m-step >= 0 {
			courseDeg = bearingDeg(pos, r.pointAt(m-step))
		} else {
			courseDeg = bearingDeg(r.pointAt(m+step), pos)
		}
	}
	return pos, courseDeg
}

// pointAt is the point s nm along the route from the first waypoint.
func (r *Route) pointAt(s float64) Waypoint {
	if s <= 0 {
		return r.pts[0]
	}
	for i := 1; i < len(r.pts); i++ {
		if s <= r.cum[i] {
			leg := r.cum[i] - r.cum[i-1]
			return intermediate(r.pts[i-1], r.pts[i], (s-r.cum[i-1])/leg)
		}
	}
	return r.pts[len(r.pts)-1]
}

// distanceNM is the great-circle (haversine) distance.
func distanceNM(a, b Waypoint) float64 {
	return earthRadiusNM * angle(a, b)
}

// angle is the central angle between a and b in radians.
func angle(a, b Waypoint) float64 {
	dLat := (b.Lat - a.Lat) * deg
	dLon := (b.Lon - a.Lon) * deg
	h := math.Sin(dLat/2)*math.Sin(dLat/2) +
		math.Cos(a.Lat*deg)*math.Cos(b.Lat*deg)*math.Sin(dLon/2)*math.Sin(dLon/2)
	return 2 * math.Asin(math.Min(1, math.Sqrt(h)))
}

// intermediate is the point fraction f of the way from a to b along the
// great circle.
func intermediate(a, b Waypoint, f float64) Waypoint {
	d := angle(a, b)
	if d == 0 {
		return a
	}
	A := math.Sin((1-f)*d) / math.Sin(d)
	B := math.Sin(f*d) / math.Sin(d)
	la, lb := a.Lat*deg, b.Lat*deg
	oa, ob := a.Lon*deg, b.Lon*deg
	x := A*math.Cos(la)*math.Cos(oa) + B*math.Cos(lb)*math.Cos(ob)
	y := A*math.Cos(la)*math.Sin(oa) + B*math.Cos(lb)*math.Sin(ob)
	z := A*math.Sin(la) + B*math.Sin(lb)
	return Waypoint{
		Lat: math.Atan2(z, math.Hypot(x, y)) / deg,
		Lon: math.Atan2(y, x) / deg,
	}
}

// bearingDeg is the initial great-circle bearing from a to b, 0–360.
func bearingDeg(a, b Waypoint) float64 {
	la, lb := a.Lat*deg, b.Lat*deg
	dLon := (b.Lon - a.Lon) * deg
	y := math.Sin(dLon) * math.Cos(lb)
	x := math.Cos(la)*math.Sin(lb) - math.Sin(la)*math.Cos(lb)*math.Cos(dLon)
	return math.Mod(math.Atan2(y, x)/deg+360, 360)
}
