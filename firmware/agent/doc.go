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
// Store-and-forward: a reading is Appended to the queue, which numbers it
// (seq) in the same durable write, before any attempt to send it, and
// Acked only after Publisher.Send returned nil (the hub's PUBACK), so a
// crash or a dead link never loses an accepted reading; a resend after a
// crash carries the same message id and seq.
//
// Wall clock not set yet: a Raspberry Pi without a battery-backed RTC boots
// in 1970 (or at fake-hwclock's last save) and keeps sampling on cadence
// until NTP steps the clock. A reading taken while Clock.Now is before
// Config.ClockFloor is held in memory, unbuilt and not yet numbered,
// with its Clock.Monotonic reading (which NTP does not step). Once the
// clock is at or past the floor, each held reading is stamped with its true
// time, now minus the monotonic time elapsed since it was taken, and queued
// in sampling order before any newer one. So no message carries a
// timestamp from before the floor. The holding area keeps at most
// Config.HoldMax readings; beyond that the oldest is dropped and counted
// in StatusReport.Dropped, and SendNow answers ErrHeld (the reading gets
// its id and seq when it is queued).
//
// The trade-off: held readings never reach the disk, so a restart or power
// loss before the clock is set loses them (they were never numbered). Writing
// them with a "time unknown" mark and fixing them up at send time would
// need a monotonic clock that outlives the process (CLOCK_BOOTTIME plus the
// kernel's boot id, and after a reboot they could not be fixed at all),
// a queue format change, and a sender that must never send an unfixed one.
// Time sync normally takes seconds to minutes after boot, far less than
// the bound, so the in-memory hold loses almost nothing in practice and the
// queue never holds a timestamp that must be trusted later. A board that
// never gets the time (no network, no RTC) keeps its latest HoldMax
// readings, which before this went out stamped 1970 anyway.
package agent
