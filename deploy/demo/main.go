// Command demo runs the reference flow (docs/reference-flow.md) on this machine, with
// the local emulator standing in for Azure: `make demo` builds the binaries
// and runs it.
//
// It starts azemu on loopback, does the operator's steps over the emulator's
// HTTPS service API (upload the test CA and prove possession, create the
// group enrollment with initial twin telemetryDelay 1), makes device
// certificates with deploy/certs, runs two trackers with simulated sensors,
// watches their telemetry arrive, sets desired telemetryDelay 3 on
// sensor-thl-001, shows the interval change and the reported value,
// disenrolls sensor-thl-002 (disabled individual enrollment + deleted hub
// identity) and shows it refused while 001 carries on, and stops everything
// with SIGTERM. It exits non-zero when any of that did not
// happen, so it doubles as an end-to-end check.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/reefer/tracker/deploy/emulator/service"
)

var devices = []string{"sensor-thl-001", "sensor-thl-002"}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo: FAILED: %v\n", err)
		os.Exit(1)
	}
}

type demo struct {
	mu      sync.Mutex
	waiters map[string][]logWaiter

	work, tracker, azemu, certs string
	info                        emulatorInfo
	http                        *http.Client
	start                       time.Time
	out                         *lockedWriter
}

// emulatorInfo is the part of azemu's emulator.json the demo reads.
type emulatorInfo struct {
	DPS struct {
		IDScope, DeviceEndpoint, ServiceHostName, SharedAccessKeyName, SharedAccessKey string
	} `json:"dps"`
	Hubs []struct {
		HostName, SharedAccessKeyName, SharedAccessKey string
	} `json:"hubs"`
	ServiceURL string `json:"serviceUrl"`
	CACertPath string `json:"caCertPath"`
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	d := &demo{start: time.Now(), out: &lockedWriter{w: os.Stdout}, waiters: map[string][]logWaiter{}}
	fs.StringVar(&d.work, "work", ".demo", "working directory (emulator state, certificates, tracker state)")
	fs.StringVar(&d.tracker, "tracker", "", "tracker binary")
	fs.StringVar(&d.azemu, "azemu", "", "azemu binary")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if d.tracker == "" || d.azemu == "" {
		return errors.New("--tracker and --azemu are required (make demo passes them)")
	}
	d.certs = filepath.Join(d.work, "certs")
	// Fresh emulator and tracker state every run; the test CA is kept.
	for _, dir := range []string{"azemu", "trackers"} {
		if err := os.RemoveAll(filepath.Join(d.work, dir)); err != nil {
			return err
		}
	}

	d.step("1. Start the local DPS + IoT Hub emulator (azemu) on loopback")
	stopEmu, err := d.startEmulator(ctx)
	if err != nil {
		return err
	}
	defer stopEmu()
	d.say("ID scope %s, DPS %s, hub %s, service API %s", d.info.DPS.IDScope, d.info.DPS.DeviceEndpoint, d.hub(), d.info.ServiceURL)

	d.step("2. Test CA with OpenSSL, uploaded to DPS with proof of possession")
	if err := d.sh("deploy/certs/ca.sh", "--dir", d.certs); err != nil {
		return err
	}
	if err := d.uploadCA(ctx); err != nil {
		return err
	}

	d.step("3. Group enrollment enrollgroup-sensors (static to %s, initial twin telemetryDelay 1)", d.hub())
	if err := d.enrollGroup(ctx); err != nil {
		return err
	}

	d.step("4. Device certificates (CN = device id, signed by the intermediate)")
	for _, id := range devices {
		if err := d.sh("deploy/certs/device.sh", "--dir", d.certs, id); err != nil {
			return err
		}
	}

	d.step("5. Run two trackers with simulated sensors; watch telemetry arrive")
	events, stopMon, err := d.monitor(ctx)
	if err != nil {
		return err
	}
	defer stopMon()
	stopTrackers, err := d.startTrackers(ctx)
	if err != nil {
		return err
	}
	defer stopTrackers()
	seen := newArrivals()
	if err := d.watch(ctx, events, seen, 25*time.Second, func() bool {
		return seen.count(devices[0]) >= 4 && seen.count(devices[1]) >= 4
	}); err != nil {
		return fmt.Errorf("waiting for telemetry from both trackers: %w", err)
	}
	before := seen.interval(devices[0])
	d.say("sensor-thl-001 sends every %.1f s (the enrollment's initial twin)", before.Seconds())

	d.step("6. Twin update: desired telemetryDelay 3 on sensor-thl-001")
	if err := d.patchDesired(ctx, devices[0], map[string]any{"telemetryDelay": 3}); err != nil {
		return err
	}
	mark := seen.count(devices[0])
	if err := d.watch(ctx, events, seen, 20*time.Second, func() bool { return seen.count(devices[0]) >= mark+4 }); err != nil {
		return fmt.Errorf("waiting for telemetry at the new interval: %w", err)
	}
	after := seen.intervalSince(devices[0], mark+1)
	reported, err := d.reportedDelay(ctx, devices[0])
	if err != nil {
		return err
	}
	d.say("sensor-thl-001 now sends every %.1f s; its twin reports telemetryDelay = %v", after.Seconds(), reported)
	d.say("sensor-thl-002 is unaffected: every %.1f s", seen.interval(devices[1]).Seconds())

	d.step("7. Disenroll sensor-thl-002: disabled individual enrollment, hub identity deleted")
	if err := d.disenroll(ctx, devices[1]); err != nil {
		return err
	}
	refused := d.waitLog(devices[1], "DPS refused the device", 30*time.Second)
	mark1, mark2 := seen.count(devices[0]), seen.count(devices[1])
	if err := d.watch(ctx, events, seen, 15*time.Second, func() bool { return seen.count(devices[0]) >= mark1+2 }); err != nil {
		return fmt.Errorf("sensor-thl-001 after disenrolling 002: %w", err)
	}
	if !<-refused {
		return errors.New("sensor-thl-002 was not refused by DPS after disenrollment")
	}
	d.say("sensor-thl-002 is refused (status disabled) and retries on its long schedule; it sent %d message(s) since; sensor-thl-001 sent %d",
		seen.count(devices[1])-mark2, seen.count(devices[0])-mark1)
	d.say("re-enrolling (deleting the disabled individual enrollment) lets it provision again at its next retry, without a restart")

	d.step("8. Stop the trackers (SIGTERM: flush, close the queue) and the emulator")
	stopTrackers()
	stopMon()
	stopEmu()

	switch {
	case before < 500*time.Millisecond || before > 2*time.Second:
		return fmt.Errorf("interval before the twin change = %s; want about 1 s", before)
	case after < 2500*time.Millisecond || after > 4*time.Second:
		return fmt.Errorf("interval after the twin change = %s; want about 3 s", after)
	case fmt.Sprint(reported) != "3":
		return fmt.Errorf("reported telemetryDelay = %v; want 3", reported)
	}
	fmt.Fprintf(d.out, "\nDemo finished in %.0f s: both trackers provisioned through DPS and sent telemetry, sensor-thl-001 followed its twin, and disenrolled sensor-thl-002 was refused while 001 carried on.\n", time.Since(d.start).Seconds())
	return nil
}

func (d *demo) hub() string { return d.info.Hubs[0].HostName }

func (d *demo) step(format string, args ...any) {
	fmt.Fprintf(d.out, "\n\033[1m== "+format+"\033[0m\n", args...)
}

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, "   "+format+"\n", args...)
}

// sh runs a deploy script, showing its output indented.
func (d *demo) sh(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" && !strings.HasPrefix(l, "  ") {
			d.say("%s", l)
		}
	}
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func (d *demo) startEmulator(ctx context.Context) (stop func(), err error) {
	data := filepath.Join(d.work, "azemu")
	cmd := exec.Command(d.azemu, "--data", data, "--mqtt", "127.0.0.1:0", "--https", "127.0.0.1:0", "--log-level", "info")
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
	b, err := os.ReadFile(filepath.Join(data, "emulator.json"))
	if err == nil {
		err = json.Unmarshal(b, &d.info)
	}
	if err != nil {
		stop()
		return nil, fmt.Errorf("read emulator.json: %w", err)
	}
	pem, err := os.ReadFile(d.info.CACertPath)
	if err != nil {
		stop()
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	d.http = &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	return stop, nil
}

// call makes one SAS-authenticated service API request and decodes the
// JSON answer into out (when not nil).
func (d *demo) call(ctx context.Context, method, path string, dps bool, body, out any) error {
	sr, policy, key := d.info.Hubs[0].HostName, d.info.Hubs[0].SharedAccessKeyName, d.info.Hubs[0].SharedAccessKey
	apiVersion := "2021-04-12"
	if dps {
		sr, policy, key = d.info.DPS.ServiceHostName, d.info.DPS.SharedAccessKeyName, d.info.DPS.SharedAccessKey
		apiVersion = "2021-10-01"
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	req, err := http.NewRequestWithContext(ctx, method, d.info.ServiceURL+path+sep+"api-version="+apiVersion, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", service.SASToken(sr, policy, key, time.Now().Add(time.Hour)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := d.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

func (d *demo) uploadCA(ctx context.Context) error {
	root, err := os.ReadFile(filepath.Join(d.certs, "root.pem"))
	if err != nil {
		return err
	}
	if err := d.call(ctx, "PUT", "/certificates/groupCA-sensors", true, map[string]any{"certificate": string(root)}, nil); err != nil {
		return err
	}
	var vc struct {
		Properties struct{ VerificationCode string } `json:"properties"`
	}
	if err := d.call(ctx, "POST", "/certificates/groupCA-sensors/generateVerificationCode", true, nil, &vc); err != nil {
		return err
	}
	d.say("uploaded root.pem as groupCA-sensors; verification code %s", vc.Properties.VerificationCode)
	if err := d.sh("deploy/certs/verification.sh", "--dir", d.certs, vc.Properties.VerificationCode); err != nil {
		return err
	}
	proof, err := os.ReadFile(filepath.Join(d.certs, "verification.pem"))
	if err != nil {
		return err
	}
	var verified struct {
		Properties struct{ IsVerified bool } `json:"properties"`
	}
	if err := d.call(ctx, "POST", "/certificates/groupCA-sensors/verify", true, map[string]any{"certificate": string(proof)}, &verified); err != nil {
		return err
	}
	if !verified.Properties.IsVerified {
		return errors.New("groupCA-sensors is not verified after proof of possession")
	}
	d.say("proof of possession accepted: groupCA-sensors is verified")
	return nil
}

func (d *demo) enrollGroup(ctx context.Context) error {
	group := map[string]any{
		"enrollmentGroupId":  "enrollgroup-sensors",
		"attestation":        map[string]any{"type": "x509", "x509": map[string]any{"caReferences": map[string]any{"primary": "groupCA-sensors"}}},
		"provisioningStatus": "enabled",
		"allocationPolicy":   "static",
		"iotHubs":            []string{d.hub()},
		"reprovisionPolicy":  map[string]any{"updateHubAssignment": true, "migrateDeviceData": true},
		"initialTwin":        map[string]any{"properties": map[string]any{"desired": map[string]any{"telemetryDelay": 1}}},
	}
	var got struct {
		ETag string `json:"etag"`
	}
	if err := d.call(ctx, "PUT", "/enrollmentGroups/enrollgroup-sensors", true, group, &got); err != nil {
		return err
	}
	d.say("created (etag %s)", got.ETag)
	return nil
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
		}(id, 36+i)
	}
	return stop, nil
}

// logWaiter is told when a tracker logs a line containing want.
type logWaiter struct {
	want string
	ch   chan bool
}

// logged hands a tracker log line to whoever waits for it.
func (d *demo) logged(id, line string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ws := d.waiters[id][:0]
	for _, w := range d.waiters[id] {
		if strings.Contains(line, w.want) {
			w.ch <- true
			continue
		}
		ws = append(ws, w)
	}
	d.waiters[id] = ws
}

// waitLog reports (once) whether tracker id logs want within timeout.
func (d *demo) waitLog(id, want string, timeout time.Duration) <-chan bool {
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

// disenroll is reference flow step 7: an individual enrollment with the device's
// leaf certificate and provisioningStatus disabled overrides the group
// (kept, not deleted), and the hub identity is deleted too, because
// disenrolling in DPS alone leaves the device connected to the hub.
func (d *demo) disenroll(ctx context.Context, id string) error {
	leaf, err := os.ReadFile(filepath.Join(d.certs, "devices", id, id+".pem"))
	if err != nil {
		return err
	}
	enrollment := map[string]any{
		"registrationId":     id,
		"attestation":        map[string]any{"type": "x509", "x509": map[string]any{"clientCertificates": map[string]any{"primary": map[string]any{"certificate": string(leaf)}}}},
		"provisioningStatus": "disabled",
	}
	if err := d.call(ctx, "PUT", "/enrollments/"+id, true, enrollment, nil); err != nil {
		return err
	}
	d.say("PUT /enrollments/%s: provisioningStatus disabled", id)
	req, err := http.NewRequestWithContext(ctx, "DELETE", d.info.ServiceURL+"/devices/"+id+"?api-version=2021-04-12", nil)
	if err != nil {
		return err
	}
	h := d.info.Hubs[0]
	req.Header.Set("Authorization", service.SASToken(h.HostName, h.SharedAccessKeyName, h.SharedAccessKey, time.Now().Add(time.Hour)))
	req.Header.Set("If-Match", "*")
	resp, err := d.http.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("DELETE /devices/%s: %s", id, resp.Status)
	}
	d.say("DELETE /devices/%s: the hub identity is gone", id)
	return nil
}

// interesting keeps the tracker log lines a viewer wants: simulated-sensor
// warnings, provisioning, connection, twin changes and shutdown, not one
// line per message.
func interesting(line string) bool {
	if strings.Contains(line, "level=ERROR") || strings.Contains(line, "SIMULATED") {
		return true
	}
	for _, msg := range []string{`msg="hub refused the device`, `msg="dps assigned"`, "msg=connected ", `msg="desired properties applied"`, "msg=ready", "msg=stopping", `msg="stopped"`, "msg=stopped"} {
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

// event is one telemetry message as the service API's monitor stream sends it.
type event struct {
	DeviceID     string            `json:"deviceId"`
	EnqueuedTime time.Time         `json:"enqueuedTime"`
	MessageID    string            `json:"messageId"`
	Payload      json.RawMessage   `json:"payload"`
	Properties   map[string]string `json:"properties"`
	System       map[string]string `json:"systemProperties"`
}

// monitor streams telemetry like `az iot hub monitor-events`.
func (d *demo) monitor(ctx context.Context) (<-chan event, func(), error) {
	ctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, "GET", d.info.ServiceURL+"/messages/events/stream?api-version=2021-04-12", nil)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	h := d.info.Hubs[0]
	req.Header.Set("Authorization", service.SASToken(h.HostName, h.SharedAccessKeyName, h.SharedAccessKey, time.Now().Add(time.Hour)))
	stream := &http.Client{Transport: d.http.Transport} // no timeout: a long-lived stream
	resp, err := stream.Do(req)
	if err != nil {
		cancel()
		return nil, nil, fmt.Errorf("monitor: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		return nil, nil, fmt.Errorf("monitor: %s: %s", resp.Status, b)
	}
	ch := make(chan event, 64)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		dec := json.NewDecoder(resp.Body)
		for {
			var e event
			if err := dec.Decode(&e); err != nil {
				return
			}
			select {
			case ch <- e:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch, cancel, nil
}

// arrivals records when each device's messages were enqueued.
type arrivals struct{ at map[string][]time.Time }

func newArrivals() *arrivals { return &arrivals{at: map[string][]time.Time{}} }

func (a *arrivals) add(e event)         { a.at[e.DeviceID] = append(a.at[e.DeviceID], e.EnqueuedTime) }
func (a *arrivals) count(id string) int { return len(a.at[id]) }
func (a *arrivals) interval(id string) time.Duration {
	return a.intervalSince(id, 1)
}

// intervalSince is the median gap between messages from index from on;
// the first message after a start or a change is skipped by the caller.
func (a *arrivals) intervalSince(id string, from int) time.Duration {
	t := a.at[id]
	var gaps []time.Duration
	for i := max(from, 1); i < len(t); i++ {
		gaps = append(gaps, t[i].Sub(t[i-1]))
	}
	if len(gaps) == 0 {
		return 0
	}
	sort.Slice(gaps, func(i, j int) bool { return gaps[i] < gaps[j] })
	return gaps[len(gaps)/2]
}

// watch prints telemetry as it arrives until done() or the timeout.
func (d *demo) watch(ctx context.Context, events <-chan event, seen *arrivals, timeout time.Duration, done func() bool) error {
	deadline := time.After(timeout)
	for !done() {
		select {
		case e, ok := <-events:
			if !ok {
				return errors.New("telemetry stream ended")
			}
			seen.add(e)
			d.printEvent(e, seen)
		case <-deadline:
			return fmt.Errorf("timed out after %s", timeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (d *demo) printEvent(e event, seen *arrivals) {
	var b struct {
		Temperature float64  `json:"temperature"`
		Humidity    *float64 `json:"humidity"`
		Pressure    float64  `json:"pressure"`
		Latitude    *float64 `json:"latitude"`
		Longitude   *float64 `json:"longitude"`
		Seq         uint64   `json:"seq"`
		Source      struct{ Env, GPS string }
	}
	_ = json.Unmarshal(e.Payload, &b)
	gap := ""
	if t := seen.at[e.DeviceID]; len(t) > 1 {
		gap = fmt.Sprintf("+%.1fs", t[len(t)-1].Sub(t[len(t)-2]).Seconds())
	}
	pos := "no fix"
	if b.Latitude != nil && b.Longitude != nil {
		pos = fmt.Sprintf("%.4f,%.4f", *b.Latitude, *b.Longitude)
	}
	hum := "-"
	if b.Humidity != nil {
		hum = fmt.Sprintf("%.0f%%RH", *b.Humidity)
	}
	fmt.Fprintf(d.out, "   telemetry %s seq=%-3d %6s  %5.2f°C %s %7.2fhPa %s  temperatureAlert=%s  [%s/%s]\n",
		e.DeviceID, b.Seq, gap, b.Temperature, hum, b.Pressure, pos, e.Properties["temperatureAlert"], b.Source.Env, b.Source.GPS)
}

func (d *demo) patchDesired(ctx context.Context, id string, desired map[string]any) error {
	var twin struct {
		Properties struct {
			Desired map[string]any `json:"desired"`
		} `json:"properties"`
	}
	if err := d.call(ctx, "PATCH", "/twins/"+id, false, map[string]any{"properties": map[string]any{"desired": desired}}, &twin); err != nil {
		return err
	}
	for k := range twin.Properties.Desired {
		if strings.HasPrefix(k, "$") {
			delete(twin.Properties.Desired, k)
		}
	}
	b, _ := json.Marshal(twin.Properties.Desired)
	d.say("PATCH /twins/%s: desired properties now %s", id, b)
	return nil
}

// reportedDelay polls the twin until the tracker reports telemetryDelay.
func (d *demo) reportedDelay(ctx context.Context, id string) (any, error) {
	var last any
	for range 20 {
		var twin struct {
			Properties struct {
				Reported map[string]any `json:"reported"`
			} `json:"properties"`
		}
		if err := d.call(ctx, "GET", "/twins/"+id, false, nil, &twin); err != nil {
			return nil, err
		}
		last = twin.Properties.Reported["telemetryDelay"]
		if fmt.Sprint(last) == "3" {
			return last, nil
		}
		time.Sleep(250 * time.Millisecond)
	}
	return last, nil
}

// lockedWriter keeps lines from several goroutines whole.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
