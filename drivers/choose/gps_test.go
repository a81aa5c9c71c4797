package choose_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	"github.com/reefer/tracker/internal/syncbuf"
)

// gpsFrame wraps an NMEA body as "$body*XX\r\n".
func gpsFrame(body string) string {
	var sum byte
	for i := 0; i < len(body); i++ {
		sum ^= body[i]
	}
	return fmt.Sprintf("$%s*%02X\r\n", body, sum)
}

// gpsPTY makes a pseudo-terminal standing in for a serial GPS. When talk
// is set, a goroutine plays a module fixed at 40°30'N 073°45'W, sending
// RMC+GGA every 20 ms until the test ends.
func gpsPTY(t *testing.T, talk bool) string {
	t.Helper()
	m, s, err := pty.Open()
	if err != nil {
		t.Fatalf("pty.Open: %v", err)
	}
	path := s.Name()
	// Opening once through go.bug.st/serial puts the tty in raw mode
	// (no echo, no CR mangling) before anything is written.
	rc, err := gps.OpenSerial(path, 9600)
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() {
		close(stop)
		m.Close() // unblocks a writer stuck on a full tty buffer
		wg.Wait()
		s.Close()
	})
	if talk {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				now := time.Now().UTC()
				hms, date := now.Format("150405.00"), now.Format("020106")
				burst := gpsFrame("GPRMC,"+hms+",A,4030.0000,N,07345.0000,W,0.1,0.0,"+date+",,,A") +
					gpsFrame("GPGGA,"+hms+",4030.0000,N,07345.0000,W,1,09,0.8,5.0,M,-34.0,M,,")
				if _, err := m.Write([]byte(burst)); err != nil {
					return
				}
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		}()
	}
	return path
}

// runGPS runs rx until the test ends and waits for a fix.
func runGPS(t *testing.T, rx *gps.Receiver) gps.Fix {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rx.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
	// Wait for a fix merged from both sentences of a burst: right after an
	// RMC the fix exists without the GGA's satellites (slow machines, qemu
	// in CI, can be caught in between).
	deadline := time.Now().Add(5 * time.Second)
	var last gps.Fix
	for time.Now().Before(deadline) {
		if f, ok := rx.Latest(); ok {
			if f.Satellites > 0 {
				return f
			}
			last = f
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !last.Time.IsZero() {
		return last
	}
	t.Fatalf("no fix; stats %+v", rx.Stats())
	return gps.Fix{}
}

func TestGPSChoice(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		mode     drivers.Mode
		port     string // "talk", "silent" or "missing"
		want     drivers.Source
		wantErr  string // substring; "" = no error
		wantWarn string // substring of a WARN line; "" = no WARN
	}{
		{"hardware with NMEA", drivers.HardwareOnly, "talk", drivers.Hardware, "", ""},
		{"hardware port missing", drivers.HardwareOnly, "missing", "", "ttyGPS", ""},
		{"hardware silent port", drivers.HardwareOnly, "silent", "", "no NMEA", ""},
		{"auto with NMEA", drivers.Auto, "talk", drivers.Hardware, "", ""},
		{"auto empty mode", "", "talk", drivers.Hardware, "", ""},
		{"auto port missing", drivers.Auto, "missing", drivers.Simulated, "", "ttyGPS"},
		{"auto silent port", drivers.Auto, "silent", drivers.Simulated, "", "no NMEA"},
		{"simulated ignores hardware", drivers.SimulatedOnly, "talk", drivers.Simulated, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var port string
			switch tt.port {
			case "talk":
				port = gpsPTY(t, true)
			case "silent":
				port = gpsPTY(t, false)
			default:
				port = filepath.Join(t.TempDir(), "ttyGPS")
			}
			var logs syncbuf.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			rx, err := choose.GPS(context.Background(), choose.GPSConfig{
				Mode: tt.mode, Port: port, Seed: 1, ProbeTimeout: 300 * time.Millisecond,
			}, log)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || rx != nil {
					t.Fatalf("GPS(%s, %s) = %v, %v; want error containing %q", tt.mode, tt.port, rx, err, tt.wantErr)
				}
				if tt.port == "silent" && !errors.Is(err, gps.ErrNoNMEA) {
					t.Errorf("GPS error %v; want gps.ErrNoNMEA", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("GPS(%s, %s) = %v", tt.mode, tt.port, err)
			}
			if rx.Source() != tt.want {
				t.Errorf("GPS(%s, %s) source = %s; want %s", tt.mode, tt.port, rx.Source(), tt.want)
			}
			warned := false
			for _, line := range strings.Split(logs.String(), "\n") {
				if strings.Contains(line, "level=WARN") {
					warned = true
					if tt.wantWarn == "" || !strings.Contains(line, tt.wantWarn) {
						t.Errorf("WARN %q; want one containing %q", line, tt.wantWarn)
					}
				}
			}
			if tt.wantWarn != "" && !warned {
				t.Errorf("no WARN logged; want one containing %q:\n%s", tt.wantWarn, logs.String())
			}
			f := runGPS(t, rx)
			if f.Source != tt.want {
				t.Errorf("fix source = %s; want %s", f.Source, tt.want)
			}
			if tt.want == drivers.Hardware {
				if f.Latitude != 40.5 || f.Longitude != -73.75 || f.Satellites != 9 {
					t.Errorf("fix = %+v; want the pty module's 40.5,-73.75 with 9 satellites", f)
				}
				// The probed port is handed over, not opened twice.
				if s := rx.Stats(); s.Opens != 1 || s.OpenFailures != 0 {
					t.Errorf("stats = %+v; want 1 open, no failures", s)
				}
			} else if f.Latitude < 40 || f.Latitude > 53 || f.Longitude < -75 || f.Longitude > 5 {
				t.Errorf("simulated fix %v,%v off the North Atlantic route", f.Latitude, f.Longitude)
			}
		})
	}
}

func TestGPSBadMode(t *testing.T) {
	t.Parallel()
	_, err := choose.GPS(context.Background(), choose.GPSConfig{Mode: "radio"}, nil)
	var me *drivers.ModeError
	if !errors.As(err, &me) || me.Value != "radio" {
		t.Errorf("GPS(mode radio) = %v; want *drivers.ModeError", err)
	}
}

func TestGPSDefaultPort(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat(choose.DefaultGPSPort); err == nil {
		t.Skipf("%s exists on this machine", choose.DefaultGPSPort)
	}
	_, err := choose.GPS(context.Background(), choose.GPSConfig{Mode: drivers.HardwareOnly}, nil)
	if err == nil || !strings.Contains(err.Error(), choose.DefaultGPSPort) {
		t.Errorf("GPS(hardware, default port) = %v; want error naming %s", err, choose.DefaultGPSPort)
	}
}
