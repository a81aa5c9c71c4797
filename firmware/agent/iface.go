package agent

import (
	"context"
	"time"

	"github.com/reefer/tracker/drivers"
	"github.com/reefer/tracker/firmware/telemetry"
)

// EnvSensor reads temperature, pressure and humidity (drivers/bme280 or
// drivers/simulated, chosen by drivers/choose in main).
type EnvSensor = drivers.EnvSensor

// Positioner gives the latest GPS fix. main adapts the drivers/gps
// receiver, which reads NMEA in its own goroutine.
type Positioner interface {
	// Latest returns the last valid fix; false when there is none (no fix
	// yet, or the fix is stale). Without a fix latitude and longitude are
	// omitted from the message, never sent as 0,0.
	Latest() (telemetry.Position, bool)
	// Source says whether the receiver is real or simulated, fix or not.
	Source() drivers.Source
	// Problem says why a receiver gives nothing at all (its port is
	// missing, or it has sent no NMEA for a while); empty while it works,
	// with or without a fix. Messages then say source.gps "missing" and
	// carry the reason.
	Problem() string
}

// Queued is one message in the store-and-forward queue.
type Queued struct {
	ID      string // message id ($.mid), stable across resends
	Seq     uint64
	Body    []byte
	Props   map[string]string // application properties (temperatureAlert)
	Created time.Time         // when the reading was taken ($.ctime)
}

// Enqueuer stores new messages.
type Enqueuer interface {
	// Append takes the next per-device sequence number, calls build with
	// it and stores the message build returns, as one durable step: a
	// crash neither burns a number nor issues one twice. Numbers only
	// increase, across restarts too. A build error stores nothing, uses
	// no number, and is returned as is. Append returns the stored message
	// (Seq set).
	Append(build func(seq uint64) (Queued, error)) (Queued, error)
}

// Drainer is how the sender reads and removes messages.
type Drainer interface {
	// Peek returns up to n messages, oldest first, without removing them.
	// Acknowledged messages are never returned again.
	Peek(n int) ([]Queued, error)
	// Ack removes messages the hub accepted, by seq. It may only record
	// the fact and write it later (a crash before then means a resend with
	// the same id), and must not fail for want of disk space.
	Ack(seqs ...uint64) error
}

// QueueStats reports the queue's size and losses.
type QueueStats interface {
	// Len returns the number of messages and their total size in bytes.
	Len() (int, int64)
	// Dropped counts messages discarded because the queue was full.
	Dropped() uint64
}

// Queue is the on-disk queue (firmware/queue, adapted by main).
type Queue interface {
	Enqueuer
	Drainer
	QueueStats
}

// Publisher sends one message to IoT Hub.
type Publisher interface {
	// Send returns nil only once the hub acknowledged the message (QoS 1
	// PUBACK, docs/protocol.md B.2). Any error means "not sent, keep it".
	Send(ctx context.Context, m Queued) error
}

// Pipeliner is a Publisher that can keep several messages in flight. The
// sender uses it when the Publisher has it: a backlog then drains at the
// link's throughput instead of one round trip per message.
type Pipeliner interface {
	// Publish hands m to the link without waiting for the hub; wait then
	// returns nil only once the hub acknowledged m. Messages go out in the
	// order of the Publish calls. An error from either means "not
	// acknowledged, keep it".
	Publish(ctx context.Context, m Queued) (wait func(context.Context) error, err error)
}

// Reporter patches the twin's reported properties (docs/protocol.md B.5).
type Reporter interface {
	UpdateReported(ctx context.Context, patch map[string]any) error
}
