package sensors

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/reefer/tracker/drivers"
	"github.com/reefer/tracker/drivers/choose"
	"github.com/reefer/tracker/drivers/gps"
	"github.com/reefer/tracker/firmware/config"
	"github.com/reefer/tracker/internal/faketime"
	"github.com/reefer/tracker/internal/waitfor"
)

// fakeEnv is a chip whose reads fail while failing is set.
type fakeEnv struct {
	mu      sync.Mutex
	failing error
	closed  bool
}

func (f *fakeEnv) Sense(context.Context) (drivers.Env, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failing != nil {
		return drivers.Env{}, f.failing
	}
	return drivers.Env{TemperatureC: 4, PressureHPa: 1013, Source: drivers.Hardware, Chip: "BME280"}, nil
}

func (f *fakeEnv) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

// envBus opens chips like choose.Env would: an error while the bus is
// missing, a fresh chip once it is there.
type envBus struct {
	mu      sync.Mutex
	missing error
	opens   int
	chips   []*fakeEnv
}

func (b *envBus) open(context.Context) (drivers.EnvSensor, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.opens++
	if b.missing != nil {
		return nil, b.missing
	}
	c := &fakeEnv{}
	b.chips = append(b.chips, c)
	return c, nil
}

func (b *envBus) set(err error) {
	b.mu.Lock()
	b.missing = err
	b.mu.Unlock()
}

func (b *envBus) attempts() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.opens
}

// A bus missing at start: readings fail at once with the reason, opens are
// retried on a doubling schedule, and readings resume when it appears.
func TestReopeningEnvMissingAtStartThenBack(t *testing.T) {
	t.Parallel()
	clock := faketime.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	noBus := fmt.Errorf("env sensor: %w \"1\": /dev/i2c-1 does not exist", choose.ErrNoI2CBus)
	bus := &envBus{missing: noBus}
	e := NewReopeningEnv(context.Background(), bus.open, ReopenOptions{Min: time.Second, Max: 4 * time.Second, Now: clock.Now}, nil)
	ctx := context.Background()

	_, err := e.Sense(ctx)
	if !errors.Is(err, ErrMissing) || !errors.Is(err, choose.ErrNoI2CBus) || !errors.Is(e.Err(), choose.ErrNoI2CBus) {
		t.Fatalf("Sense with no bus = %v; want ErrMissing wrapping ErrNoI2CBus", err)
	}
	if n := bus.attempts(); n != 1 {
		t.Fatalf("open attempts = %d before the retry is due; want 1", n)
	}
	// Retries at 1 s, then 2 s, then 4 s, 4 s (capped).
	for i, wait := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
		clock.Advance(wait - time.Millisecond)
		e.Sense(ctx)
		if n := bus.attempts(); n != i+1 {
			t.Fatalf("open attempts = %d just before retry %d is due; want %d", n, i+1, i+1)
		}
		clock.Advance(time.Millisecond)
		e.Sense(ctx)
		if n := bus.attempts(); n != i+2 {
			t.Fatalf("open attempts = %d when retry %d is due (after %v); want %d", n, i+1, wait, i+2)
		}
	}
	bus.set(nil)
	clock.Advance(4 * time.Second)
	if r, err := e.Sense(ctx); err != nil || r.Chip != "BME280" || e.Err() != nil {
		t.Fatalf("Sense after the bus appeared = %+v, %v (Err %v); want a reading", r, err, e.Err())
	}
}

// A chip that stops answering is closed after DeadAfter failed reads in a
// row (one glitch is not enough) and opened again when it answers.
func TestReopeningEnvDeadChipReopened(t *testing.T) {
	t.Parallel()
	clock := faketime.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	bus := &envBus{}
	e := NewReopeningEnv(context.Background(), bus.open, ReopenOptions{Min: time.Second, DeadAfter: 3, Now: clock.Now}, nil)
	ctx := context.Background()
	chip := bus.chips[0]
	ioErr := errors.New("bme280: read: i/o error")

	chip.mu.Lock()
	chip.failing = ioErr
	chip.mu.Unlock()
	for i := 1; i <= 2; i++ {
		if _, err := e.Sense(ctx); !errors.Is(err, ioErr) || errors.Is(err, ErrMissing) {
			t.Fatalf("failed read %d = %v; want the read error, not yet missing", i, err)
		}
	}
	if _, err := e.Sense(ctx); !errors.Is(err, ErrMissing) || !strings.Contains(err.Error(), "3 reads in a row failed") {
		t.Fatalf("third failed read = %v; want ErrMissing after 3 reads in a row", err)
	}
	chip.mu.Lock()
	closed := chip.closed
	chip.mu.Unlock()
	if !closed {
		t.Error("dead chip not closed")
	}
	clock.Advance(time.Second)
	if r, err := e.Sense(ctx); err != nil || r.Chip != "BME280" || bus.attempts() != 2 {
		t.Fatalf("Sense after the reopen = %+v, %v with %d opens; want a reading from a second open", r, err, bus.attempts())
	}
}

// gpsTalker stands in for a serial GPS on a pseudo-terminal that can be
// unplugged: it sends RMC+GGA every 20 ms until unplug.
type gpsTalker struct {
	m, s *os.File
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

func nmea(body string) string {
	var sum byte
	for i := 0; i < len(body); i++ {
		sum ^= body[i]
	}
	return fmt.Sprintf("$%s*%02X\r\n", body, sum)
}

func plugGPS(t *testing.T) *gpsTalker {
	t.Helper()
	m, s, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	// Raw mode before anything is written (see drivers/choose's tests).
	rc, err := gps.OpenSerial(s.Name(), 9600)
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	g := &gpsTalker{m: m, s: s, stop: make(chan struct{})}
	g.wg.Go(func() {
		for {
			now := time.Now().UTC()
			hms, date := now.Format("150405.00"), now.Format("020106")
			if _, err := m.Write([]byte(nmea("GPRMC,"+hms+",A,4030.0000,N,07345.0000,W,0.1,0.0,"+date+",,,A") +
				nmea("GPGGA,"+hms+",4030.0000,N,07345.0000,W,1,09,0.8,5.0,M,-34.0,M,,"))); err != nil {
				return
			}
			select {
			case <-g.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	t.Cleanup(g.unplug)
	return g
}

func (g *gpsTalker) unplug() {
	g.once.Do(func() {
		close(g.stop)
		g.m.Close()
		g.wg.Wait()
		g.s.Close()
	})
}

// In hardware mode a GPS port missing at start does not fail the open: the
// receiver reports why, picks the port up when it appears, and reports
// again when it goes (a USB receiver unplugged).
func TestHardwareGPSPortAppearsAndDisappears(t *testing.T) {
	t.Parallel()
	port := filepath.Join(t.TempDir(), "ttyGPS")
	c := config.GPSSensor{Mode: drivers.HardwareOnly, Port: port, Baud: 9600}
	g, err := OpenGPS(context.Background(), c, Options{KeepTrying: true, GPSProbeTimeout: 200 * time.Millisecond}, nil)
	if err != nil {
		t.Fatalf("OpenGPS(hardware, missing port, KeepTrying) = %v; want a receiver that keeps trying", err)
	}
	defer g.Close()
	if g.Source() != drivers.Hardware {
		t.Errorf("source %q; want hardware (never the simulator in hardware mode)", g.Source())
	}
	waitfor.Until(t, "the missing port reported", 10*time.Second, 10*time.Millisecond, func() bool {
		return strings.Contains(g.Problem(), "no such file or directory")
	})

	talker := plugGPS(t)
	if err := os.Symlink(talker.s.Name(), port); err != nil {
		t.Fatal(err)
	}
	waitfor.Until(t, "a fix once the port appeared", 30*time.Second, 10*time.Millisecond, func() bool {
		_, ok := g.Latest()
		return ok && g.Problem() == ""
	})

	talker.unplug()
	os.Remove(port)
	waitfor.Until(t, "the vanished port reported", 30*time.Second, 10*time.Millisecond, func() bool {
		return g.Problem() != ""
	})
	t.Logf("after unplugging: %s", g.Problem())
}

// Without KeepTrying (tracker sensors --hardware, doctor) a missing port is
// still an error naming it.
func TestHardwareGPSMissingPortIsAnErrorWithoutKeepTrying(t *testing.T) {
	t.Parallel()
	port := filepath.Join(t.TempDir(), "ttyGPS")
	_, err := OpenGPS(context.Background(), config.GPSSensor{Mode: drivers.HardwareOnly, Port: port}, Options{}, nil)
	if err == nil || !strings.Contains(err.Error(), port) {
		t.Errorf("OpenGPS = %v; want an error naming %s", err, port)
	}
}

// A GPS port that opens but stays silent is missing too, with the reason.
func TestHardwareGPSSilentPortIsMissing(t *testing.T) {
	t.Parallel()
	m, s, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	defer m.Close()
	defer s.Close()
	clock := faketime.NewClock(time.Now())
	c := config.GPSSensor{Mode: drivers.HardwareOnly, Port: s.Name(), Baud: 9600}
	g, err := OpenGPS(context.Background(), c, Options{KeepTrying: true, GPSProbeTimeout: 100 * time.Millisecond,
		Reopen: ReopenOptions{GPSSilence: 15 * time.Second, Now: clock.Now}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	waitfor.Until(t, "the port open", 10*time.Second, 10*time.Millisecond, func() bool { return g.Stats().Connected })
	if p := g.Problem(); p != "" {
		t.Errorf("Problem right after opening = %q; want none yet", p)
	}
	clock.Advance(20 * time.Second)
	// The receiver stamps OpenedAt with the real clock; the check uses the
	// injected one, 20 s later.
	if p := g.Problem(); !strings.Contains(p, "no NMEA on "+s.Name()) {
		t.Errorf("Problem after 20 s of silence = %q; want no NMEA on the port", p)
	}
}
