package store

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/reefer/tracker/internal/atomicfile"
)

// Telemetry history (docs/protocol.md B.3, F). IoT Hub retains device-to-cloud messages
// for days, whatever happens to the identity afterwards, so the history of
// a device outlives its deletion here too. The emulator keeps the most
// recent messages per device, bounded by count and bytes, in memory and on
// disk.
//
// On disk each hub has one append-only log hubs/{hub}/telemetry.jsonl of
// records "crc32hex json\n". A background flusher appends what arrived
// since its last run every FlushInterval in a single write, so a message
// costs no disk I/O on the device's path and 10,000 devices cost one write
// per interval, not one per device. Appends are not fsynced: a process
// crash loses nothing that was written, a power loss at most the last
// interval. When the log holds more than twice the live records (or bytes)
// plus some slack, it is rewritten with the live histories through a temp
// file and a rename: the old or the new log, never a mix. Loading skips a
// torn or corrupt record (a crash mid-append) and rewrites such a log, so a
// crash never corrupts the history; it only loses the torn tail.

// Telemetry defaults.
const (
	DefaultTelemetryHistory       = 1000
	DefaultTelemetryHistoryBytes  = 1 << 20
	DefaultTelemetryFlushInterval = 100 * time.Millisecond
)

// recordOverhead is a generous per-record allowance for the JSON framing
// of a message on disk (keys, time, checksum) beyond its base64 body.
const recordOverhead = 512

// telSize counts records and their MessageSize bytes.
type telSize struct{ n, bytes int }

// telFile is what the flusher knows about a hub's log; flushMu guards it.
type telFile struct {
	records int
	size    int64
	broken  bool // a write failed or loading found bad records: rewrite
}

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
// maxN messages or maxBytes bytes; the newest message is always kept. It
// returns how the live size changed.
func (l *telemetryLog) add(m Message, maxN, maxBytes int) (delta telSize) {
	size := MessageSize(m)
	l.buf = append(l.buf, m)
	l.bytes += size
	l.unflushed++
	delta = telSize{1, size}
	for n := len(l.buf) - l.start; n > 1 && (n > maxN || l.bytes > maxBytes); n-- {
		drop := MessageSize(l.buf[l.start])
		l.bytes -= drop
		l.start++
		delta.n--
		delta.bytes -= drop
	}
	if l.start > 0 && l.start >= len(l.buf)/2 {
		l.buf = slices.Clone(l.buf[l.start:])
		l.start = 0
	}
	l.unflushed = min(l.unflushed, len(l.buf)-l.start)
	return delta
}

func (h *hubState) addTelemetry(l *telemetryLog, m Message, maxN, maxBytes int) {
	d := l.add(m, maxN, maxBytes)
	h.telLive.n += d.n
	h.telLive.bytes += d.bytes
}

// MessageSize is the size of a D2C message as IoT Hub counts it (docs/protocol.md F):
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

// telemetryRecord is the on-disk form of a Message. The hub is implied by
// the file (its host name may change between runs), and the time keeps
// full precision so a restart reproduces it exactly.
type telemetryRecord struct {
	DeviceID         string            `json:"deviceId"`
	Topic            string            `json:"topic,omitempty"`
	EnqueuedTime     time.Time         `json:"enqueuedTime"`
	Body             []byte            `json:"body,omitempty"`
	MessageID        string            `json:"messageId,omitempty"`
	SystemProperties map[string]string `json:"systemProperties,omitempty"`
	Properties       map[string]string `json:"properties,omitempty"`
}

func (s *Store) telemetryPath(h *hubState) string { return s.path("hubs", h.Name, "telemetry.jsonl") }

// needsCompaction reports whether appending add to h's log would leave it
// holding more than twice the live records or bytes, plus slack. Caller
// holds mu and flushMu.
func (s *Store) needsCompaction(h *hubState, add telSize) bool {
	f, live := h.telFile, h.telLive
	if f.broken {
		return true
	}
	// On disk a record is its base64 body plus framing.
	liveDisk := int64(2*live.bytes + recordOverhead*live.n)
	return f.records+add.n > 2*live.n+s.compactSlack ||
		f.size+int64(2*add.bytes+recordOverhead*add.n) > 2*liveDisk+int64(s.compactSlack)*recordOverhead
}

// RecordTelemetry appends a device-to-cloud message to the device's bounded
// history (docs/protocol.md B.3). EnqueuedTime is set when zero. The message reaches
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
	h.addTelemetry(l, m, s.opts.TelemetryHistory, s.opts.TelemetryHistoryBytes)
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
// history stays after the identity is deleted (docs/protocol.md F: retained messages).
func (s *Store) Telemetry(hub, id string) []Message {
	s.mu.RLock()
	defer s.mu.RUnlock()
	h := s.hubs[hub]
	if h == nil || h.telemetry[id] == nil {
		return nil
	}
	return slices.Clone(h.telemetry[id].live())
}

// TelemetryCount returns how many messages are recorded for a device,
// without copying them.
func (s *Store) TelemetryCount(hub, id string) int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	h := s.hubs[hub]
	if h == nil || h.telemetry[id] == nil {
		return 0
	}
	return len(h.telemetry[id].live())
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

// telBatch is one hub's share of a flush: new messages to append, or
// (rewrite) every live message.
type telBatch struct {
	h       *hubState
	msgs    [][]Message
	n       int
	rewrite bool
	logs    []telKey // the devices in the batch, re-marked on failure
}

// FlushTelemetry writes every recorded message that is not on disk yet.
// The flusher calls it periodically and Close calls it once more; callers
// rarely need it. It returns the first write error; a failed hub log is
// rewritten at the next flush.
func (s *Store) FlushTelemetry() error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	s.mu.Lock()
	batches := map[*hubState]*telBatch{}
	var adds map[*hubState]telSize
	for k, l := range s.telDirty {
		b := batches[k.h]
		if b == nil {
			b = &telBatch{h: k.h}
			batches[k.h] = b
		}
		live := l.live()
		b.msgs = append(b.msgs, live[len(live)-l.unflushed:])
		b.n += l.unflushed
		b.logs = append(b.logs, k)
		if adds == nil {
			adds = map[*hubState]telSize{}
		}
		a := adds[k.h]
		for _, m := range live[len(live)-l.unflushed:] {
			a.n++
			a.bytes += MessageSize(m)
		}
		adds[k.h] = a
		l.unflushed = 0
	}
	clear(s.telDirty)
	for h, b := range batches {
		if s.needsCompaction(h, adds[h]) {
			b.rewrite, b.msgs, b.n = true, nil, 0
			for _, id := range slices.Sorted(maps.Keys(h.telemetry)) {
				live := h.telemetry[id].live()
				b.msgs = append(b.msgs, live)
				b.n += len(live)
			}
		}
	}
	s.mu.Unlock()

	var first error
	for _, b := range batches {
		if err := s.writeBatch(b); err != nil {
			b.h.telFile.broken = true
			s.log.Warn("telemetry history not saved", "hub", b.h.HostName, "err", err)
			if first == nil {
				first = fmt.Errorf("save telemetry of %s: %w", b.h.HostName, err)
			}
			// Keep the flusher coming back: the broken log is rewritten.
			s.mu.Lock()
			for _, k := range b.logs {
				s.telDirty[k] = k.h.telemetry[k.id]
			}
			s.mu.Unlock()
		}
	}
	return first
}

// appendRecord appends m as a "crc32hex json\n" record. The JSON is
// written by hand (it decodes as a telemetryRecord): encoding/json's
// reflection and map sorting cost more than the rest of a message's trip
// through the emulator.
func appendRecord(out []byte, m *Message) []byte {
	start := len(out)
	out = append(out, "00000000 "...)
	out = append(out, `{"deviceId":`...)
	out = appendJSONString(out, m.DeviceID)
	if m.Topic != "" {
		out = append(out, `,"topic":`...)
		out = appendJSONString(out, m.Topic)
	}
	out = append(out, `,"enqueuedTime":"`...)
	out = m.EnqueuedTime.Time.AppendFormat(out, time.RFC3339Nano)
	out = append(out, '"')
	if len(m.Body) > 0 {
		out = append(out, `,"body":"`...)
		out = base64.StdEncoding.AppendEncode(out, m.Body)
		out = append(out, '"')
	}
	if m.MessageID != "" {
		out = append(out, `,"messageId":`...)
		out = appendJSONString(out, m.MessageID)
	}
	out = appendJSONMap(out, `,"systemProperties":`, m.SystemProperties)
	out = appendJSONMap(out, `,"properties":`, m.Properties)
	out = append(out, '}')
	const hexdigits = "0123456789abcdef"
	sum := crc32.ChecksumIEEE(out[start+9:])
	for i := 7; i >= 0; i-- {
		out[start+i] = hexdigits[sum&0xf]
		sum >>= 4
	}
	return append(out, '\n')
}

func appendJSONMap(out []byte, key string, m map[string]string) []byte {
	if len(m) == 0 {
		return out
	}
	out = append(out, key...)
	sep := byte('{')
	for k, v := range m {
		out = append(out, sep)
		sep = ','
		out = appendJSONString(out, k)
		out = append(out, ':')
		out = appendJSONString(out, v)
	}
	return append(out, '}')
}

// appendJSONString appends s as a JSON string: quotes, backslashes and
// control characters are escaped; other bytes pass (invalid UTF-8 decodes
// as U+FFFD, as encoding/json would have written it).
func appendJSONString(out []byte, s string) []byte {
	const hexdigits = "0123456789abcdef"
	out = append(out, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			out = append(out, '\\', c)
		case c < 0x20:
			out = append(out, '\\', 'u', '0', '0', hexdigits[c>>4], hexdigits[c&0xf])
		default:
			out = append(out, c)
		}
	}
	return append(out, '"')
}

// writeBatch appends a batch to its hub's log in one write, or rewrites
// the log with it through a temp file and a rename. Caller holds flushMu.
func (s *Store) writeBatch(b *telBatch) error {
	path := s.telemetryPath(b.h)
	if b.rewrite {
		size, err := writeRecordsAtomic(path, b.msgs, !s.opts.NoSync)
		if err != nil {
			return err
		}
		b.h.telFile = telFile{records: b.n, size: size}
		return nil
	}
	var buf []byte
	for _, ms := range b.msgs {
		for i := range ms {
			buf = appendRecord(buf, &ms[i])
		}
	}
	if len(buf) == 0 {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(filepath.Dir(path), 0o700); err == nil {
			f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		}
	}
	if err != nil {
		return err
	}
	n, err := f.Write(buf)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	b.h.telFile.size += int64(n)
	if err != nil {
		return err
	}
	b.h.telFile.records += b.n
	return nil
}

// writeRecordsAtomic streams msgs into a temp file next to path and renames
// it over path (see WriteFileAtomic), returning the size written.
func writeRecordsAtomic(path string, msgs [][]Message, sync bool) (int64, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return 0, err
	}
	var size int64
	err := atomicfile.Write(path, 0o600, sync, func(w io.Writer) error {
		var rec []byte
		for _, ms := range msgs {
			for i := range ms {
				rec = appendRecord(rec[:0], &ms[i])
				if _, err := w.Write(rec); err != nil {
					return err
				}
				size += int64(len(rec))
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return size, nil
}

// loadTelemetry reads hub h's log. Records that are torn, fail their
// checksum or do not decode are skipped and the log is rewritten without
// them.
func (s *Store) loadTelemetry(h *hubState) error {
	path := s.telemetryPath(h)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	rd := bufio.NewReaderSize(f, 256<<10)
	var size int64
	records, bad := 0, 0
	for {
		line, err := rd.ReadBytes('\n')
		size += int64(len(line))
		if err == io.EOF {
			if len(line) > 0 {
				bad++ // torn tail: the newline is written last
			}
			break
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		r, ok := parseRecord(line[:len(line)-1])
		if !ok {
			bad++
			continue
		}
		records++
		l := h.telemetry[r.DeviceID]
		if l == nil {
			l = &telemetryLog{}
			h.telemetry[r.DeviceID] = l
		}
		h.addTelemetry(l, Message{DeviceID: r.DeviceID, Hub: h.HostName, Topic: r.Topic, EnqueuedTime: Time{r.EnqueuedTime.UTC()},
			Body: r.Body, MessageID: r.MessageID, SystemProperties: r.SystemProperties, Properties: r.Properties},
			s.opts.TelemetryHistory, s.opts.TelemetryHistoryBytes)
		l.unflushed = 0
	}
	h.telFile = telFile{records: records, size: size}
	if bad > 0 {
		s.log.Warn("telemetry log had damaged records; dropped them", "file", path, "records", bad)
		var all [][]Message
		n := 0
		for _, id := range slices.Sorted(maps.Keys(h.telemetry)) {
			all = append(all, h.telemetry[id].live())
			n += len(all[len(all)-1])
		}
		if err := s.writeBatch(&telBatch{h: h, msgs: all, n: n, rewrite: true}); err != nil {
			return fmt.Errorf("repair %s: %w", path, err)
		}
	}
	return nil
}

// parseRecord decodes one "crc32hex json" record (without its newline).
func parseRecord(line []byte) (telemetryRecord, bool) {
	var r telemetryRecord
	if len(line) < 10 || line[8] != ' ' {
		return r, false
	}
	sum, err := strconv.ParseUint(string(line[:8]), 16, 32)
	if err != nil || uint32(sum) != crc32.ChecksumIEEE(line[9:]) {
		return r, false
	}
	if err := json.Unmarshal(line[9:], &r); err != nil || r.DeviceID == "" {
		return r, false
	}
	return r, true
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
