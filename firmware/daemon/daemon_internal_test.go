package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/reefer/tracker/drivers"
	"github.com/reefer/tracker/firmware/agent"
	"github.com/reefer/tracker/firmware/lifecycle"
	"github.com/reefer/tracker/firmware/telemetry"
	"github.com/reefer/tracker/provisioning/dps"
)

func TestStatusLine(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 28, 13, 0, 0, 0, time.UTC)
	hub := "hub-x.azure-devices.net"
	up := agent.StatusReport{Connected: true, QueueDepth: 0}
	down := agent.StatusReport{QueueDepth: 42, Dropped: 3}
	tests := []struct {
		name string
		note string
		ls   lifecycle.Status
		st   agent.StatusReport
		want string
	}{
		{"connected", "", lifecycle.Status{Phase: lifecycle.PhaseConnected, Hub: hub, DeviceID: "sensor-thl-001"}, up,
			"connected to hub hub-x.azure-devices.net as sensor-thl-001; 0 queued"},
		{"link lost", "", lifecycle.Status{Phase: lifecycle.PhaseConnected, Hub: hub}, down,
			"offline: reconnecting to hub hub-x.azure-devices.net; 42 queued, 3 dropped"},
		{"provisioning", "", lifecycle.Status{Phase: lifecycle.PhaseProvisioning}, down,
			"provisioning through DPS; 42 queued, 3 dropped"},
		{"disabled", "", lifecycle.Status{Phase: lifecycle.PhaseRefusedDisabled, Err: dps.ErrDisabled, NextAttempt: now.Add(7 * time.Minute)}, down,
			"refused: enrollment disabled, retrying in 7 min; 42 queued, 3 dropped"},
		{"unauthorized", "", lifecycle.Status{Phase: lifecycle.PhaseRefusedUnauthorized, Err: dps.ErrUnauthorized, NextAttempt: now.Add(40 * time.Second)}, down,
			"refused: DPS does not accept the certificate (no enabled enrollment), retrying in 40 s; 42 queued, 3 dropped"},
		{"hub refuses", "", lifecycle.Status{Phase: lifecycle.PhaseRefusedUnauthorized, Hub: hub, Err: lifecycle.ErrHubRefused, NextAttempt: now.Add(time.Hour)}, down,
			"refused: hub hub-x.azure-devices.net refuses the device (identity disabled?), retrying in 60 min; 42 queued, 3 dropped"},
		{"backing off", "", lifecycle.Status{Phase: lifecycle.PhaseBackingOff, Err: errors.New("dial tcp: refused"), NextAttempt: now.Add(1500 * time.Millisecond)}, down,
			"offline, retrying in 2 s; 42 queued, 3 dropped"},
		{"clock", "waiting for the clock", lifecycle.Status{Phase: lifecycle.PhaseStarting}, agent.StatusReport{Sources: telemetry.Sources{Env: drivers.Simulated}},
			"waiting for the clock; 0 queued; SIMULATED sensors"},
		{"samples held", "waiting for the clock (time sync) before TLS", lifecycle.Status{Phase: lifecycle.PhaseStarting},
			agent.StatusReport{WaitingForClock: true, Held: 42, QueueDepth: 3},
			"waiting for the clock; 42 samples held; 3 queued"},
		{"one sample held", "", lifecycle.Status{Phase: lifecycle.PhaseStarting}, agent.StatusReport{WaitingForClock: true, Held: 1},
			"waiting for the clock; 1 sample held; 0 queued"},
		{"clock set, release pending", "", lifecycle.Status{Phase: lifecycle.PhaseStarting}, agent.StatusReport{Held: 2},
			"waiting for the clock; 2 samples held; 0 queued"},
		{"holding area overflowed", "", lifecycle.Status{Phase: lifecycle.PhaseStarting},
			agent.StatusReport{WaitingForClock: true, Held: 3600, Dropped: 5, HeldDropped: 5},
			"waiting for the clock; 3600 samples held; 0 queued, 5 dropped"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := StatusLine(tt.note, tt.ls, tt.st, now); got != tt.want {
				t.Errorf("StatusLine() = %q; want %q", got, tt.want)
			}
		})
	}
}

func TestHubMessage(t *testing.T) {
	t.Parallel()
	created := time.Date(2026, 11, 28, 13, 45, 0, 0, time.UTC)
	q := agent.Queued{ID: "sensor-thl-001-7", Seq: 7, Body: []byte(`{"seq":7}`),
		Props: map[string]string{"temperatureAlert": "true"}, Created: created}
	m := hubMessage(q)
	if m.MessageID != q.ID || m.ContentType != "application/json" || m.ContentEncoding != "utf-8" ||
		!m.CreationTime.Equal(created) || string(m.Body) != `{"seq":7}` || m.Properties["temperatureAlert"] != "true" {
		t.Errorf("hubMessage(%+v) = %+v", q, m)
	}
}

func TestSendNowAnswer(t *testing.T) {
	t.Parallel()
	m := agent.Queued{ID: "sensor-thl-001-7", Seq: 7}
	tests := []struct {
		name   string
		err    error
		status int
		want   string
	}{
		{"queued", nil, 200, `{"messageId":"sensor-thl-001-7","queued":true,"seq":7}`},
		{"held", agent.ErrHeld, 200, `{"held":true,"note":"held until the clock is set; it gets its id and seq when queued","queued":false}`},
		{"failed", fmt.Errorf("agent: read env sensor: %w", errors.New("i2c: no ack")), 503, `{"error":"agent: read env sensor: i2c: no ack"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, payload := sendNowAnswer(m, tt.err)
			b, err := json.Marshal(payload)
			if err != nil {
				t.Fatal(err)
			}
			if status != tt.status || string(b) != tt.want {
				t.Errorf("sendNowAnswer(%v) = %d %s; want %d %s", tt.err, status, b, tt.status, tt.want)
			}
		})
	}
}
