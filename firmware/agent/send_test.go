package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reefer/tracker/drivers"
	"github.com/reefer/tracker/firmware/agent"
	"github.com/reefer/tracker/firmware/agent/agenttest"
	"github.com/reefer/tracker/firmware/telemetry"
	"github.com/reefer/tracker/internal/syncbuf"
)

func TestOfflineThenDrainOldestFirst(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	r.start()
	for k := 2; k <= 6; k++ {
		r.clock.Advance(10 * time.Second)
		r.waitPuts(k)
	}
	if n, _ := r.q.Len(); n != 6 || r.pub.Calls() != 0 {
		t.Fatalf("offline: queue %d, publisher calls %d; want 6, 0", n, r.pub.Calls())
	}
	r.a.SetConnected(true)
	eventually(t, "queue drained", func() bool { n, _ := r.q.Len(); return n == 0 })
	sent := r.pub.Sent()
	if got, want := seqs(sent), []uint64{1, 2, 3, 4, 5, 6}; !slices.Equal(got, want) {
		t.Errorf("sent seqs = %v; want %v (oldest first, each once)", got, want)
	}
	if n := r.q.Acks(); n != 1 {
		t.Errorf("backlog of 6 acked in %d queue transactions; want 1 batch", n)
	}
	// Online, a new sample goes straight through.
	r.clock.Advance(10 * time.Second)
	eventually(t, "seq 7 sent", func() bool { return len(r.pub.Sent()) == 7 })
	if got := r.pub.Sent()[6].Seq; got != 7 {
		t.Errorf("7th sent seq = %d; want 7", got)
	}
	st := r.a.Status()
	if st.Sent != 7 || st.QueueDepth != 0 || st.LastSend != t0.Add(60*time.Second) || !st.Connected {
		t.Errorf("Status() = %+v; want 7 sent, empty queue, last send at +60s, connected", st)
	}
}

func TestSendFailureKeepsMessageAndBacksOff(t *testing.T) {
	t.Parallel()
	r := newRig(t, func(c *agent.Config) {
		c.TelemetryDelay = time.Hour
		c.BackoffMin = time.Second
		c.BackoffMax = 4 * time.Second
	})
	r.pub.Fail(agenttest.ErrFake)
	r.a.SetConnected(true)
	r.start()
	// Rand is 0, so each wait is half the doubling delay, capped:
	// 1s/2, 2s/2, 4s/2, 4s/2.
	for i, d := range []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 2 * time.Second} {
		r.waitDeadline(d)
		if got := r.pub.Calls(); got != i+1 {
			t.Fatalf("after %d failures: %d send calls; want %d", i+1, got, i+1)
		}
		r.clock.Advance(d)
		eventually(t, "a retry", func() bool { return r.pub.Calls() > i+1 })
	}
	msgs := r.q.Messages()
	if len(msgs) != 1 || msgs[0].Seq != 1 {
		t.Fatalf("queue = %v; want the failed message kept", seqs(msgs))
	}
	st := r.a.Status()
	if st.SendErrors < 5 || st.LastError == "" || st.Sent != 0 {
		t.Errorf("Status() = %+v; want ≥5 send errors, a last error, nothing sent", st)
	}
	// The hub is back: the same message (same id and seq) goes out.
	r.pub.Fail(nil)
	r.waitDeadline(2 * time.Second)
	r.clock.Advance(2 * time.Second)
	eventually(t, "the kept message sent", func() bool { return len(r.pub.Sent()) == 1 })
	if got := r.pub.Sent()[0]; got.ID != msgs[0].ID || got.Seq != 1 {
		t.Errorf("sent %s seq %d; want %s seq 1", got.ID, got.Seq, msgs[0].ID)
	}
	eventually(t, "ack", func() bool { n, _ := r.q.Len(); return n == 0 })
}

func TestReconnectRetriesAtOnce(t *testing.T) {
	t.Parallel()
	r := newRig(t, func(c *agent.Config) {
		c.TelemetryDelay = time.Hour
		c.BackoffMin = time.Minute
		c.BackoffMax = time.Minute
	})
	r.pub.Fail(agenttest.ErrFake)
	r.a.SetConnected(true)
	r.start()
	r.waitDeadline(30 * time.Second)
	r.pub.Fail(nil)
	r.a.SetConnected(false)
	r.a.SetConnected(true) // the link came back: no need to wait out the minute
	eventually(t, "resend after reconnect", func() bool { return len(r.pub.Sent()) == 1 })
}

func TestSamplingNotBlockedByBlockedPublisher(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	r.pub.Block()
	r.a.SetConnected(true)
	r.start()
	select {
	case <-r.pub.Entered():
	case <-time.After(10 * time.Second):
		t.Fatal("sender never called Send")
	}
	want := []time.Time{t0}
	for k := 1; k <= 5; k++ {
		r.clock.Advance(10 * time.Second)
		want = append(want, t0.Add(time.Duration(k)*10*time.Second))
		r.waitPuts(len(want))
	}
	if got := created(r.q.Messages()); !slices.Equal(got, want) {
		t.Errorf("with Send blocked, sample times = %v; want %v", got, want)
	}
	r.pub.Unblock()
	eventually(t, "backlog sent", func() bool { return len(r.pub.Sent()) == 6 })
	if got, want := seqs(r.pub.Sent()), []uint64{1, 2, 3, 4, 5, 6}; !slices.Equal(got, want) {
		t.Errorf("sent seqs = %v; want %v", got, want)
	}
}

func TestSendNow(t *testing.T) {
	t.Parallel()
	r := newRig(t, func(c *agent.Config) { c.TelemetryDelay = time.Hour })
	if _, err := r.a.SendNow(context.Background()); !errors.Is(err, agent.ErrNotRunning) {
		t.Fatalf("SendNow before Run = %v; want ErrNotRunning", err)
	}
	r.a.SetConnected(true)
	r.start()
	if err := r.a.Run(context.Background()); !errors.Is(err, agent.ErrRunning) {
		t.Errorf("second Run = %v; want ErrRunning", err)
	}
	r.clock.Advance(time.Minute)
	m, err := r.a.SendNow(context.Background())
	if err != nil {
		t.Fatalf("SendNow: %v", err)
	}
	if m.Seq != 2 || m.ID != "sensor-thl-001-2" || !m.Created.Equal(t0.Add(time.Minute)) {
		t.Errorf("SendNow = %s seq %d at %v; want sensor-thl-001-2 seq 2 at %v", m.ID, m.Seq, m.Created, t0.Add(time.Minute))
	}
	eventually(t, "SendNow's message sent", func() bool { return len(r.pub.Sent()) == 2 })
	if got := r.pub.Sent()[1].ID; got != m.ID {
		t.Errorf("sent %q; want %q", got, m.ID)
	}

	// A dead env sensor still gives a message: without env values, saying why.
	r.env.Fail(agenttest.ErrFake)
	m, err = r.a.SendNow(context.Background())
	if err != nil || strings.Contains(string(m.Body), `"temperature"`) || !strings.Contains(string(m.Body), `"env":"missing"`) {
		t.Errorf("SendNow with a dead sensor = %s, %v; want a message without temperature, env missing", m.Body, err)
	}

	r.cancel()
	eventually(t, "Run to return", func() bool { return !r.a.Status().Running })
	if _, err := r.a.SendNow(context.Background()); !errors.Is(err, agent.ErrNotRunning) {
		t.Errorf("SendNow after cancel = %v; want ErrNotRunning", err)
	}
}

func TestFlushOnCancel(t *testing.T) {
	t.Parallel()
	t.Run("sends backlog then returns", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, nil)
		r.pub.Block()
		r.a.SetConnected(true)
		r.start()
		for k := 2; k <= 4; k++ {
			r.clock.Advance(10 * time.Second)
			r.waitPuts(k)
		}
		r.cancel()
		r.pub.Unblock()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Run = %v; want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return after flushing")
		}
		r.done <- nil // for the cleanup
		if got, want := seqs(r.pub.Sent()), []uint64{1, 2, 3, 4}; !slices.Equal(got, want) {
			t.Errorf("flushed seqs = %v; want %v", got, want)
		}
		if n, _ := r.q.Len(); n != 0 {
			t.Errorf("queue = %d after flush; want 0", n)
		}
	})
	t.Run("bounded by FlushTimeout", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, func(c *agent.Config) { c.FlushTimeout = 3 * time.Second })
		r.pub.Block()
		r.a.SetConnected(true)
		r.start()
		<-r.pub.Entered()
		r.cancel()
		r.waitDeadline(3 * time.Second)
		select {
		case <-r.done:
			t.Fatal("Run returned before the flush timeout with a send in flight")
		default:
		}
		r.clock.Advance(3 * time.Second)
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Run = %v; want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return at the flush timeout")
		}
		r.done <- nil
		if msgs := r.q.Messages(); len(msgs) != 1 || msgs[0].Seq != 1 {
			t.Errorf("queue = %v; want the unsent message kept", seqs(msgs))
		}
	})
	t.Run("offline returns at once", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, nil)
		r.start()
		r.cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return when offline")
		}
		r.done <- nil
		if n, _ := r.q.Len(); n != 1 {
			t.Errorf("queue = %d; want 1 kept for the next start", n)
		}
	})
}

func TestSensorErrorsDoNotStopTheLoop(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	r.start()
	r.env.Fail(agenttest.ErrFake)
	for k := 1; k <= 3; k++ {
		r.clock.Advance(10 * time.Second)
		eventually(t, "a failed read", func() bool { return r.env.Reads() == 1+k })
	}
	r.waitPuts(5) // 4 readings and, at the third failure in a row, the envSensorLost alert
	st := r.a.Status()
	if st.SensorErrors != 3 || st.LastError == "" || st.Samples != 4 || !st.AlertActive {
		t.Errorf("Status() = %+v; want 3 sensor errors, a last error, 4 samples", st)
	}
	// What could be read still goes out: no env fields, the reason in source.
	var b struct {
		Temperature *float64          `json:"temperature"`
		Pressure    *float64          `json:"pressure"`
		Source      telemetry.Sources `json:"source"`
	}
	if err := json.Unmarshal(readings(r.q.Messages())[1].Body, &b); err != nil {
		t.Fatal(err)
	}
	if b.Temperature != nil || b.Pressure != nil || b.Source.Env != drivers.Missing || !strings.Contains(b.Source.EnvError, agenttest.ErrFake.Error()) {
		t.Errorf("message while the sensor fails = %s; want no temperature or pressure, source.env missing with the error", r.q.Messages()[1].Body)
	}
	if s := r.a.Status().Sources; s.Env != drivers.Missing || s.EnvError == "" {
		t.Errorf("Status().Sources = %+v; want env missing with the reason", s)
	}
	r.env.Set(env(5))
	r.clock.Advance(10 * time.Second)
	r.waitPuts(7) // the reading and the alert's end
	if got := readings(r.q.Messages())[4].Created; !got.Equal(t0.Add(40 * time.Second)) {
		t.Errorf("sample after recovery at %v; want %v", got, t0.Add(40*time.Second))
	}
	if s := r.a.Status().Sources; s.Env != drivers.Hardware || s.EnvError != "" {
		t.Errorf("Status().Sources after recovery = %+v; want env hardware, no error", s)
	}
	var states []string
	for _, m := range r.q.Messages() {
		if m.Props[telemetry.MessageTypeProperty] == telemetry.MessageTypeAlert {
			states = append(states, m.Props[telemetry.AlertTypeProperty]+" "+m.Props[telemetry.AlertStateProperty])
		}
	}
	if want := []string{"envSensorLost active", "envSensorLost cleared"}; !slices.Equal(states, want) {
		t.Errorf("alerts %q; want %q", states, want)
	}
}

// readings leaves out alert messages.
func readings(ms []agent.Queued) []agent.Queued {
	var out []agent.Queued
	for _, m := range ms {
		if m.Props[telemetry.MessageTypeProperty] != telemetry.MessageTypeAlert {
			out = append(out, m)
		}
	}
	return out
}

// A GPS whose receiver is missing: messages say so and carry no position,
// the temperature still goes out.
func TestMissingGPSStillSends(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	r.gps.SetFix(&telemetry.Position{Latitude: 51.9, Longitude: 4.5, Quality: 1, Satellites: 7, Source: drivers.Hardware})
	r.gps.SetProblem("open serial port /dev/serial0 at 9600 baud: no such file or directory")
	r.start()
	r.waitPuts(2) // the gpsLost alert, then the reading
	if a := r.q.Messages()[0].Props; a[telemetry.AlertTypeProperty] != string(telemetry.AlertGPS) || a[telemetry.AlertStateProperty] != telemetry.AlertActive {
		t.Errorf("first message's properties %v; want the gpsLost alert", a)
	}
	body := string(readings(r.q.Messages())[0].Body)
	if !strings.Contains(body, `"temperature":`) || strings.Contains(body, `"latitude"`) ||
		!strings.Contains(body, `"gps":"missing"`) || !strings.Contains(body, `"gpsError":"open serial port /dev/serial0`) {
		t.Errorf("body = %s; want temperature, no position, gps missing with the reason", body)
	}
	if s := r.a.Status().Sources; s.GPS != drivers.Missing || s.GPSError == "" {
		t.Errorf("Status().Sources = %+v; want gps missing with the reason", s)
	}
}

func TestQueuePutErrorCounted(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil)
	r.start()
	r.q.FailPut(agenttest.ErrFake)
	r.clock.Advance(10 * time.Second)
	eventually(t, "queue error counted", func() bool { return r.a.Status().QueueErrors == 1 })
	r.q.FailPut(nil)
	r.clock.Advance(10 * time.Second)
	r.waitPuts(2)
}

// failOnce fails the first attempt at one seq and passes the rest through.
type failOnce struct {
	*agenttest.Publisher
	seq    uint64
	failed atomic.Bool
}

func (p *failOnce) Send(ctx context.Context, m agent.Queued) error {
	if m.Seq == p.seq && p.failed.CompareAndSwap(false, true) {
		return agenttest.ErrFake
	}
	return p.Publisher.Send(ctx, m)
}

func TestPartialBatchAcksOnlyWhatWasSent(t *testing.T) {
	t.Parallel()
	pub := &failOnce{Publisher: agenttest.NewPublisher(), seq: 3}
	r := newRig(t, func(c *agent.Config) { c.Publisher = pub })
	r.start()
	for k := 2; k <= 5; k++ {
		r.clock.Advance(10 * time.Second)
		r.waitPuts(k)
	}
	r.a.SetConnected(true)
	r.waitDeadline(500 * time.Millisecond) // back-off after seq 3 failed
	if got, want := seqs(r.q.Messages()), []uint64{3, 4, 5}; !slices.Equal(got, want) {
		t.Errorf("queue after a failure at seq 3 = %v; want %v", got, want)
	}
	r.clock.Advance(500 * time.Millisecond)
	eventually(t, "the rest sent", func() bool { n, _ := r.q.Len(); return n == 0 })
	if got, want := seqs(pub.Sent()), []uint64{1, 2, 3, 4, 5}; !slices.Equal(got, want) {
		t.Errorf("sent seqs = %v; want %v each once", got, want)
	}
}

// ackFailQueue is a queue whose Ack always fails, as one that cannot read
// its database does.
type ackFailQueue struct {
	*agenttest.Queue
	acks atomic.Int64
}

func (q *ackFailQueue) Ack(...uint64) error {
	q.acks.Add(1)
	return agenttest.ErrFake
}

func TestAckFailureBacksOff(t *testing.T) {
	t.Parallel()
	var q *ackFailQueue
	r := newRig(t, func(c *agent.Config) {
		q = &ackFailQueue{Queue: c.Queue.(*agenttest.Queue)}
		c.Queue = q
		c.TelemetryDelay = time.Hour
		c.BackoffMin = time.Second
		c.BackoffMax = 4 * time.Second
	})
	r.a.SetConnected(true)
	r.start()
	// The message went out but stays queued: the sender must treat that as
	// a failure and wait, not resend the same message in a tight loop.
	r.waitDeadline(500 * time.Millisecond)
	time.Sleep(50 * time.Millisecond) // a hot loop would resend thousands of times
	if got := r.pub.Calls(); got != 1 {
		t.Errorf("after a failed ack: %d send calls before the back-off ran out; want 1", got)
	}
	if got := q.acks.Load(); got != 1 {
		t.Errorf("after a failed ack: %d ack calls; want 1", got)
	}
	if st := r.a.Status(); st.QueueErrors == 0 || st.LastError == "" {
		t.Errorf("Status() = %+v; want the ack failure counted and reported", st)
	}
	// Back-off over: the same message is sent again (same id), once.
	r.clock.Advance(500 * time.Millisecond)
	eventually(t, "a resend", func() bool { return r.pub.Calls() >= 2 })
	if sent := r.pub.Sent(); sent[0].ID != sent[1].ID {
		t.Errorf("resent %q; want the same id %q", sent[1].ID, sent[0].ID)
	}
}

// pipe is an agent.Pipeliner whose acknowledgements the test gives: it
// shows how many messages the sender keeps in flight.
type pipe struct {
	*agenttest.Publisher // Send: unused while Publish exists
	mu                   sync.Mutex
	published            []uint64
	acks                 map[uint64]chan error
}

func newPipe() *pipe {
	return &pipe{Publisher: agenttest.NewPublisher(), acks: map[uint64]chan error{}}
}

func (p *pipe) Publish(_ context.Context, m agent.Queued) (func(context.Context) error, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ch := make(chan error, 1)
	p.published = append(p.published, m.Seq)
	p.acks[m.Seq] = ch
	return func(ctx context.Context) error {
		select {
		case err := <-ch:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}, nil
}

func (p *pipe) Published() []uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.published)
}

func (p *pipe) ack(seq uint64, err error) {
	p.mu.Lock()
	ch := p.acks[seq]
	p.mu.Unlock()
	ch <- err
}

// After an outage the backlog goes out as one batch with every message in
// flight before the first acknowledgement; what the hub accepted leaves
// the queue in one Ack, a failed one stays; one log line for the batch.
func TestDrainPipelinesTheBatch(t *testing.T) {
	t.Parallel()
	p := newPipe()
	var logs syncbuf.Buffer
	r := newRig(t, func(c *agent.Config) {
		c.Publisher = p
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		c.BackoffMin, c.BackoffMax = time.Hour, time.Hour
	})
	r.start()
	for k := 2; k <= 6; k++ {
		r.clock.Advance(10 * time.Second)
		r.waitPuts(k)
	}
	r.a.SetConnected(true)
	eventually(t, "all six in flight", func() bool { return len(p.Published()) == 6 })
	if got := p.Published(); !slices.Equal(got, []uint64{1, 2, 3, 4, 5, 6}) {
		t.Fatalf("published %v; want 1..6 in order", got)
	}
	for seq := uint64(1); seq <= 6; seq++ {
		var err error
		if seq == 4 {
			err = agenttest.ErrFake
		}
		p.ack(seq, err)
	}
	eventually(t, "the batch acknowledged", func() bool { n, _ := r.q.Len(); return n == 1 })
	if got := seqs(r.q.Messages()); !slices.Equal(got, []uint64{4}) {
		t.Errorf("left queued %v; want [4], the one the hub did not acknowledge", got)
	}
	if n := r.q.Acks(); n != 1 {
		t.Errorf("Ack calls = %d; want 1 for the batch", n)
	}
	if st := r.a.Status(); st.Sent != 5 || st.SendErrors != 1 {
		t.Errorf("Status() sent %d, send errors %d; want 5, 1", st.Sent, st.SendErrors)
	}
	log := logs.String()
	if n := strings.Count(log, "telemetry batch sent"); n != 1 || !strings.Contains(log, "sent=5 of=6 first_seq=1 last_seq=6") {
		t.Errorf("log has %d batch lines; want one saying 5 of 6, seqs 1..6:\n%s", n, log)
	}
	if strings.Contains(log, "msg=\"telemetry sent\"") {
		t.Errorf("a line per message while draining:\n%s", log)
	}
}

// A backlog of more than one batch drains two batches deep: the second
// batch is published before the first one's acknowledgements come back,
// so the hub always has work while the sender collects and acknowledges.
func TestDrainKeepsTwoBatchesInFlight(t *testing.T) {
	t.Parallel()
	p := newPipe()
	r := newRig(t, func(c *agent.Config) {
		c.Publisher = p
		c.TelemetryDelay = time.Hour
		c.BackoffMin, c.BackoffMax = time.Hour, time.Hour
	})
	const backlog = 300 // one full batch (256) and part of a second
	for i := range backlog {
		if _, err := r.q.Append(func(seq uint64) (agent.Queued, error) {
			return agent.Queued{ID: fmt.Sprintf("sensor-thl-001-%d", seq), Seq: seq, Body: []byte("{}")}, nil
		}); err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
	}
	// The first sample (backlog+1) is queued before the drain starts: had
	// it arrived after the second batch was read, it would wait for a
	// third batch and the two-deep check below would never be met.
	r.start()
	eventually(t, "the first sample queued", func() bool { n, _ := r.q.Len(); return n == backlog+1 })
	r.a.SetConnected(true)
	eventually(t, "both batches in flight before any acknowledgement", func() bool { return len(p.Published()) == backlog+1 })
	got := p.Published()
	for i, seq := range got {
		if seq != uint64(i+1) {
			t.Fatalf("published %v...; want 1..%d in order", got[:min(len(got), i+3)], backlog+1)
		}
	}
	for _, seq := range got {
		p.ack(seq, nil)
	}
	eventually(t, "the backlog acknowledged", func() bool { n, _ := r.q.Len(); return n == 0 })
	if n := r.q.Acks(); n != 2 {
		t.Errorf("Ack calls = %d; want 2, one per batch", n)
	}
	if st := r.a.Status(); st.Sent != backlog+1 || st.SendErrors != 0 {
		t.Errorf("Status() sent %d, send errors %d; want %d, 0", st.Sent, st.SendErrors, backlog+1)
	}
}
