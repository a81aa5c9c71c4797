package choose

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2ctest"

	"github.com/reefer/tracker/drivers"
	"github.com/reefer/tracker/drivers/bme280"
)

// The I²C traffic of a BME280 at addr being found, initialised (1x
// oversampling, as drivers/bme280 configures it) and read once. Calibration
// and data were recorded from a real device (periph's bmxx80 tests) and
// compensate to 23.72 °C.
func bmeOps(addr uint16) []i2ctest.IO {
	return []i2ctest.IO{
		{Addr: addr, W: []byte{0xD0}, R: []byte{0x60}},
		{Addr: addr, W: []byte{0xD0}, R: []byte{0x60}},
		{Addr: addr, W: []byte{0x88}, R: []byte{0x10, 0x6e, 0x6c, 0x66, 0x32, 0x0, 0x5d, 0x95, 0xb8, 0xd5, 0xd0, 0xb, 0x77, 0x1e, 0x9d, 0xff, 0xf9, 0xff, 0xac, 0x26, 0xa, 0xd8, 0xbd, 0x10, 0x0, 0x4b}},
		{Addr: addr, W: []byte{0xE1}, R: []byte{0x6e, 0x1, 0x0, 0x13, 0x5, 0x0, 0x1e}},
		{Addr: addr, W: []byte{0xF4, 0x24, 0xF2, 0x01, 0xF5, 0xA0, 0xF4, 0x24}},
		{Addr: addr, W: []byte{0xF4, 0x25}},
		{Addr: addr, W: []byte{0xF3}, R: []byte{0x00}},
		{Addr: addr, W: []byte{0xF7}, R: []byte{0x4a, 0x52, 0xc0, 0x80, 0x96, 0xc0, 0x7a, 0x76}},
	}
}

var errNACK = errors.New("sysfs-i2c: remote I/O error")

// fakeBus replays ops; transfers to addresses with no op NACK, like an
// empty socket on a real bus. It counts Close calls.
type fakeBus struct {
	i2ctest.Playback
	mu     sync.Mutex
	closed int
}

func (b *fakeBus) Tx(addr uint16, w, r []byte) error {
	b.Playback.Lock()
	empty := b.Count >= len(b.Ops) || b.Ops[b.Count].Addr != addr
	b.Playback.Unlock()
	if empty {
		return errNACK
	}
	return b.Playback.Tx(addr, w, r)
}

func (b *fakeBus) Close() error {
	b.mu.Lock()
	b.closed++
	b.mu.Unlock()
	return b.Playback.Close()
}

func (b *fakeBus) String() string { return "I2C1" }

func (b *fakeBus) closes() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// opener returns an EnvConfig.Open that hands out bus (or fails when bus is
// nil) and records the names asked for.
func opener(bus *fakeBus, names *[]string) func(string) (i2c.BusCloser, error) {
	return func(name string) (i2c.BusCloser, error) {
		*names = append(*names, name)
		if bus == nil {
			return nil, errors.New(`i2creg: can't open unknown bus: "` + name + `"`)
		}
		return bus, nil
	}
}

func testLogger() (*slog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	return slog.New(slog.NewTextHandler(&buf, nil)), &buf
}

var fixedNow = func() time.Time { return time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC) }

func TestEnvHardware(t *testing.T) {
	t.Parallel()
	for _, mode := range []drivers.Mode{drivers.HardwareOnly, drivers.Auto, ""} {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			bus := &fakeBus{Playback: i2ctest.Playback{Ops: bmeOps(0x77), DontPanic: true}}
			var names []string
			log, buf := testLogger()
			s, err := Env(context.Background(), EnvConfig{Mode: mode, Bus: "/dev/i2c-1", Open: opener(bus, &names), Now: fixedNow}, log)
			if err != nil {
				t.Fatalf("Env(%q) error = %v", mode, err)
			}
			if len(names) != 1 || names[0] != "/dev/i2c-1" {
				t.Errorf("Env opened buses %q; want [\"/dev/i2c-1\"]", names)
			}
			e, err := s.Sense(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if e.Source != drivers.Hardware || e.Chip != "BME280" || e.TemperatureC != 23.72 {
				t.Errorf("Sense() = %s %s %.2f °C; want hardware BME280 23.72 °C", e.Source, e.Chip, e.TemperatureC)
			}
			if src := EnvSource(s); src != drivers.Hardware {
				t.Errorf("EnvSource() = %q; want hardware", src)
			}
			if strings.Contains(buf.String(), "level=WARN") {
				t.Errorf("hardware found but logged a warning:\n%s", buf)
			}
			if err := s.Close(); err != nil {
				t.Fatalf("Close() = %v (playback checks all ops were used)", err)
			}
			if err := s.Close(); err != nil {
				t.Errorf("second Close() = %v; want nil", err)
			}
			if n := bus.closes(); n != 1 {
				t.Errorf("bus closed %d times; want 1", n)
			}
		})
	}
}

func TestEnvHardwareMissing(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		bus     *fakeBus // nil: the bus does not open
		busName string
		addr    uint16
		wantErr error
		wantMsg string
	}{
		{name: "no bus", busName: "7", wantErr: ErrNoI2CBus, wantMsg: `env sensor: no I2C bus "7": /dev/i2c-7 does not exist: enable I2C (raspi-config nonint do_i2c 0)`},
		{name: "no default bus", wantErr: ErrNoI2CBus, wantMsg: "no I2C bus (first available)"},
		{name: "no chip", bus: &fakeBus{Playback: i2ctest.Playback{DontPanic: true}},
			wantErr: bme280.ErrNotFound, wantMsg: "bme280 on I2C1 at 0x76 or 0x77: no device answered"},
		{name: "no chip at configured address", addr: 0x76,
			bus:     &fakeBus{Playback: i2ctest.Playback{Ops: bmeOps(0x77), DontPanic: true}},
			wantErr: bme280.ErrNotFound, wantMsg: "bme280 on I2C1 at 0x76: no device answered"},
		{name: "wrong chip", bus: &fakeBus{Playback: i2ctest.Playback{
			Ops: []i2ctest.IO{{Addr: 0x76, W: []byte{0xD0}, R: []byte{0x55}}}, DontPanic: true}},
			wantErr: bme280.ErrWrongChip, wantMsg: "id 0x55"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var names []string
			s, err := Env(context.Background(), EnvConfig{Mode: drivers.HardwareOnly, Bus: tt.busName, Addr: tt.addr, Open: opener(tt.bus, &names)}, nil)
			if s != nil || !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("Env(hardware) = %v, %v; want errors.Is %v containing %q", s, err, tt.wantErr, tt.wantMsg)
			}
			if tt.bus != nil && tt.bus.closes() != 1 {
				t.Errorf("bus closed %d times after failed probe; want 1", tt.bus.closes())
			}
		})
	}
}

// periph's advice to its programmer never reaches a technician: a board
// without any I2C bus gets the fix instead.
func TestEnvNoBusAtAllSaysHowToEnableI2C(t *testing.T) {
	t.Parallel()
	open := func(string) (i2c.BusCloser, error) {
		return nil, errors.New("i2creg: no bus found; did you forget to call Init()?")
	}
	_, err := Env(context.Background(), EnvConfig{Mode: drivers.HardwareOnly, Open: open}, nil)
	if !errors.Is(err, ErrNoI2CBus) || strings.Contains(err.Error(), "Init()") ||
		!strings.Contains(err.Error(), "/dev/i2c-* does not exist: enable I2C (raspi-config nonint do_i2c 0) and reboot") {
		t.Errorf("Env with no bus at all = %v; want ErrNoI2CBus saying how to enable I2C, without periph's Init() hint", err)
	}
	// Other bus errors (permissions) pass through with their cause.
	open = func(string) (i2c.BusCloser, error) { return nil, os.ErrPermission }
	if _, err := Env(context.Background(), EnvConfig{Mode: drivers.HardwareOnly, Bus: "1", Open: open}, nil); !errors.Is(err, os.ErrPermission) {
		t.Errorf("Env with a permission error = %v; want it wrapped", err)
	}
}

func TestEnvAutoFallsBack(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		bus     *fakeBus
		wantLog string
	}{
		{name: "no bus", wantLog: "no I2C bus (first available)"},
		{name: "no chip", bus: &fakeBus{Playback: i2ctest.Playback{DontPanic: true}}, wantLog: "at 0x76 or 0x77: no device answered"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var names []string
			log, buf := testLogger()
			s, err := Env(context.Background(), EnvConfig{Mode: drivers.Auto, Open: opener(tt.bus, &names), Seed: 3, Now: fixedNow}, log)
			if err != nil {
				t.Fatalf("Env(auto) error = %v; want simulator fallback", err)
			}
			defer s.Close()
			e, err := s.Sense(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if e.Source != drivers.Simulated || !e.Time.Equal(fixedNow()) {
				t.Errorf("fallback Sense() source %q time %v; want simulated at %v", e.Source, e.Time, fixedNow())
			}
			if src := EnvSource(s); src != drivers.Simulated {
				t.Errorf("EnvSource() = %q after the fallback; want simulated", src)
			}
			out := buf.String()
			if !strings.Contains(out, "level=WARN") || !strings.Contains(out, tt.wantLog) {
				t.Errorf("log = %q; want a WARN naming %q", out, tt.wantLog)
			}
			if tt.bus != nil && tt.bus.closes() != 1 {
				t.Errorf("bus closed %d times after fallback; want 1", tt.bus.closes())
			}
		})
	}
}

func TestEnvSimulated(t *testing.T) {
	t.Parallel()
	log, buf := testLogger()
	open := func(string) (i2c.BusCloser, error) {
		t.Error("simulated mode opened an I2C bus")
		return nil, errors.New("unexpected")
	}
	s, err := Env(context.Background(), EnvConfig{Mode: drivers.SimulatedOnly, Open: open, Seed: 11, Now: fixedNow}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e, err := s.Sense(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if e.Source != drivers.Simulated || EnvSource(s) != drivers.Simulated {
		t.Errorf("Sense() source = %q, EnvSource() = %q; want simulated", e.Source, EnvSource(s))
	}
	// The seed reaches the simulator: same seed, same first reading.
	s2, _ := Env(context.Background(), EnvConfig{Mode: drivers.SimulatedOnly, Seed: 11, Now: fixedNow}, nil)
	defer s2.Close()
	if e2, _ := s2.Sense(context.Background()); e2.TemperatureC != e.TemperatureC || e2.PressureHPa != e.PressureHPa {
		t.Errorf("two simulators with seed 11 differ: %+v vs %+v", e, e2)
	}
	if out := buf.String(); !strings.Contains(out, "level=INFO") || !strings.Contains(out, "simulated") || strings.Contains(out, "level=WARN") {
		t.Errorf("log = %q; want one INFO saying simulated, no WARN", out)
	}
}

func TestEnvBadMode(t *testing.T) {
	t.Parallel()
	_, err := Env(context.Background(), EnvConfig{Mode: "hardwre"}, nil)
	var me *drivers.ModeError
	if !errors.As(err, &me) || me.Value != "hardwre" {
		t.Errorf("Env(mode %q) error = %v; want *drivers.ModeError", "hardwre", err)
	}
}
