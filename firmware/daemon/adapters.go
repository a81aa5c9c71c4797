package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/reefer/tracker/firmware/agent"
	"github.com/reefer/tracker/firmware/doctor"
	"github.com/reefer/tracker/firmware/queue"
	"github.com/reefer/tracker/firmware/statequeue"
	"github.com/reefer/tracker/firmware/telemetry"
	"github.com/reefer/tracker/provisioning/iothub"
)

// queueAdapter is the state queue (disk, or memory while the state
// directory is unusable) as an agent.Queue.
type queueAdapter struct{ q *statequeue.Store }

func (a queueAdapter) Append(build func(seq uint64) (agent.Queued, error)) (agent.Queued, error) {
	m, err := a.q.Append(func(seq uint64) (queue.Message, error) {
		m, err := build(seq)
		return queue.Message{ID: m.ID, Seq: m.Seq, Body: m.Body, Props: m.Props, Created: m.Created}, err
	})
	return agent.Queued{ID: m.ID, Seq: m.Seq, Body: m.Body, Props: m.Props, Created: m.Created}, err
}

func (a queueAdapter) Peek(n int) ([]agent.Queued, error) {
	msgs, err := a.q.Peek(n)
	if err != nil {
		return nil, err
	}
	out := make([]agent.Queued, len(msgs))
	for i, m := range msgs {
		out[i] = agent.Queued{ID: m.ID, Seq: m.Seq, Body: m.Body, Props: m.Props, Created: m.Created}
	}
	return out, nil
}

func (a queueAdapter) Ack(seqs ...uint64) error { return a.q.Ack(seqs...) }
func (a queueAdapter) Len() (int, int64)        { return a.q.Len() }
func (a queueAdapter) Dropped() uint64          { return a.q.Dropped() }

// hubMessage maps a queued reading to the telemetry message (docs/protocol.md B.3):
// the message id stays the same on every resend so the cloud can
// de-duplicate, and content type and encoding let IoT Hub route on the body.
func hubMessage(m agent.Queued) iothub.Message {
	return iothub.Message{
		Body:            m.Body,
		MessageID:       m.ID,
		ContentType:     telemetry.ContentType,
		ContentEncoding: telemetry.ContentEncoding,
		CreationTime:    m.Created,
		Properties:      m.Props,
	}
}

// hubLink is the agent's Publisher (a Pipeliner) and Reporter: whatever hub session is
// current. Without one nothing is sent and the agent keeps the message.
type hubLink struct{ d *Daemon }

func (l hubLink) Send(ctx context.Context, m agent.Queued) error {
	c := l.d.current()
	if c == nil {
		return fmt.Errorf("send %s: %w", m.ID, iothub.ErrNotConnected)
	}
	return c.Send(ctx, hubMessage(m))
}

// Publish keeps several messages in flight (agent.Pipeliner): the drain
// after an outage runs at the link's pace, not one round trip per message.
func (l hubLink) Publish(_ context.Context, m agent.Queued) (func(context.Context) error, error) {
	c := l.d.current()
	if c == nil {
		return nil, fmt.Errorf("send %s: %w", m.ID, iothub.ErrNotConnected)
	}
	return c.Publish(hubMessage(m))
}

// UpdateReported reports the agent's document plus the lifecycle status,
// so the cloud sees why a tracker was offline once it is back.
func (l hubLink) UpdateReported(ctx context.Context, patch map[string]any) error {
	c := l.d.current()
	if c == nil {
		return fmt.Errorf("update reported: %w", iothub.ErrNotConnected)
	}
	patch = maps.Clone(patch)
	patch[PropProvisioning] = l.d.p.prov.Status()
	patch[PropCertificates] = l.d.certificates()
	if r := l.d.p.queue.Recovered(); r != nil {
		patch[PropQueueRecovered] = r
	}
	// null deletes the member once the readings are on disk again.
	patch[PropQueueInMemory] = nil
	if f := l.d.p.queue.Fallback(); f != nil {
		patch[PropQueueInMemory] = f
	}
	_, err := c.UpdateReported(ctx, patch)
	return err
}

// onDesired hands the twin GET (authoritative, ApplyTwin) and desired
// patches (ApplyDesired) to the agent. The hub client calls it from one
// goroutine, in version order. Rejected values are logged and reported
// by the agent; nothing here can crash the daemon.
func (d *Daemon) onDesired(u iothub.Desired) {
	if u.Full {
		d.log.Info("twin read", "desired_version", u.Version, "desired", string(u.Props))
		_ = d.p.agent.ApplyTwin(u.Version, u.Props)
		return
	}
	d.log.Info("desired properties changed", "version", u.Version, "patch", string(u.Props))
	_ = d.p.agent.ApplyDesired(u.Version, u.Props)
}

// CommandTimeout bounds carrying out one cloud-to-device command (a
// sendNow waits for the sensors). Past it the message is left
// unacknowledged and the hub delivers it again.
const CommandTimeout = 30 * time.Second

// onC2D carries out a cloud-to-device command. Its nil return lets the
// hub client acknowledge the message, which completes it (docs/protocol.md B.4).
func (d *Daemon) onC2D(m iothub.Message) error {
	ctx, cancel := context.WithTimeout(context.Background(), CommandTimeout)
	defer cancel()
	return d.p.agent.HandleCommand(ctx, m.MessageID, m.Body)
}

// statusAnswer is what getStatus answers: the daemon's state plus the
// facts `tracker doctor` shows, so an operator sees from the cloud what a
// technician would see on site. The doctor part is the offline, no-sensor
// subset: the running tracker already holds the sensors and the hub
// connection, and the agent's report carries their state.
type statusAnswer struct {
	Status
	Doctor doctor.Report `json:"doctor"`
}

// methodGetStatus answers getStatus.
func (d *Daemon) methodGetStatus(ctx context.Context, _ json.RawMessage) (int, any) {
	st, err := d.Status()
	if err != nil {
		return 503, map[string]string{"error": err.Error()}
	}
	// The daemon's own queue figures: opening its locked database would
	// cost doctor's lock wait on every call.
	q := d.p.queue
	n, b := q.Len()
	rep := doctor.Run(ctx, doctor.Inputs{
		RunningQueue: &doctor.QueueFigures{Count: n, Bytes: b, Dropped: q.Dropped(), Recovered: q.Recovered(), InMemory: q.Fallback()},
		Config:       d.cfg.Tracker,
		Offline:      true,
		// The sensors the tracker holds, as they are now: a missing one
		// is a FAIL with its fix, as on site.
		Sensors: d.sensorReport,
		Now:     d.now,
		Logger:  d.log,
	})
	return 200, statusAnswer{Status: st, Doctor: rep}
}

// methodSendNow samples at once and answers with the queued message's id;
// the message itself follows like any other.
func (d *Daemon) methodSendNow(ctx context.Context, _ json.RawMessage) (int, any) {
	return sendNowAnswer(d.SendNow(ctx))
}

// sendNowAnswer is the sendNow method's status and payload. A sample held
// for the clock was taken and will follow: a success, but not queued yet.
func sendNowAnswer(m agent.Queued, err error) (int, any) {
	switch {
	case errors.Is(err, agent.ErrHeld):
		// Numbered when it is queued (the seq and the reading are stored
		// together), so no id yet.
		return 200, map[string]any{"queued": false, "held": true,
			"note": "held until the clock is set; it gets its id and seq when queued"}
	case err != nil:
		return 503, map[string]string{"error": err.Error()}
	}
	return 200, map[string]any{"messageId": m.ID, "seq": m.Seq, "queued": true}
}
