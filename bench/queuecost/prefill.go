package main

import (
	"time"

	"github.com/reefer/tracker/drivers"
	"github.com/reefer/tracker/firmware/queue"
	"github.com/reefer/tracker/firmware/telemetry"
)

// prefill queues n simulated readings in the tracker's queue database, as
// the tracker itself would have during an outage: same message builder,
// same queue, one transaction per reading.
func prefill(path string, n int) error {
	q, err := queue.Open(path, queue.Options{})
	if err != nil {
		return err
	}
	t0 := time.Now().Add(-time.Duration(n) * time.Second)
	hum := 91.0
	for i := range n {
		_, err := q.Append(func(seq uint64) (queue.Message, error) {
			s := telemetry.Sample{
				Seq:  seq,
				Time: t0.Add(time.Duration(i) * time.Second),
				Env: drivers.Env{TemperatureC: 4.1, PressureHPa: 1013.2, HumidityRH: &hum,
					Source: drivers.Simulated, Chip: "reefer simulator"},
				GPSSource: drivers.Simulated,
				Position:  &telemetry.Position{Latitude: 51.9, Longitude: 4.48, Quality: 1, Satellites: 9, Source: drivers.Simulated},
			}
			m, err := telemetry.Build(deviceID, s, 30)
			return queue.Message{ID: m.ID, Seq: m.Seq, Body: m.Body, Props: m.Properties, Created: m.CreatedAt}, err
		})
		if err != nil {
			q.Close()
			return err
		}
	}
	return q.Close()
}
