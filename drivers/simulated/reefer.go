package simulated

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/reefer/tracker/drivers"
)

// ReeferChip is the Chip name on readings from a Reefer.
const ReeferChip = "simulated-reefer"

// Model constants. Times are in seconds, the model's integration unit.
const (
	reeferStep = time.Second // integration step; the model advances on this grid

	reeferSetpointC = 4.0   // chilled cargo (fruit, dairy)
	reeferCtrlTau   = 600.0 // closed-door control wander: relaxation time…
	reeferCtrlStd   = 0.2   // …and stationary spread in °C
	reeferPullTau   = 300.0 // after a door closes, refrigeration pulls back with this time constant

	reeferDoorMean   = 6 * 3600.0 // mean time between door openings (Poisson)
	reeferDoorMin    = 180.0      // door open for 3…8 minutes
	reeferDoorMax    = 480.0
	reeferDoorTau    = 480.0 // with the door open, air heads to ambient with this time constant
	reeferAmbientMin = 18.0  // ambient at the dock, drawn per opening
	reeferAmbientMax = 32.0

	reeferRHMean = 90.0
	reeferRHTau  = 1800.0
	reeferRHStd  = 1.5
	reeferRHDoor = 86.0 // drier dock air pulls humidity toward this while open
	reeferRHMin  = 85.0
	reeferRHMax  = 95.0

	reeferHPaMean     = 1013.25
	reeferHPaInitStd  = 6.0
	reeferHPaRestore  = 3 * 86400.0 // weather returns to the mean over days
	reeferTrendTau    = 6 * 3600.0  // pressure tendency (hPa/s) changes over hours
	reeferTrendStdHPh = 0.4         // stationary spread of the tendency, hPa per hour

	// Sensor noise added per reading, like a BME280 at 1x oversampling.
	reeferNoiseC   = 0.03
	reeferNoiseHPa = 0.05
	reeferNoiseRH  = 0.3

	// A clock that jumps far ahead (NTP fixing a board that booted in 1970)
	// is not worth simulating step by step: only this much is integrated.
	reeferMaxCatchUp = time.Hour
)

// Reefer simulates the air inside a refrigerated container: the controller
// holds about 4 °C, a door opening every few hours lets the air warm toward
// ambient for a few minutes before the unit pulls it back down, humidity
// stays at 85–95 %RH and pressure follows slow weather.
//
// The model advances on a fixed one-second grid of the injected clock, with
// its own random stream, so its state at a given time does not depend on how
// often it is read. Sensor noise comes from a second stream, per reading.
type Reefer struct {
	now func() time.Time

	mu     sync.Mutex
	model  *rand.Rand // drives the physical process
	noise  *rand.Rand // drives per-reading sensor noise
	closed bool

	started bool
	simT    time.Time // the model state below is valid at simT

	airC       float64 // true air temperature
	doorLeft   float64 // seconds the door stays open; 0 = closed
	ambientC   float64 // ambient for the current opening
	rh         float64
	hPa        float64
	trendHPaPS float64 // pressure tendency, hPa per second
	openings   int     // door openings so far, for tests and logs
}

var _ drivers.EnvSensor = (*Reefer)(nil)

// NewReefer returns a simulator seeded by seed. now is its clock (time.Now
// if nil); the first Sense anchors the model at now().
func NewReefer(seed int64, now func() time.Time) *Reefer {
	if now == nil {
		now = time.Now
	}
	s := uint64(seed)
	return &Reefer{
		now: now,
		// Distinct stream constants keep the two sequences independent.
		model: rand.New(rand.NewPCG(s, 0x7265_6566_6572_6d6f)), // "reefermo"
		noise: rand.New(rand.NewPCG(s, 0x7265_6566_6e6f_6973)), // "reefnois"
	}
}

// Sense advances the model to now() and returns a noisy reading of it.
func (r *Reefer) Sense(ctx context.Context) (drivers.Env, error) {
	if err := ctx.Err(); err != nil {
		return drivers.Env{}, fmt.Errorf("simulated reefer: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return drivers.Env{}, errors.New("simulated reefer: closed")
	}
	now := r.now()
	r.advance(now)

	rh := reeferClamp(r.rh+r.noise.NormFloat64()*reeferNoiseRH, reeferRHMin, reeferRHMax)
	return drivers.Env{
		Time:         now,
		TemperatureC: reeferRound(r.airC+r.noise.NormFloat64()*reeferNoiseC, 100),
		PressureHPa:  reeferRound(r.hPa+r.noise.NormFloat64()*reeferNoiseHPa, 100),
		HumidityRH:   &rh,
		Source:       drivers.Simulated,
		Chip:         ReeferChip,
	}, nil
}

// OpenDoor opens the door now for d with ambientC outside, as if the
// crew opened it at a dock: the air warms toward ambientC, and after d
// the unit pulls it back down. Demos and tests drive an excursion with it.
func (r *Reefer) OpenDoor(d time.Duration, ambientC float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.advance(r.now())
	r.openings++
	r.doorLeft, r.ambientC = d.Seconds(), ambientC
}

// Close stops the simulator; later Sense calls fail.
func (r *Reefer) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	return nil
}

// advance integrates the model from simT up to now in whole steps.
func (r *Reefer) advance(now time.Time) {
	if !r.started {
		r.started = true
		r.simT = now
		r.airC = reeferSetpointC + r.model.NormFloat64()*reeferCtrlStd
		r.rh = reeferRHMean + r.model.NormFloat64()*reeferRHStd
		r.hPa = reeferHPaMean + r.model.NormFloat64()*reeferHPaInitStd
		r.trendHPaPS = r.model.NormFloat64() * reeferTrendStdHPh / 3600
		return
	}
	elapsed := now.Sub(r.simT)
	if elapsed < 0 {
		// The clock went backwards: keep the state, re-anchor the grid.
		r.simT = now
		return
	}
	if elapsed > reeferMaxCatchUp {
		skip := (elapsed - reeferMaxCatchUp).Truncate(reeferStep)
		r.simT = r.simT.Add(skip)
	}
	for !r.simT.Add(reeferStep).After(now) {
		r.step(reeferStep.Seconds())
		r.simT = r.simT.Add(reeferStep)
	}
}

// step advances the model by dt seconds. Each stochastic term is an
// Ornstein–Uhlenbeck update: x += -(x-mean)/tau*dt + std*sqrt(2*dt/tau)*N(0,1).
func (r *Reefer) step(dt float64) {
	m := r.model
	ou := func(x, mean, tau, std float64) float64 {
		return x - (x-mean)/tau*dt + std*math.Sqrt(2*dt/tau)*m.NormFloat64()
	}

	// Door: Poisson openings while closed.
	if r.doorLeft <= 0 && m.Float64() < dt/reeferDoorMean {
		r.openings++
		r.doorLeft = reeferDoorMin + m.Float64()*(reeferDoorMax-reeferDoorMin)
		r.ambientC = reeferAmbientMin + m.Float64()*(reeferAmbientMax-reeferAmbientMin)
	}

	switch {
	case r.doorLeft > 0:
		// Warm dock air flows in.
		r.airC += (r.ambientC - r.airC) / reeferDoorTau * dt
		r.rh += (reeferRHDoor - r.rh) / reeferRHTau * 4 * dt
		r.doorLeft -= dt
	case r.airC-reeferSetpointC > 3*reeferCtrlStd:
		// Well above setpoint: the unit runs flat out to pull the air down.
		r.airC += (reeferSetpointC - r.airC) / reeferPullTau * dt
		r.rh = ou(r.rh, reeferRHMean, reeferRHTau, reeferRHStd)
	default:
		// Normal control: small wander around the setpoint.
		r.airC = ou(r.airC, reeferSetpointC, reeferCtrlTau, reeferCtrlStd)
		r.rh = ou(r.rh, reeferRHMean, reeferRHTau, reeferRHStd)
	}
	r.rh = reeferClamp(r.rh, reeferRHMin, reeferRHMax)

	// Weather: the tendency wanders, pressure follows it and slowly returns
	// to the mean, which keeps the curve smooth over minutes.
	r.trendHPaPS = ou(r.trendHPaPS, 0, reeferTrendTau, reeferTrendStdHPh/3600)
	r.hPa += (r.trendHPaPS - (r.hPa-reeferHPaMean)/reeferHPaRestore) * dt
}

func reeferClamp(x, lo, hi float64) float64 { return math.Min(math.Max(x, lo), hi) }

// reeferRound keeps the reading at the resolution a real sensor reports.
func reeferRound(x, scale float64) float64 { return math.Round(x*scale) / scale }
