package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/reefer/tracker/deploy/fleetctl/azrest"
	"github.com/reefer/tracker/internal/pnp"
)

// monitor streams telemetry like `az iot hub monitor-events`, through
// fleetctl's monitor (the emulator's stream).
func (d *demo) monitor(ctx context.Context) (<-chan azrest.Event, func(), error) {
	ctx, cancel := context.WithCancel(ctx)
	ch := make(chan azrest.Event, 64)
	failed := make(chan error, 1)
	go func() {
		defer close(ch)
		err := d.fleet.Hub.Monitor(ctx, "", func(e azrest.Event) bool {
			select {
			case ch <- e:
				return true
			case <-ctx.Done():
				return false
			}
		})
		failed <- err
	}()
	// A refused or unreachable stream fails at once; a good one streams.
	select {
	case err := <-failed:
		cancel()
		if err == nil {
			err = errors.New("the stream ended at once")
		}
		return nil, nil, fmt.Errorf("monitor: %w", err)
	case <-time.After(300 * time.Millisecond):
	}
	return ch, cancel, nil
}

// arrivals records when each device's messages were enqueued.
type arrivals struct{ at map[string][]time.Time }

func newArrivals() *arrivals { return &arrivals{at: map[string][]time.Time{}} }

func (a *arrivals) add(e azrest.Event)  { a.at[e.DeviceID] = append(a.at[e.DeviceID], e.EnqueuedTime) }
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
func (d *demo) watch(ctx context.Context, events <-chan azrest.Event, seen *arrivals, timeout time.Duration, done func() bool) error {
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

func (d *demo) printEvent(e azrest.Event, seen *arrivals) {
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

// patchDesired is `fleetctl twin update ID --desired JSON`; it returns the
// desired properties' new $version.
func (d *demo) patchDesired(ctx context.Context, id string, desired map[string]any) (int64, error) {
	tw, err := d.fleet.Hub.UpdateDesired(ctx, id, desired)
	if err != nil {
		return 0, err
	}
	d.say("fleetctl twin update %s --desired %s: desired properties now %s", id, jsonText(desired), plain(tw.Properties.Desired))
	v, ok := tw.Properties.Desired["$version"].(float64)
	if !ok {
		return 0, fmt.Errorf("twin update %s: no desired $version in the answer", id)
	}
	return int64(v), nil
}

// acknowledged polls the twin until the tracker answers the writable
// property name for desired version (the Plug and Play acknowledgement,
// docs/protocol.md B.5), and returns that answer, or the last one seen.
func (d *demo) acknowledged(ctx context.Context, id, name string, version int64) (pnp.Ack, error) {
	var last pnp.Ack
	for range 40 {
		tw, err := d.fleet.Hub.GetTwin(ctx, id)
		if err != nil {
			return last, err
		}
		if a, err := pnp.From(tw.Properties.Reported[name]); err == nil {
			last = a
			if a.Version >= version {
				return a, nil
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	return last, fmt.Errorf("%s did not answer %s for desired version %d (last answer %+v)", id, name, version, last)
}

// plain is twin properties without the service's $version and $metadata.
func plain(m map[string]any) string {
	c := map[string]any{}
	for k, v := range m {
		if !strings.HasPrefix(k, "$") {
			c[k] = v
		}
	}
	return jsonText(c)
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
