package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"
)

// Telemetry history (spec B.3, F). IoT Hub retains device-to-cloud messages
// for days, whatever happens to the identity afterwards, so the history of
// a device outlives its deletion here too. The emulator keeps the most
// recent messages per device, bounded by count and bytes, in memory and on
// disk.
//
// On disk each device has an append-only file
// hubs/{hub}/telemetry/{id}.jsonl of records "crc32hex json\n". A
// background flusher appends what arrived since its last run every
// FlushInterval, one write per device; a message therefore costs no disk
// I/O on the device's path. Appends are not fsynced: a process crash loses
// nothing that was written, a power loss at most the last interval. When a
// file holds more than twice the live records, or more bytes than a
// history can need (see diskLimit), it is rewritten with the live history
// through a temp file and a rename. Loading skips a torn or corrupt record
// (a crash mid-append) and rewrites such a file, so a crash never corrupts
// the history, it only loses the torn tail.

// Telemetry defaults.
const (
	DefaultTelemetryHistory       = 1000
	DefaultTelemetryHistoryBytes  = 1 << 20
	DefaultTelemetryFlushInterval = 100 * time.Millisecond
)

// recordOverhead is a generous per-record allowance for the JSON framing
// of a message on disk (keys, time, checksum) beyond its base64 body.
const recordOverhead = 512

// telemetryLog is one device's history: the live messages are
// buf[start:]. Messages are never changed once stored and buf is never
// written below len, so a sub-slice taken under the lock stays valid
// after it is released; trimming advances start and copies to a fresh
// array once start passes half of buf (amortised O(1) per message).
type telemetryLog struct {
	buf       []Message
	start     int
	bytes     int // MessageSize sum of the live messages
	unflushed int // newest live messages not yet handed to the flusher
}

func (l *telemetryLog) live() []Message { return l.buf[l.start:] }

// add appends m and drops the oldest messages while the history is over
// maxN messages or maxBytes bytes; the newest message is always kept.
func (l *telemetryLog) add(m Message, maxN, maxBytes int) {
	l.buf = append(l.buf, m)
	l.bytes += MessageSize(m)
	l.unflushed++
	for n := len(l.buf) - l.start; n > 1 && (n > maxN || l.bytes > maxBytes); n-- {
		l.bytes -= MessageSize(l.buf[l.start])
		l.start++
	}
	if l.start > 0 && l.start >= len(l.buf)/2 {
		l.buf = slices.Clone(l.buf[l.start:])
		l.start = 0
	}
	l.unflushed = min(l.unflushed, len(l.buf)-l.start)
}

// MessageSize is the size of a D2C message as IoT Hub counts it (spec F):
// the body, the values of system properties, and the names and values of
// application properties.
func MessageSize(m Message) int {
	n := len(m.Body)
	for _, v := range m.SystemProperties {
		n += len(v)
	}
	for k, v := range m.Properties {
		n += len(k) + len(v)
	}
	return n
}

type telKey struct {
	h  *hubState
	id string
}

// diskLog is what the flusher knows about one device's file. Only the
// flusher (under flushMu) touches it.
type diskLog struct {
	count  int   // records in the file
	size   int64 // bytes in the file
	broken bool  // a write failed or the file held bad records: rewrite
}

// telemetryRecord is the on-disk form of a Message. The hub is implied by
// the directory (its host name may change between runs), and the time
// keeps full precision so a restart reproduces it exactly.
type telemetryRecord struct {
	DeviceID         string            `json:"deviceId"`
	Topic            string            `json:"topic,omitempty"`
	EnqueuedTime     time.Time         `json:"enqueuedTime"`
	Body             []byte            `json:"body,omitempty"`
	MessageID        string            `json:"messageId,omitempty"`
	SystemProperties map[string]string `json:"systemProperties,omitempty"`
	Properties       map[string]string `json:"properties,omitempty"`
}

func (s *Store) telemetryDir(h *hubState) string { return s.path("hubs", h.Name, "telemetry") }

func (s *Store) telemetryPath(h *hubState, id string) string {
	return filepath.Join(s.telemetryDir(h), escapeID(id)+".jsonl")
}

// diskLimit is the file size above which a device's file is compacted:
// room for two full histories with base64 bodies and record framing.
func (s *Store) diskLimit() int64 {
	return 3*int64(s.opts.TelemetryHistoryBytes) + 2*int64(s.opts.TelemetryHistory)*recordOverhead
}

// RecordTelemetry appends a device-to-cloud message to the device's bounded
// history (spec B.3). EnqueuedTime is set when zero. The message reaches
// the disk within Options.TelemetryFlushInterval.
func (s *Store) RecordTelemetry(m Message) error {
	s.mu.Lock()
	h, r, err := s.device(m.Hub, m.DeviceID)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	if m.EnqueuedTime.IsZero() {
		m.EnqueuedTime = Time{s.now().UTC()}
	}
	r.Device.LastActivityTime = m.EnqueuedTime
	l := h.telemetry[m.DeviceID]
	if l == nil {
		l = &telemetryLog{}
		h.telemetry[m.DeviceID] = l
	}
	l.add(m, s.opts.TelemetryHistory, s.opts.TelemetryHistoryBytes)
	s.telDirty[telKey{h, m.DeviceID}] = l
	if !s.flushRunning && !s.closed {
		s.flushRunning = true
		s.flushWG.Add(1)
		go s.flushLoop()
	}
	s.mu.Unlock()

	s.telMu.Lock()
	close(s.telSignal)
	s.telSignal = make(chan struct{})
	s.telMu.Unlock()
	return nil
}

// Telemetry returns the recorded messages of a device, oldest first. The
// history stays after the identity is deleted (spec F: retained messages).
func (s *Store) Telemetry(hub, id string) []Message {
	s.mu.RLock()
	defer s.mu.RUnlock()
	h := s.hubs[hub]
	if h == nil || h.telemetry[id] == nil {
		return nil
	}
	return slices.Clone(h.telemetry[id].live())
}

// TelemetrySignal returns a channel that is closed at the next recorded
// telemetry message, for waiting without polling.
func (s *Store) TelemetrySignal() <-chan struct{} {
	s.telMu.Lock()
	defer s.telMu.Unlock()
	return s.telSignal
}

// flushLoop runs while there is telemetry to write: it starts with the
// first message after an idle period and ends after an interval without
// any, so an idle store has no goroutine.
func (s *Store) flushLoop() {
	defer s.flushWG.Done()
	t := time.NewTimer(s.opts.TelemetryFlushInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-s.closing:
		}
		_ = s.FlushTelemetry()
		s.mu.Lock()
		if len(s.telDirty) == 0 || s.closed {
			s.flushRunning = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		t.Reset(s.opts.TelemetryFlushInterval)
	}
}

type telJob struct {
	key   telKey
	l     *telemetryLog
	live  []Message // the live history when the job was taken
	fresh int       // how many of its newest are not in the file yet
}

// FlushTelemetry writes every recorded message that is not on disk yet.
// The flusher calls it periodically and Close calls it once more; callers
// rarely need it. It returns the first write error; the failed devices
// are retried at the next flush.
func (s *Store) FlushTelemetry() error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	s.mu.Lock()
	jobs := make([]telJob, 0, len(s.telDirty))
	for k, l := range s.telDirty {
		jobs = append(jobs, telJob{key: k, l: l, live: l.live(), fresh: l.unflushed})
		l.unflushed = 0
	}
	clear(s.telDirty)
	s.mu.Unlock()
	var first error
	for _, j := range jobs {
		if err := s.writeTelemetry(j); err != nil {
			s.log.Warn("telemetry history not saved", "hub", j.key.h.HostName, "deviceId", j.key.id, "err", err)
			if first == nil {
				first = fmt.Errorf("save telemetry of %s: %w", j.key.id, err)
			}
			// The failed file is rewritten from memory next time.
			s.mu.Lock()
			s.telDirty[j.key] = j.l
			s.mu.Unlock()
		}
	}
	return first
}

func encodeRecords(msgs []Message) ([]byte, error) {
	var out []byte
	for i := range msgs {
		m := &msgs[i]
		b, err := json.Marshal(telemetryRecord{DeviceID: m.DeviceID, Topic: m.Topic, EnqueuedTime: m.EnqueuedTime.Time,
			Body: m.Body, MessageID: m.MessageID, SystemProperties: m.SystemProperties, Properties: m.Properties})
		if err != nil {
			return nil, err
		}
		out = fmt.Appendf(out, "%08x ", crc32.ChecksumIEEE(b))
		out = append(out, b...)
		out = append(out, '\n')
	}
	return out, nil
}

// writeTelemetry appends a job's fresh messages to the device's file, or
// rewrites the file with the live history when it would grow past twice
// the live records or diskLimit, or is broken. Caller holds flushMu.
func (s *Store) writeTelemetry(j telJob) error {
	path := s.telemetryPath(j.key.h, j.key.id)
	d := s.disk[path]
	fresh := j.live[len(j.live)-j.fresh:]
	if d == nil {
		// No file yet (loading registers every existing one): create it
		// with the whole history. Like an append, a torn write here is
		// cut off at the next load, so no temp file is needed.
		d = &diskLog{}
		s.disk[path] = d
		fresh = j.live
	}
	rec, err := encodeRecords(fresh)
	if err != nil {
		return err
	}
	dead := d.count + len(fresh) - len(j.live)
	if d.broken || dead > len(j.live) || d.size+int64(len(rec)) > s.diskLimit() {
		all, err := encodeRecords(j.live)
		if err != nil {
			return err
		}
		d.broken = true
		if err := WriteFileAtomic(path, all, !s.opts.NoSync); err != nil {
			return err
		}
		d.count, d.size, d.broken = len(j.live), int64(len(all)), false
		return nil
	}
	if len(rec) == 0 {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(filepath.Dir(path), 0o700); err == nil {
			f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		}
	}
	if err != nil {
		d.broken = true
		return err
	}
	n, err := f.Write(rec)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	d.size += int64(n)
	if err != nil {
		d.broken = true
		return err
	}
	d.count += len(fresh)
	return nil
}

// loadTelemetry reads the history files of hub h. A record that is torn
// or fails its checksum is skipped and its file rewritten with the good
// records.
func (s *Store) loadTelemetry(h *hubState) error {
	return readDirFiles(s.telemetryDir(h), ".jsonl", func(path string, b []byte) error {
		recs, bad := parseRecords(b)
		if len(recs) == 0 {
			return s.remove(path)
		}
		id := recs[0].DeviceID
		l := &telemetryLog{}
		for _, r := range recs {
			l.add(Message{DeviceID: id, Hub: h.HostName, Topic: r.Topic, EnqueuedTime: Time{r.EnqueuedTime.UTC()},
				Body: r.Body, MessageID: r.MessageID, SystemProperties: r.SystemProperties, Properties: r.Properties},
				s.opts.TelemetryHistory, s.opts.TelemetryHistoryBytes)
		}
		l.unflushed = 0
		h.telemetry[id] = l
		d := &diskLog{count: len(recs), size: int64(len(b)), broken: bad > 0}
		s.disk[path] = d
		if bad > 0 {
			s.log.Warn("telemetry history had damaged records; dropped them", "file", path, "records", bad)
			if err := s.writeTelemetry(telJob{key: telKey{h, id}, l: l, live: l.live()}); err != nil {
				return fmt.Errorf("repair %s: %w", path, err)
			}
		}
		return nil
	})
}

// parseRecords decodes "crc32hex json\n" records, counting the ones that
// are torn, fail their checksum or do not decode.
func parseRecords(b []byte) (recs []telemetryRecord, bad int) {
	for len(b) > 0 {
		line, rest, ok := bytes.Cut(b, []byte{'\n'})
		b = rest
		if !ok { // torn tail: the newline is written last
			bad++
			break
		}
		if len(line) < 10 || line[8] != ' ' {
			bad++
			continue
		}
		sum, err := strconv.ParseUint(string(line[:8]), 16, 32)
		if err != nil || uint32(sum) != crc32.ChecksumIEEE(line[9:]) {
			bad++
			continue
		}
		var r telemetryRecord
		if err := json.Unmarshal(line[9:], &r); err != nil || r.DeviceID == "" {
			bad++
			continue
		}
		recs = append(recs, r)
	}
	return recs, bad
}

// Close writes the telemetry that is not on disk yet and stops the
// flusher. The store stays readable; telemetry recorded afterwards is kept
// in memory only.
func (s *Store) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.closing)
	}
	s.mu.Unlock()
	s.flushWG.Wait()
	return s.FlushTelemetry()
}
