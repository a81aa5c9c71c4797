package emulator

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/reefer/tracker/deploy/emulator/pki"
	"github.com/reefer/tracker/deploy/emulator/store"
)

// BenchmarkTelemetryConnectedDevices measures the emulator with many
// devices connected at once (AZEMU_BENCH_DEVICES, default 10000): the time
// to connect them all, the emulator's memory per connection, and QoS 1
// telemetry throughput (one op = one message, PUBACK received) spread over
// every connection. The devices run in a helper process because one
// process cannot hold both ends of 10,000 TLS connections under a 20,000
// file limit.
//
//	go test -run '^$' -bench TelemetryConnectedDevices -benchtime 20000x ./deploy/emulator/
func BenchmarkTelemetryConnectedDevices(b *testing.B) {
	env := benchSetup(b)
	b.ResetTimer()
	start := time.Now()
	if err := env.command(fmt.Sprintf("publish %d", b.N)); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	// ResetTimer drops user metrics, so the setup figures go in here.
	b.ReportMetric(env.connectSec, "connect-s")
	b.ReportMetric(env.bytesPerConn, "B/conn")
	b.ReportMetric(env.goroutinesPerConn, "goroutines/conn")
	if got := len(env.e.Telemetry(env.e.HubHost(0), "bench-00000")); got == 0 && b.N >= env.n {
		b.Fatal("no telemetry recorded for bench-00000")
	}
}

type benchEnv struct {
	e                 *Emulator
	n                 int
	in                io.Writer
	out               *bufio.Scanner
	mu                sync.Mutex
	connectSec        float64
	bytesPerConn      float64
	goroutinesPerConn float64
}

var (
	benchOnce sync.Once
	benchVal  *benchEnv
	benchErr  error
)

func (env *benchEnv) command(cmd string) error {
	env.mu.Lock()
	defer env.mu.Unlock()
	if _, err := fmt.Fprintln(env.in, cmd); err != nil {
		return err
	}
	for env.out.Scan() {
		line := env.out.Text()
		if line == "ok" {
			return nil
		}
		if strings.HasPrefix(line, "error ") {
			return errors.New(line)
		}
	}
	return fmt.Errorf("helper exited: %v", env.out.Err())
}

// benchSetup starts one emulator and one load helper for every round of
// the benchmark; both live until the test binary exits.
func benchSetup(b *testing.B) *benchEnv {
	benchOnce.Do(func() { benchVal, benchErr = newBenchEnv() })
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return benchVal
}

func newBenchEnv() (*benchEnv, error) {
	n := 10000
	if v := os.Getenv("AZEMU_BENCH_DEVICES"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	dir, err := os.MkdirTemp("", "azemu-bench-")
	if err != nil {
		return nil, err
	}
	e, err := New(Config{DataDir: filepath.Join(dir, "data"), MQTTAddr: "127.0.0.1:0", HTTPSAddr: "-", NoSync: true, Logger: testLogger()})
	if err != nil {
		return nil, err
	}
	if err := e.Start(context.Background()); err != nil {
		return nil, err
	}
	// Every device shares one self-signed certificate; each identity
	// holds its thumbprint. The TLS and MQTT work per connection is
	// the same as with distinct certificates.
	cert, err := pki.NewSelfSigned("bench", pki.Options{})
	if err != nil {
		return nil, err
	}
	if err := cert.WriteFiles(filepath.Join(dir, "dev.pem"), filepath.Join(dir, "dev.key")); err != nil {
		return nil, err
	}
	tp := store.ThumbprintSHA256(cert.Cert)
	for i := 0; i < n; i++ {
		if _, err := e.store.PutDevice(e.HubHost(0), store.Device{DeviceID: fmt.Sprintf("bench-%05d", i),
			Authentication: store.AuthenticationMechanism{Type: store.AuthSelfSigned, X509Thumbprint: store.X509Thumbprint{PrimaryThumbprint: &tp}}}, ""); err != nil {
			return nil, err
		}
	}
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	g0 := runtime.NumGoroutine()

	cmd := exec.Command(os.Args[0], "-test.run=^TestBenchLoadHelper$")
	cmd.Env = append(os.Environ(), "AZEMU_BENCH_HELPER=1", "AZEMU_BENCH_DIR="+dir,
		"AZEMU_BENCH_ADDR="+e.Info().Hubs[0].MQTTAddress, "AZEMU_BENCH_HOST="+e.HubHost(0),
		"AZEMU_BENCH_CA="+e.Info().CACertPath, "AZEMU_BENCH_N="+strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, _ := cmd.StdinPipe()
	outR, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	env := &benchEnv{e: e, n: n, in: in, out: bufio.NewScanner(outR)}
	start := time.Now()
	if err := env.command("connect"); err != nil {
		return nil, fmt.Errorf("connect %d devices: %w", n, err)
	}
	env.connectSec = time.Since(start).Seconds()
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	env.bytesPerConn = float64(int64(after.HeapInuse+after.StackInuse)-int64(before.HeapInuse+before.StackInuse)) / float64(n)
	env.goroutinesPerConn = float64(runtime.NumGoroutine()-g0) / float64(n)
	return env, nil
}

// TestBenchLoadHelper is the device side of the benchmark, run in a child
// process; it does nothing in a normal test run.
func TestBenchLoadHelper(t *testing.T) {
	if os.Getenv("AZEMU_BENCH_HELPER") == "" {
		t.Skip("helper process for BenchmarkTelemetryConnectedDevices")
	}
	if err := benchHelper(os.Stdin, os.Stdout); err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	os.Exit(0)
}

const benchPayload = `{"temperature":4.2,"humidity":81,"lat":53.54,"lon":9.98}`

type benchConn struct {
	c   *tls.Conn
	id  string
	pid uint16
	buf []byte
}

func benchHelper(stdin io.Reader, stdout io.Writer) error {
	dir := os.Getenv("AZEMU_BENCH_DIR")
	addr, host := os.Getenv("AZEMU_BENCH_ADDR"), os.Getenv("AZEMU_BENCH_HOST")
	n, _ := strconv.Atoi(os.Getenv("AZEMU_BENCH_N"))
	cert, err := pki.Load(filepath.Join(dir, "dev.pem"), filepath.Join(dir, "dev.key"))
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(os.Getenv("AZEMU_BENCH_CA"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	tlsCfg := &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{cert.TLS()}, ClientSessionCache: tls.NewLRUClientSessionCache(64)}
	conns := make([]*benchConn, n)
	sc := bufio.NewScanner(stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		var err error
		switch {
		case len(f) == 1 && f[0] == "connect":
			err = parallel(n, 64, func(i int) error {
				c, err := benchDial(addr, host, fmt.Sprintf("bench-%05d", i), tlsCfg)
				conns[i] = c
				return err
			})
		case len(f) == 2 && f[0] == "publish":
			total, _ := strconv.Atoi(f[1])
			var next atomic.Int64
			workers := min(n, 256)
			err = parallel(workers, workers, func(w int) error {
				// Worker w cycles over connections w, w+workers, ...
				i := w
				for next.Add(1) <= int64(total) {
					if err := conns[i].publish(); err != nil {
						return err
					}
					if i += workers; i >= n {
						i = w
					}
				}
				return nil
			})
		default:
			err = fmt.Errorf("unknown command %q", sc.Text())
		}
		if err != nil {
			fmt.Fprintln(stdout, "error", err)
		} else {
			fmt.Fprintln(stdout, "ok")
		}
	}
	return nil
}

func parallel(n, width int, f func(i int) error) error {
	var wg sync.WaitGroup
	var first atomic.Value
	sem := make(chan struct{}, width)
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer func() { <-sem; wg.Done() }()
			if err := f(i); err != nil {
				first.CompareAndSwap(nil, err)
			}
		}(i)
	}
	wg.Wait()
	if err, _ := first.Load().(error); err != nil {
		return err
	}
	return nil
}

func benchDial(addr, host, id string, cfg *tls.Config) (*benchConn, error) {
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 0, ClientIdentifier: id,
			UsernameFlag: true, Username: []byte(host + "/" + id + "/?api-version=2021-04-12")}}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		return nil, err
	}
	if _, err := c.Write(buf.Bytes()); err != nil {
		return nil, err
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
		return nil, fmt.Errorf("CONNACK %x: %v", ack, err)
	}
	bc := &benchConn{c: c, id: id}
	p := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "devices/" + id + "/messages/events/$.ct=application%2Fjson&$.ce=utf-8",
		Payload: []byte(benchPayload), PacketID: 1}
	var pb bytes.Buffer
	if err := p.PublishEncode(&pb); err != nil {
		return nil, err
	}
	bc.buf = pb.Bytes()
	return bc, nil
}

// publish sends one QoS 1 message and waits for its PUBACK.
func (b *benchConn) publish() error {
	b.pid++
	if b.pid == 0 {
		b.pid = 1
	}
	// The packet id sits between the topic and the payload.
	off := len(b.buf) - len(benchPayload) - 2
	b.buf[off], b.buf[off+1] = byte(b.pid>>8), byte(b.pid)
	if _, err := b.c.Write(b.buf); err != nil {
		return err
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(b.c, ack); err != nil {
		return fmt.Errorf("%s PUBACK: %w", b.id, err)
	}
	if ack[0] != 0x40 || ack[2] != byte(b.pid>>8) || ack[3] != byte(b.pid) {
		return fmt.Errorf("%s: unexpected %x", b.id, ack)
	}
	return nil
}
