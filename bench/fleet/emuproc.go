package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/reefer/tracker/deploy/emulator"
	"github.com/reefer/tracker/deploy/emulator/store"
	"github.com/reefer/tracker/internal/fdlimit"
	"github.com/reefer/tracker/internal/memlimit"
)

// childEnv, set to 1, makes this program the emulator process of a
// -separate run instead of the bench.
const childEnv = "FLEET_EMULATOR_CHILD"

// groupID is the enrollment group every run creates.
const groupID = "fleet-bench"

// emulatorChild runs the emulator alone in this process: it starts on
// 127.0.0.1 with the given data dir and limits, enrolls the fleet root as
// a group, prints "ready" and serves until stdin closes.
func emulatorChild(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleet emulator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("data", "", "data dir")
	rate := fs.Int("rate", 1000, "registrations per minute")
	retry := fs.Duration("retry-after", -1, "retry-after with 202")
	rootPath := fs.String("root", "", "PEM of the group's root CA")
	cpuProfile := fs.String("cpuprofile", "", "write the emulator's CPU profile here")
	memProfile := fs.String("memprofile", "", "write the emulator's heap profile here at the end")
	pprofAddr := fs.String("pprof", "", "serve net/http/pprof on this address while running")
	var memLimit memlimit.Bytes
	fs.Var(&memLimit, "memory-limit", "soft memory limit (GOMEMLIMIT syntax, e.g. 900MiB; 0: none)")
	verbose := fs.Bool("v", false, "emulator log at info")
	if err := fs.Parse(args); err != nil {
		return err
	}
	lvl := slog.LevelWarn
	if *verbose {
		lvl = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl})).With("process", "emulator")
	fdlimit.Raise(slog.New(slog.NewTextHandler(stderr, nil)).With("process", "emulator"))
	if _, err := memlimit.Apply(memLimit, slog.New(slog.NewTextHandler(stderr, nil)).With("process", "emulator")); err != nil {
		return err
	}
	pemText, err := os.ReadFile(*rootPath)
	if err != nil {
		return err
	}
	root, err := store.ParseCertificatePEM(string(pemText))
	if err != nil {
		return err
	}
	e, err := startEmulator(context.Background(), emulator.Config{DataDir: *dir, MQTTAddr: "127.0.0.1:0", HTTPSAddr: "-",
		NoSync: true, Logger: log, RegistrationsPerMinute: *rate, RetryAfter: *retry})
	if err != nil {
		return err
	}
	defer e.Close()
	if _, err := e.EnrollGroup(groupID, root, nil); err != nil {
		return fmt.Errorf("enroll group: %w", err)
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if *pprofAddr != "" {
		ln, err := net.Listen("tcp", *pprofAddr)
		if err != nil {
			return fmt.Errorf("-pprof: %w", err)
		}
		defer ln.Close()
		// The blank import registers /debug/pprof/ on the default mux.
		go func() { _ = http.Serve(ln, nil) }()
	}
	fmt.Fprintln(stdout, "ready")
	_, _ = io.Copy(io.Discard, stdin) // until the bench closes it, or dies
	if *memProfile != "" {
		f, err := os.Create(*memProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		return pprof.WriteHeapProfile(f)
	}
	return nil
}

// emulatorProcess is the emulator of a -separate run, in its own process
// so its memory and file descriptors are its own.
type emulatorProcess struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	info  emulator.Info
	roots *x509.CertPool
}

func startEmulatorProcess(ctx context.Context, dir string, rate int, retryAfter time.Duration, root *x509.Certificate, o Options) (*emulatorProcess, error) {
	rootPath := filepath.Join(dir, "fleet-root.pem")
	if err := os.WriteFile(rootPath, []byte(store.EncodeCertificatePEM(root)), 0o600); err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "emulator")
	args := []string{"-data", data, "-rate", strconv.Itoa(rate), "-retry-after", retryAfter.String(), "-root", rootPath,
		"-cpuprofile", o.EmulatorCPUProfile, "-memprofile", o.EmulatorMemProfile, "-pprof", o.EmulatorPprof, "-memory-limit", o.EmulatorMemoryLimit.String(), "-v=" + strconv.FormatBool(o.Logger != nil)}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the emulator process: %w", err)
	}
	p := &emulatorProcess{cmd: cmd, stdin: stdin}
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && strings.TrimSpace(line) != "ready" {
			err = fmt.Errorf("emulator process said %q", line)
		}
		ready <- err
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case err = <-ready:
	case <-ctx.Done():
		err = ctx.Err()
	case <-time.After(time.Minute):
		err = errors.New("emulator process not ready within a minute")
	}
	if err == nil {
		err = p.load(data)
	}
	if err != nil {
		p.close()
		return nil, fmt.Errorf("emulator process: %w", err)
	}
	return p, nil
}

// load reads emulator.json and the CA it names.
func (p *emulatorProcess) load(data string) error {
	b, err := os.ReadFile(filepath.Join(data, "emulator.json"))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &p.info); err != nil {
		return err
	}
	ca, err := os.ReadFile(p.info.CACertPath)
	if err != nil {
		return err
	}
	p.roots = x509.NewCertPool()
	if !p.roots.AppendCertsFromPEM(ca) {
		return fmt.Errorf("%s holds no certificate", p.info.CACertPath)
	}
	return nil
}

func (p *emulatorProcess) pid() int { return p.cmd.Process.Pid }

// clientTLS is what a device uses against the emulator (as
// emulator.ClientTLSConfig builds it in process).
func (p *emulatorProcess) clientTLS(cert tls.Certificate) *tls.Config {
	return &tls.Config{RootCAs: p.roots, ServerName: "localhost", Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
}

// cpu is the user+system CPU the process used, once it has exited.
func (p *emulatorProcess) cpu() time.Duration {
	if st := p.cmd.ProcessState; st != nil {
		return st.UserTime() + st.SystemTime()
	}
	return 0
}

// close ends the process (closing stdin) and waits for it; again is a no-op.
func (p *emulatorProcess) close() error {
	if p.cmd.ProcessState != nil {
		return nil
	}
	_ = p.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		return <-done
	}
}

// procStatus reads a "Name:  N kB" field of /proc/PID/status in bytes.
func procStatus(pid int, field string) uint64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n * 1024
		}
	}
	return 0
}
