package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/reefer/tracker/deploy/fleetctl/cli"
)

func (d *demo) startEmulator(ctx context.Context) (stop func(), err error) {
	data := filepath.Join(d.work, "azemu")
	cmd := exec.Command(d.azemu, "--data", data, "--mqtt", "127.0.0.1:0", "--https", "127.0.0.1:0", "--log-level", "info",
		"--credential-policy", policyName, "--issued-cert-validity", issuedValidity.String())
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start azemu: %w", err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			if strings.Contains(line, "msg=ready") {
				once.Do(func() { close(ready) })
				continue
			}
			if strings.Contains(line, "level=INFO") || strings.Contains(line, "level=DEBUG") {
				continue
			}
			fmt.Fprintf(d.out, "   \033[2m[azemu] %s\033[0m\n", trimLog(line))
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				cmd.Process.Kill()
				<-done
			}
		})
	}
	select {
	case <-ready:
	case <-time.After(15 * time.Second):
		stop()
		return nil, errors.New("azemu did not report ready within 15 s")
	case <-ctx.Done():
		stop()
		return nil, ctx.Err()
	}
	info := filepath.Join(data, "emulator.json")
	b, err := os.ReadFile(info)
	if err == nil {
		err = json.Unmarshal(b, &d.info)
	}
	if err == nil {
		// The operator's side goes through fleetctl's code, configured
		// as `fleetctl --emulator` would be.
		d.fleet, err = cli.EmulatorFleet(info)
	}
	if err != nil {
		stop()
		return nil, fmt.Errorf("read emulator.json: %w", err)
	}
	return stop, nil
}

// trackerConfig is a tracker.json for one simulated tracker.
func (d *demo) trackerConfig(id, state string) ([]byte, error) {
	abs := func(p string) string { a, _ := filepath.Abs(p); return a }
	dev := filepath.Join(d.certs, "devices", id)
	cfg := map[string]any{
		"version":        1,
		"idScope":        d.info.DPS.IDScope,
		"dpsEndpoint":    d.info.DPS.DeviceEndpoint,
		"certFile":       abs(filepath.Join(dev, id+"-chain.pem")),
		"keyFile":        abs(filepath.Join(dev, id+".key")),
		"caFile":         abs(d.info.CACertPath),
		"stateDir":       abs(state),
		"sensors":        map[string]any{"env": map[string]any{"mode": "simulated"}, "gps": map[string]any{"mode": "simulated"}},
		"telemetryDelay": 10,
		"logLevel":       "info",
		// The demo's short retry while DPS refuses the device; the
		// default is 5 to 60 minutes.
		"reprovisionRetry": map[string]any{"min": retryMin.String(), "max": retryMax.String()},
	}
	if id == issuingDevice {
		// Its hub certificate comes from DPS for a key it makes itself,
		// renewed at half of the demo's short validity.
		cfg["certificateIssuance"] = map[string]any{"enabled": true, "renewAt": renewAt}
	}
	return json.MarshalIndent(cfg, "", "  ")
}

func (d *demo) startTrackers(ctx context.Context) (stop func(), err error) {
	var cmds []*exec.Cmd
	var wg sync.WaitGroup
	var once sync.Once
	stop = func() {
		once.Do(func() {
			for _, c := range cmds {
				c.Process.Signal(syscall.SIGTERM)
			}
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				for _, c := range cmds {
					c.Process.Kill()
				}
				<-done
			}
		})
	}
	for i, id := range devices {
		state := filepath.Join(d.work, "trackers", id)
		if err := os.MkdirAll(state, 0o700); err != nil {
			stop()
			return nil, err
		}
		b, err := d.trackerConfig(id, state)
		if err != nil {
			stop()
			return nil, err
		}
		path := filepath.Join(d.work, "trackers", id+".json")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			stop()
			return nil, err
		}
		cmd := exec.Command(d.tracker, "run", "--config", path)
		stderr, err := cmd.StderrPipe()
		if err != nil {
			stop()
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			stop()
			return nil, fmt.Errorf("start tracker %s: %w", id, err)
		}
		d.say("started tracker %s (pid %d, config %s)", id, cmd.Process.Pid, path)
		cmds = append(cmds, cmd)
		d.mu.Lock()
		d.procs[id] = cmd
		d.mu.Unlock()
		wg.Add(1)
		go func(id string, color int) {
			defer wg.Done()
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				line := sc.Text()
				d.logged(id, line)
				if interesting(line) {
					fmt.Fprintf(d.out, "   \033[%dm[%s]\033[0m %s\n", color, id, trimLog(line))
				}
			}
			cmd.Wait()
			d.mu.Lock()
			d.exited[id] = true
			d.mu.Unlock()
		}(id, 36+i)
	}
	return stop, nil
}

// logWaiter is told when a tracker logs a line containing every want.
type logWaiter struct {
	want []string
	ch   chan bool
}

// logged hands a tracker log line to whoever waits for it.
func (d *demo) logged(id, line string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ws := d.waiters[id][:0]
	for _, w := range d.waiters[id] {
		if containsAll(line, w.want) {
			w.ch <- true
			continue
		}
		ws = append(ws, w)
	}
	d.waiters[id] = ws
}

func containsAll(line string, want []string) bool {
	for _, s := range want {
		if !strings.Contains(line, s) {
			return false
		}
	}
	return true
}

// waitLog reports (once) whether tracker id logs a line with every want
// within timeout. Register before the action whose effect it awaits.
func (d *demo) waitLog(id string, timeout time.Duration, want ...string) <-chan bool {
	w := logWaiter{want: want, ch: make(chan bool, 1)}
	d.mu.Lock()
	d.waiters[id] = append(d.waiters[id], w)
	d.mu.Unlock()
	out := make(chan bool, 1)
	go func() {
		select {
		case ok := <-w.ch:
			out <- ok
		case <-time.After(timeout):
			out <- false
		}
	}()
	return out
}

// interesting keeps the tracker log lines a viewer wants: simulated-sensor
// warnings, provisioning, connection, twin changes and shutdown, not one
// line per message.
func interesting(line string) bool {
	if strings.Contains(line, "level=ERROR") || strings.Contains(line, "SIMULATED") {
		return true
	}
	for _, msg := range []string{`msg="hub refused the device`, `msg="DPS issued an operational certificate"`,
		`msg="hub accepted the new operational certificate; switched to it"`, `msg="renewing the operational certificate`, "msg=provisioned ", "msg=connected ", `msg="desired properties applied"`, "msg=ready", "msg=stopping", `msg="stopped"`, "msg=stopped"} {
		if strings.Contains(line, msg) {
			return true
		}
	}
	return false
}

// trimLog drops slog's time= field: the demo's output is already live.
func trimLog(line string) string {
	if strings.HasPrefix(line, "time=") {
		if i := strings.IndexByte(line, ' '); i > 0 {
			return line[i+1:]
		}
	}
	return line
}
