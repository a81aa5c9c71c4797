package simulated

import (
	"math"
	"testing"
	"time"
)

var routeT0 = time.Date(2025, 6, 1, 6, 0, 0, 0, time.UTC)

// routeBox is the route's bounding box with a margin for great-circle
// bulge and noise.
func routeBox() (minLat, minLon, maxLat, maxLon float64) {
	minLat, minLon, maxLat, maxLon = 90, 180, -90, -180
	for _, w := range RotterdamNewYork {
		minLat, maxLat = math.Min(minLat, w.Lat), math.Max(maxLat, w.Lat)
		minLon, maxLon = math.Min(minLon, w.Lon), math.Max(maxLon, w.Lon)
	}
	const margin = 0.5
	return minLat - margin, minLon - margin, maxLat + margin, maxLon + margin
}

func inBox(p Waypoint) bool {
	a, b, c, d := routeBox()
	return p.Lat >= a && p.Lon >= b && p.Lat <= c && p.Lon <= d
}

func TestRouteLength(t *testing.T) {
	t.Parallel()
	r := NewRoute(1, routeT0)
	// Rotterdam–New York is about 3,400 nm by this lane.
	if l := r.LengthNM(); l < 3200 || l > 3600 {
		t.Errorf("LengthNM() = %.0f; want 3200–3600", l)
	}
	if d := distanceNM(Waypoint{0, 0}, Waypoint{1, 0}); math.Abs(d-60.04) > 0.1 {
		t.Errorf("distanceNM(1° of latitude) = %v; want ≈60", d)
	}
}

// TestRouteProgress sails the whole voyage in 10-minute steps: progress
// is monotonic at 18 kn, every position is in the box, and the ship
// leaves Rotterdam and reaches the Narrows.
func TestRouteProgress(t *testing.T) {
	t.Parallel()
	r := NewRoute(7, routeT0)
	voyage := time.Duration(r.LengthNM() / RouteSpeedKnots * float64(time.Hour))
	step := 10 * time.Minute
	first := RotterdamNewYork[0]
	last := RotterdamNewYork[len(RotterdamNewYork)-1]
	prevDistFromStart := -1.0
	corners := 0
	prev, _ := r.At(routeT0)
	if distanceNM(prev, first) > 0.01 {
		t.Fatalf("At(start) = %v; want Rotterdam %v", prev, first)
	}
	for tt := routeT0.Add(step); tt.Before(routeT0.Add(voyage)); tt = tt.Add(step) {
		p, course := r.At(tt)
		if !inBox(p) {
			t.Fatalf("At(%v) = %v outside the route box", tt, p)
		}
		moved := distanceNM(prev, p)
		want := RouteSpeedKnots * step.Hours()
		// At a waypoint the ship turns, so the chord is short there.
		if moved > want*1.001 || moved < want*0.8 {
			t.Fatalf("moved %.3f nm in %v at %v; want ≈%.3f (18 kn)", moved, step, tt, want)
		}
		if moved < want*0.999 {
			corners++
		}
		if course < 0 || course >= 360 {
			t.Fatalf("course %v out of range", course)
		}
		// Heading west overall: from the first waypoint we only go further.
		if d := distanceNM(first, p); d < prevDistFromStart-5 {
			t.Fatalf("At(%v) went backwards: %.1f nm from Rotterdam, was %.1f", tt, d, prevDistFromStart)
		} else {
			prevDistFromStart = math.Max(prevDistFromStart, d)
		}
		prev = p
	}
	if corners > len(RotterdamNewYork) {
		t.Errorf("%d short 10-minute steps; want at most one per waypoint", corners)
	}
	if p, _ := r.At(routeT0.Add(voyage)); distanceNM(p, last) > 0.1 {
		t.Errorf("At(arrival) = %v; want the Narrows %v", p, last)
	}
	// Then it sails back.
	if p, _ := r.At(routeT0.Add(2 * voyage)); distanceNM(p, first) > 0.1 {
		t.Errorf("At(2×voyage) = %v; want Rotterdam again", p)
	}
	// In mid-Atlantic the course is westerly.
	if _, c := r.At(routeT0.Add(voyage / 2)); c < 225 || c > 300 {
		t.Errorf("mid-Atlantic course = %.1f; want westerly", c)
	}
	if _, c := r.At(routeT0.Add(voyage * 3 / 2)); c < 45 || c > 120 {
		t.Errorf("return course = %.1f; want easterly", c)
	}
}

func TestIntermediateAndBearing(t *testing.T) {
	t.Parallel()
	tests := []struct {
		a, b    Waypoint
		f       float64
		want    Waypoint
		bearing float64
	}{
		{Waypoint{0, 0}, Waypoint{0, 10}, 0.5, Waypoint{0, 5}, 90},
		{Waypoint{0, 0}, Waypoint{10, 0}, 0.3, Waypoint{3, 0}, 0},
		{Waypoint{10, 0}, Waypoint{0, 0}, 1, Waypoint{0, 0}, 180},
		{Waypoint{0, 10}, Waypoint{0, 0}, 0, Waypoint{0, 10}, 270},
	}
	for _, tt := range tests {
		got := intermediate(tt.a, tt.b, tt.f)
		if math.Abs(got.Lat-tt.want.Lat) > 1e-9 || math.Abs(got.Lon-tt.want.Lon) > 1e-9 {
			t.Errorf("intermediate(%v, %v, %v) = %v; want %v", tt.a, tt.b, tt.f, got, tt.want)
		}
		if b := bearingDeg(tt.a, tt.b); math.Abs(b-tt.bearing) > 1e-9 {
			t.Errorf("bearingDeg(%v, %v) = %v; want %v", tt.a, tt.b, b, tt.bearing)
		}
	}
}
