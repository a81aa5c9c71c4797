package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/reefer/tracker/deploy/emulator/pki"
	"github.com/reefer/tracker/internal/atomicfile"
)

// Hub names one emulated IoT hub.
type Hub struct {
	// Name is stable across restarts and names the hub's state directory
	// ("hub1", "hub2", ...).
	Name string
	// HostName is what devices get as assignedHub and put in their MQTT
	// user name, e.g. "localhost" or "localhost:8884".
	HostName string
}

// Options configure a Store.
type Options struct {
	// Hubs lists the emulated hubs; at least one.
	Hubs []Hub
	// TelemetryHistory bounds the recent messages kept per device
	// (default 1000) and TelemetryHistoryBytes their total MessageSize
	// (default 1 MiB); the newest message is always kept.
	TelemetryHistory      int
	TelemetryHistoryBytes int
	// TelemetryFlushInterval is how often new telemetry is appended to
	// the history files (default 100 ms).
	TelemetryFlushInterval time.Duration
	// NoSync skips fsync on writes (benchmarks; state is still written).
	NoSync bool
	// IssuedCertValidity is the validity of certificates issued under a
	// credential policy created without one (default
	// DefaultIssuedCertValidity; docs/protocol.md A.5).
	IssuedCertValidity time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger (default discards).
	Logger *slog.Logger
}

// DPSOwner is the owner name of CA certificates uploaded to the DPS; CAs
// uploaded to a hub use the hub's host name as owner.
const DPSOwner = "$dps"

// Store is the emulator's state. All methods are safe for concurrent use.
type Store struct {
	dir  string
	opts Options
	log  *slog.Logger
	now  func() time.Time

	mu          sync.RWMutex
	cas         map[string]map[string]*CACertificate // owner -> lower(name)
	groups      map[string]*EnrollmentGroup          // lower(id)
	enrollments map[string]*IndividualEnrollment     // lower(registrationId)
	regs        map[string]*regRecord                // lower(registrationId)
	hubs        map[string]*hubState                 // host name
	hubOrder    []string
	policies    map[string]*policyRecord // lower(name)
	credRoot    *pki.Cert                // signs every policy's issuing CA

	// notifyMu orders observer calls: it is taken before mu is released,
	// so observers see changes in the order they were made.
	notifyMu sync.Mutex
	obsMu    sync.Mutex
	obs      map[int]Observer
	obsNext  int

	telMu     sync.Mutex
	telSignal chan struct{} // closed and replaced on each telemetry message

	// Telemetry persistence (telemetry.go). telDirty, flushRunning and
	// closed are guarded by mu.
	telDirty     map[telKey]*telemetryLog
	flushRunning bool
	closed       bool
	closing      chan struct{}
	flushWG      sync.WaitGroup
	flushMu      sync.Mutex // serialises flushes
	compactSlack int        // records a log may hold beyond 2 x live
}

type hubState struct {
	Hub
	devices   map[string]*deviceRecord
	telemetry map[string]*telemetryLog // device id -> history
	telLive   telSize                  // live history of all devices (mu)
	telFile   telFile                  // the hub's telemetry log (flushMu)
}

// deviceRecord is the persisted form of one identity with its twin and
// C2D queue.
type deviceRecord struct {
	Device      Device         `json:"device"`
	Tags        map[string]any `json:"tags"`
	Desired     TwinCollection `json:"desired"`
	Reported    TwinCollection `json:"reported"`
	TwinVersion int64          `json:"twinVersion"`
	TwinETag    string         `json:"twinEtag"`
	ModelID     string         `json:"modelId,omitempty"`
	C2D         []C2DMessage   `json:"c2d,omitempty"`
}

// regRecord is the persisted DPS registration record.
type regRecord struct {
	State             DeviceRegistrationState `json:"state"`
	EnrollmentGroupID string                  `json:"enrollmentGroupId,omitempty"`
	Individual        bool                    `json:"individual,omitempty"`
	X509              *X509RegistrationResult `json:"x509,omitempty"`
	// Hubs lists every hub the device was assigned to, oldest first, for
	// the reprovisionedToInitialAssignment substatus.
	Hubs []string `json:"hubs,omitempty"`
	// LastDeviceID is the hub device id of the current assignment.
	LastDeviceID string `json:"lastDeviceId,omitempty"`
}

// Open loads (or creates) the state in dir.
func Open(dir string, opts Options) (*Store, error) {
	if len(opts.Hubs) == 0 {
		return nil, fmt.Errorf("open store %s: no hubs configured", dir)
	}
	if opts.TelemetryHistory <= 0 {
		opts.TelemetryHistory = DefaultTelemetryHistory
	}
	if opts.TelemetryHistoryBytes <= 0 {
		opts.TelemetryHistoryBytes = DefaultTelemetryHistoryBytes
	}
	if opts.TelemetryFlushInterval <= 0 {
		opts.TelemetryFlushInterval = DefaultTelemetryFlushInterval
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.IssuedCertValidity <= 0 {
		opts.IssuedCertValidity = DefaultIssuedCertValidity
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{
		dir:          dir,
		opts:         opts,
		log:          opts.Logger,
		now:          opts.Now,
		cas:          map[string]map[string]*CACertificate{},
		groups:       map[string]*EnrollmentGroup{},
		enrollments:  map[string]*IndividualEnrollment{},
		regs:         map[string]*regRecord{},
		policies:     map[string]*policyRecord{},
		hubs:         map[string]*hubState{},
		obs:          map[int]Observer{},
		telSignal:    make(chan struct{}),
		telDirty:     map[telKey]*telemetryLog{},
		closing:      make(chan struct{}),
		compactSlack: 1024,
	}
	seen := map[string]bool{}
	for _, h := range opts.Hubs {
		if h.Name == "" || h.HostName == "" {
			return nil, fmt.Errorf("open store %s: hub needs a name and a host name: %+v", dir, h)
		}
		if seen[h.Name] || s.hubs[h.HostName] != nil {
			return nil, fmt.Errorf("open store %s: duplicate hub %+v", dir, h)
		}
		seen[h.Name] = true
		s.hubs[h.HostName] = &hubState{Hub: h, devices: map[string]*deviceRecord{}, telemetry: map[string]*telemetryLog{}}
		s.hubOrder = append(s.hubOrder, h.HostName)
	}
	if err := s.load(); err != nil {
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	return s, nil
}

// Dir returns the data directory.
func (s *Store) Dir() string { return s.dir }

// Hubs returns the hubs in configuration order.
func (s *Store) Hubs() []Hub {
	out := make([]Hub, 0, len(s.hubOrder))
	for _, h := range s.hubOrder {
		out = append(out, s.hubs[h].Hub)
	}
	return out
}

// HasHub reports whether hostName is an emulated hub.
func (s *Store) HasHub(hostName string) bool {
	_, ok := s.hubs[hostName]
	return ok
}

// ---- observers ----

// Observer is told about changes the protocol layers must act on. Calls are
// made synchronously, in the order of the changes, after the change is
// stored. An observer may read the store but must not change it from
// inside the call (hand the work to a goroutine instead).
type Observer interface {
	// DesiredChanged: the desired properties of a twin changed; patch is
	// what a device receives (null for deleted keys) and version the new
	// desired $version (docs/protocol.md B.5).
	DesiredChanged(hub, deviceID string, patch map[string]any, version int64)
	// DeviceChanged: an identity was created, updated or deleted. old is
	// nil on create, new is nil on delete. A protocol layer disconnects
	// the device when new is nil or disabled, or the generation changed
	// (docs/protocol.md B.7).
	DeviceChanged(hub, deviceID string, old, new *Device)
	// C2DEnqueued: a cloud-to-device message was queued for the device.
	C2DEnqueued(hub, deviceID string)
}

// ObserverFuncs adapts optional functions to Observer.
type ObserverFuncs struct {
	OnDesired func(hub, deviceID string, patch map[string]any, version int64)
	OnDevice  func(hub, deviceID string, old, new *Device)
	OnC2D     func(hub, deviceID string)
}

// DesiredChanged implements Observer.
func (f ObserverFuncs) DesiredChanged(hub, id string, patch map[string]any, v int64) {
	if f.OnDesired != nil {
		f.OnDesired(hub, id, patch, v)
	}
}

// DeviceChanged implements Observer.
func (f ObserverFuncs) DeviceChanged(hub, id string, old, new *Device) {
	if f.OnDevice != nil {
		f.OnDevice(hub, id, old, new)
	}
}

// C2DEnqueued implements Observer.
func (f ObserverFuncs) C2DEnqueued(hub, id string) {
	if f.OnC2D != nil {
		f.OnC2D(hub, id)
	}
}

// AddObserver registers o and returns a function that removes it.
func (s *Store) AddObserver(o Observer) (remove func()) {
	s.obsMu.Lock()
	id := s.obsNext
	s.obsNext++
	s.obs[id] = o
	s.obsMu.Unlock()
	return func() {
		s.obsMu.Lock()
		delete(s.obs, id)
		s.obsMu.Unlock()
	}
}

func (s *Store) observers() []Observer {
	s.obsMu.Lock()
	defer s.obsMu.Unlock()
	keys := make([]int, 0, len(s.obs))
	for k := range s.obs {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	out := make([]Observer, 0, len(keys))
	for _, k := range keys {
		out = append(out, s.obs[k])
	}
	return out
}

// unlockAndNotify releases mu (held for writing) and then runs the
// notifications in order. notifyMu is taken before mu is released so two
// writers' notifications cannot overtake each other.
func (s *Store) unlockAndNotify(events []func(Observer)) {
	if len(events) == 0 {
		s.mu.Unlock()
		return
	}
	s.notifyMu.Lock()
	s.mu.Unlock()
	defer s.notifyMu.Unlock()
	for _, o := range s.observers() {
		for _, ev := range events {
			ev(o)
		}
	}
}

// ---- direct methods ----

// MethodRequest is the body of POST /twins/{id}/methods (docs/protocol.md E).
type MethodRequest struct {
	MethodName               string          `json:"methodName"`
	Payload                  json.RawMessage `json:"payload,omitempty"`
	ResponseTimeoutInSeconds int             `json:"responseTimeoutInSeconds,omitempty"`
	ConnectTimeoutInSeconds  int             `json:"connectTimeoutInSeconds,omitempty"`
}

// MethodResult is what the device answered (docs/protocol.md E): its status and JSON
// payload (null when the device sent an empty body).
type MethodResult struct {
	Status  int             `json:"status"`
	Payload json.RawMessage `json:"payload"`
}

// MethodInvoker invokes a direct method on a connected device. The hub
// layer implements it; the service API calls it. It returns
// ErrDeviceNotOnline (404103) when the device is not connected and
// subscribed within the connect timeout, ErrMethodTimeout (504101) when it
// does not answer within the response timeout, and ErrInvalid for a bad
// request (timeouts out of range, payload over 128 KB).
type MethodInvoker interface {
	InvokeMethod(ctx context.Context, hub, deviceID string, req MethodRequest) (MethodResult, error)
}

// ---- ids, etags ----

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func newGUID() string {
	h := randomHex(16)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// newQuotedETag is the DPS enrollment style: a quoted GUID (docs/protocol.md D).
func newQuotedETag() string { return `"` + newGUID() + `"` }

// newBase64ETag is the style of live DPS registration and hub etags: base64
// of a quoted token (docs/protocol.md A.4, E).
func newBase64ETag() string {
	return base64.StdEncoding.EncodeToString([]byte(`"` + newGUID() + `"`))
}

// ETagMatches is the one reading of an If-Match header against an
// entity's etag, for every route that takes it. The REST reference
// allows "If-Match: [*|<etag from get>]" with weak ETags as in RFC 7232
// (https://learn.microsoft.com/rest/api/iothub/, Devices - Delete
// Identity). Official SDKs differ and all work against Azure: the C# one
// sends the wildcard quoted and wraps etags in quotes (ETagForce in
// azure-iot-sdk-csharp iothub/service/src/Http/HttpMessageHelper.cs), the
// Node one sends * bare (azure-iot-sdk-node service/src/registry.ts), and
// hub bodies carry etags unquoted. So: absent, * and "*" match anything;
// otherwise any listed tag matches when equal to the etag with quotes and
// W/ removed.
func ETagMatches(ifMatch, etag string) bool {
	if anyETag(ifMatch) {
		return true
	}
	for _, t := range strings.Split(ifMatch, ",") {
		if unquote(t) == unquote(etag) {
			return true
		}
	}
	return false
}

// anyETag reports whether If-Match places no condition on the etag
// (absent, or the wildcard quoted or not); see ETagMatches.
func anyETag(ifMatch string) bool {
	v := unquote(ifMatch)
	return v == "" || v == "*"
}

func unquote(s string) string {
	s = strings.TrimPrefix(strings.TrimSpace(s), "W/")
	for len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
	}
	return s
}

// ---- persistence ----

// fileName is the JSON file name of an id (see escapeID).
func fileName(id string) string { return escapeID(id) + ".json" }

// escapeID escapes an id for use in a file name: ASCII letters, digits,
// '-' and '_' pass, everything else becomes %XX (ids may hold '.', '%',
// '*', '?' and more, docs/protocol.md E).
func escapeID(id string) string {
	var b strings.Builder
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func (s *Store) path(parts ...string) string {
	return filepath.Join(append([]string{s.dir}, parts...)...)
}

func (s *Store) caDir(owner string) string {
	if owner == DPSOwner {
		return s.path("dps", "certificates")
	}
	if h, ok := s.hubs[owner]; ok {
		return s.path("hubs", h.Name, "certificates")
	}
	return ""
}

// writeJSON writes v to path atomically: temp file in the same directory,
// fsync, rename, fsync of the directory.
func (s *Store) writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return WriteFileAtomic(path, data, !s.opts.NoSync)
}

// WriteFileAtomic writes data to path through a temp file and a rename, so
// readers see the old or the new content, never a mix (internal/atomicfile).
// With sync it fsyncs the file and its directory.
func WriteFileAtomic(path string, data []byte, sync bool) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, data, 0o600, sync)
}

func (s *Store) remove(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// readDirFiles calls fn with the path and content of every file in dir
// whose name ends in suffix, skipping temp files (".tmp-*"). A missing dir
// holds nothing.
func readDirFiles(dir, suffix string, fn func(path string, b []byte) error) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() || !strings.HasSuffix(e.Name(), suffix) || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := fn(p, b); err != nil {
			return err
		}
	}
	return nil
}

func readDirJSON[T any](dir string, fn func(*T)) error {
	return readDirFiles(dir, ".json", func(p string, b []byte) error {
		v := new(T)
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		if err := dec.Decode(v); err != nil {
			return fmt.Errorf("decode %s: %w", p, err)
		}
		fn(v)
		return nil
	})
}

func (s *Store) load() error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return err
	}
	owners := []string{DPSOwner}
	owners = append(owners, s.hubOrder...)
	for _, o := range owners {
		if err := readDirJSON(s.caDir(o), func(c *CACertificate) {
			if s.cas[o] == nil {
				s.cas[o] = map[string]*CACertificate{}
			}
			s.cas[o][strings.ToLower(c.Name)] = c
		}); err != nil {
			return err
		}
	}
	if err := readDirJSON(s.path("dps", "enrollmentGroups"), func(g *EnrollmentGroup) {
		s.groups[strings.ToLower(g.EnrollmentGroupID)] = g
	}); err != nil {
		return err
	}
	if err := readDirJSON(s.path("dps", "enrollments"), func(e *IndividualEnrollment) {
		s.enrollments[strings.ToLower(e.RegistrationID)] = e
	}); err != nil {
		return err
	}
	if err := s.loadCredentialRoot(); err != nil {
		return err
	}
	var bad error
	if err := readDirJSON(s.path("dps", policyKind.dir), func(r *policyRecord) {
		if err := r.restore(); err != nil {
			bad = errors.Join(bad, fmt.Errorf("credential policy %s: %w", r.Name, err))
			return
		}
		s.policies[strings.ToLower(r.Name)] = r
	}); err != nil {
		return err
	}
	if bad != nil {
		return bad
	}
	if err := readDirJSON(s.path("dps", "registrations"), func(r *regRecord) {
		s.regs[strings.ToLower(r.State.RegistrationID)] = r
	}); err != nil {
		return err
	}
	for _, host := range s.hubOrder {
		h := s.hubs[host]
		if err := readDirJSON(s.path("hubs", h.Name, "devices"), func(r *deviceRecord) {
			// Nobody is connected right after a start.
			r.Device.ConnectionState = Disconnected
			h.devices[r.Device.DeviceID] = r
		}); err != nil {
			return err
		}
		if err := s.loadTelemetry(h); err != nil {
			return err
		}
	}
	return nil
}
