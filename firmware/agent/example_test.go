package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/reefer/tracker/drivers"
	"github.com/reefer/tracker/firmware/agent"
	"github.com/reefer/tracker/firmware/agent/agenttest"
)

// Example shows how main wires the agent. The fakes stand in for the
// adapted bbolt queue, IoT Hub client and sensors; the hub client calls
// SetConnected from its connect/lost handlers, ApplyDesired for desired
// patches and twin GETs, and Status/SendNow for the direct methods.
func Example() {
	clock := agenttest.NewClock(time.Date(2026, 11, 28, 13, 45, 0, 0, time.UTC))
	pub := agenttest.NewPublisher()
	a, err := agent.New(agent.Config{
		DeviceID:        "sensor-thl-001",
		FirmwareVersion: "1.0.0",
		Env:             agenttest.NewSensor(drivers.Env{TemperatureC: 31, PressureHPa: 1013.25, Source: drivers.Simulated}),
		Queue:           &agenttest.Queue{},
		Publisher:       pub,
		Reporter:        &agenttest.Reporter{},
		Clock:           clock,
		Logger:          slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
		TelemetryDelay:  10 * time.Second,
		FlushTimeout:    time.Second,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	for !a.Status().Running {
		time.Sleep(time.Millisecond)
	}

	// The enrollment's initial twin (version 2), as the hub client hands
	// it over: the properties without the protocol's $version.
	if err := a.ApplyDesired(2, json.RawMessage(`{"telemetryDelay":"1"}`)); err != nil {
		fmt.Println(err)
	}
	a.SetConnected(true)
	m, err := a.SendNow(ctx) // the sendNow direct method
	if err != nil {
		fmt.Println(err)
		return
	}
	for len(pub.Sent()) < 2 { // the sample at start, then SendNow's
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done

	st, _ := json.Marshal(struct {
		Delay float64 `json:"telemetryDelay"`
		Depth int     `json:"queueDepth"`
	}{a.Status().TelemetryDelay, a.Status().QueueDepth})
	fmt.Println(m.ID, m.Props["temperatureAlert"], string(st))
	// Output: sensor-thl-001-2 true {"telemetryDelay":1,"queueDepth":0}
}
