// Package agent is the tracker daemon's core loop: every telemetryDelay it
// reads the sensors, builds one message with firmware/telemetry, stores it
// in the on-disk queue and lets a sender goroutine forward the queue to IoT
// Hub, oldest first, whenever the link is up. It applies the device twin's
// desired properties and reports its state back.
//
// The agent knows the outside world only through the small interfaces it
// defines (EnvSensor, Positioner, Queue, Publisher, Reporter), an injected
// Clock and a *slog.Logger, so it runs in tests without a network, a hub or
// hardware. firmware/cmd/tracker adapts the real queue, IoT Hub client and
// drivers to these interfaces.
//
// Store-and-forward: a reading is Put to the queue before any attempt to
// send it and Acked only after Publisher.Send returned nil (the hub's
// PUBACK), so a crash or a dead link never loses an accepted reading; a
// resend after a crash carries the same message id and seq.
package agent
