package store

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ValidDeviceID reports whether id follows the IoT Hub rules (docs/protocol.md E):
// case-sensitive, at most 128 characters of 7-bit ASCII alphanumerics and
// - . + % _ # * ? ! ( ) , = @ $ '.
func ValidDeviceID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("-.+%_#*?!(),=@$'", c) >= 0:
		default:
			return false
		}
	}
	return true
}

func (s *Store) hub(host string) (*hubState, error) {
	h := s.hubs[host]
	if h == nil {
		return nil, ErrHubNotFound.With("no hub %q", host)
	}
	return h, nil
}

func (s *Store) device(host, id string) (*hubState, *deviceRecord, error) {
	h, err := s.hub(host)
	if err != nil {
		return nil, nil, err
	}
	r := h.devices[id]
	if r == nil {
		return h, nil, ErrDeviceNotFound.With("device %q not found on %s", id, host)
	}
	return h, r, nil
}

func (s *Store) saveDevice(h *hubState, r *deviceRecord) error {
	if err := s.writeJSON(fileJoinCase(s.path("hubs", h.Name, "devices"), r.Device.DeviceID), r); err != nil {
		return ErrInternal.With("%v", err)
	}
	return nil
}

// fileJoinCase keeps case: device ids are case-sensitive.
func fileJoinCase(dir, id string) string { return dir + "/" + fileName(id) }

func newGenerationID() string {
	return strconv.FormatInt(time.Now().UnixNano()/100, 10)
}

func newSASKey() *string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	k := base64.StdEncoding.EncodeToString(b)
	return &k
}

func normalizeAuth(a *AuthenticationMechanism) error {
	switch a.Type {
	case "", AuthSAS:
		a.Type = AuthSAS
		if a.SymmetricKey.PrimaryKey == nil || *a.SymmetricKey.PrimaryKey == "" {
			a.SymmetricKey.PrimaryKey = newSASKey()
		}
		if a.SymmetricKey.SecondaryKey == nil || *a.SymmetricKey.SecondaryKey == "" {
			a.SymmetricKey.SecondaryKey = newSASKey()
		}
		a.X509Thumbprint = X509Thumbprint{}
	case AuthSelfSigned:
		if a.X509Thumbprint.PrimaryThumbprint == nil || *a.X509Thumbprint.PrimaryThumbprint == "" {
			return ErrInvalid.With("selfSigned authentication needs x509Thumbprint.primaryThumbprint")
		}
		for _, p := range []*string{a.X509Thumbprint.PrimaryThumbprint, a.X509Thumbprint.SecondaryThumbprint} {
			if p == nil || *p == "" {
				continue
			}
			if !validThumbprint(*p) {
				return ErrInvalid.With("thumbprint %q is not hex SHA-1 or SHA-256", *p)
			}
		}
		a.SymmetricKey = SymmetricKey{}
	case AuthCertificateAuthority, AuthNone:
		a.SymmetricKey = SymmetricKey{}
		a.X509Thumbprint = X509Thumbprint{}
	default:
		return ErrInvalid.With("unknown authentication type %q", a.Type)
	}
	return nil
}

func validThumbprint(t string) bool {
	t = strings.ReplaceAll(t, ":", "")
	if len(t) != 40 && len(t) != 64 {
		return false
	}
	for _, c := range t {
		if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
			return false
		}
	}
	return true
}

func cloneDevice(d Device) *Device {
	c := d
	cp := func(p *string) *string {
		if p == nil {
			return nil
		}
		v := *p
		return &v
	}
	c.StatusReason = cp(d.StatusReason)
	c.DeviceScope = cp(d.DeviceScope)
	c.Authentication.SymmetricKey.PrimaryKey = cp(d.Authentication.SymmetricKey.PrimaryKey)
	c.Authentication.SymmetricKey.SecondaryKey = cp(d.Authentication.SymmetricKey.SecondaryKey)
	c.Authentication.X509Thumbprint.PrimaryThumbprint = cp(d.Authentication.X509Thumbprint.PrimaryThumbprint)
	c.Authentication.X509Thumbprint.SecondaryThumbprint = cp(d.Authentication.X509Thumbprint.SecondaryThumbprint)
	return &c
}

// PutDevice creates or updates a device identity (docs/protocol.md E, PUT
// /devices/{id}). ifMatch "" creates and fails with ErrDeviceExists (409001)
// when the id exists (docs/protocol.md G.12); "*" creates or updates; an etag updates
// only when it matches (ErrPrecondition, 412001). Server-managed fields
// (generationId, etag, connection state, counters) are ignored in d.
func (s *Store) PutDevice(hub string, d Device, ifMatch string) (Device, error) {
	if !ValidDeviceID(d.DeviceID) {
		return Device{}, ErrInvalid.With("invalid deviceId %q", d.DeviceID)
	}
	if d.Status == "" {
		d.Status = StatusEnabled
	}
	if d.Status != StatusEnabled && d.Status != StatusDisabled {
		return Device{}, ErrInvalid.With("status must be enabled or disabled, not %q", d.Status)
	}
	d = *cloneDevice(d)
	if err := normalizeAuth(&d.Authentication); err != nil {
		return Device{}, err
	}
	s.mu.Lock()
	h, old, err := s.device(hub, d.DeviceID)
	if h == nil {
		s.mu.Unlock()
		return Device{}, err
	}
	switch {
	case old != nil && strings.TrimSpace(ifMatch) == "":
		s.mu.Unlock()
		return Device{}, ErrDeviceExists.With("device %q already exists", d.DeviceID)
	case old == nil && !anyETag(ifMatch):
		s.mu.Unlock()
		return Device{}, ErrDeviceNotFound.With("device %q not found", d.DeviceID)
	case old != nil && !ETagMatches(ifMatch, old.Device.ETag):
		s.mu.Unlock()
		return Device{}, ErrPrecondition.With("etag mismatch for device %q", d.DeviceID)
	}
	ev, nd, err := s.putDeviceLocked(h, old, d)
	if err != nil {
		s.mu.Unlock()
		return Device{}, err
	}
	s.unlockAndNotify(ev)
	return nd, nil
}

// putDeviceLocked stores d as a new or updated identity. Caller holds mu.
func (s *Store) putDeviceLocked(h *hubState, old *deviceRecord, d Device) ([]func(Observer), Device, error) {
	now := Time{s.now().UTC()}
	var r deviceRecord
	var oldDev *Device
	if old != nil {
		r = *old
		oldDev = cloneDevice(old.Device)
		d.GenerationID = old.Device.GenerationID
		d.ConnectionState = old.Device.ConnectionState
		d.ConnectionStateUpdatedTime = old.Device.ConnectionStateUpdatedTime
		d.LastActivityTime = old.Device.LastActivityTime
		d.StatusUpdatedTime = old.Device.StatusUpdatedTime
		if d.Status != old.Device.Status {
			d.StatusUpdatedTime = now
		}
	} else {
		r = deviceRecord{
			Tags:        map[string]any{},
			Desired:     TwinCollection{Props: map[string]any{}, Version: 1, Metadata: map[string]any{"$lastUpdated": now.Format(azureTimeLayout)}},
			Reported:    TwinCollection{Props: map[string]any{}, Version: 1, Metadata: map[string]any{"$lastUpdated": now.Format(azureTimeLayout)}},
			TwinVersion: 1,
			TwinETag:    newBase64ETag(),
		}
		d.GenerationID = newGenerationID()
		d.ConnectionState = Disconnected
		d.StatusUpdatedTime = now
	}
	d.CloudToDeviceMessageCount = len(r.C2D)
	d.ETag = newBase64ETag()
	r.Device = d
	if err := s.saveDevice(h, &r); err != nil {
		return nil, Device{}, err
	}
	h.devices[d.DeviceID] = &r
	nd := cloneDevice(d)
	host, id := h.HostName, d.DeviceID
	ev := []func(Observer){func(o Observer) { o.DeviceChanged(host, id, oldDev, cloneDevice(*nd)) }}
	return ev, *nd, nil
}

// GetDevice returns a device identity.
func (s *Store) GetDevice(hub, id string) (Device, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, r, err := s.device(hub, id)
	if err != nil {
		return Device{}, err
	}
	return *cloneDevice(r.Device), nil
}

// ListDevices returns the hub's identities sorted by id.
func (s *Store) ListDevices(hub string) ([]Device, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	h, err := s.hub(hub)
	if err != nil {
		return nil, err
	}
	out := make([]Device, 0, len(h.devices))
	for _, r := range h.devices {
		out = append(out, *cloneDevice(r.Device))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].DeviceID < out[j].DeviceID })
	return out, nil
}

// DeleteDevice removes an identity with its twin and C2D queue (docs/protocol.md E);
// its telemetry history stays.
// A connected device is disconnected by the observer.
func (s *Store) DeleteDevice(hub, id, ifMatch string) error {
	s.mu.Lock()
	h, r, err := s.device(hub, id)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	if !ETagMatches(ifMatch, r.Device.ETag) {
		s.mu.Unlock()
		return ErrPrecondition.With("etag mismatch for device %q", id)
	}
	ev, err := s.deleteDeviceLocked(h, r)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	s.unlockAndNotify(ev)
	return nil
}

func (s *Store) deleteDeviceLocked(h *hubState, r *deviceRecord) ([]func(Observer), error) {
	id := r.Device.DeviceID
	if err := s.remove(fileJoinCase(s.path("hubs", h.Name, "devices"), id)); err != nil {
		return nil, ErrInternal.With("%v", err)
	}
	delete(h.devices, id)
	// The telemetry history stays: IoT Hub retains messages (docs/protocol.md F).
	old := cloneDevice(r.Device)
	host := h.HostName
	return []func(Observer){func(o Observer) { o.DeviceChanged(host, id, old, nil) }}, nil
}

// SetConnectionState records a device connecting or disconnecting. It is
// kept in memory only (docs/protocol.md E: connectionState is best-effort); after a
// restart every device is Disconnected.
func (s *Store) SetConnectionState(hub, id string, connected bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, r, err := s.device(hub, id)
	if err != nil {
		return
	}
	now := Time{s.now().UTC()}
	st := Disconnected
	if connected {
		st = Connected
		r.Device.LastActivityTime = now
	}
	if r.Device.ConnectionState != st {
		r.Device.ConnectionState = st
		r.Device.ConnectionStateUpdatedTime = now
	}
}

// SetModelID records the Plug and Play model id a device declared at
// CONNECT (docs/protocol.md B.1, model-id). In memory only.
func (s *Store) SetModelID(hub, id, modelID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, r, err := s.device(hub, id); err == nil {
		r.ModelID = modelID
	}
}

// TouchActivity updates lastActivityTime (in memory).
func (s *Store) TouchActivity(hub, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, r, err := s.device(hub, id); err == nil {
		r.Device.LastActivityTime = Time{s.now().UTC()}
	}
}

// ---- twins ----

func (s *Store) twinOf(r *deviceRecord) Twin {
	d := r.Device
	t := Twin{
		DeviceID:                  d.DeviceID,
		ETag:                      r.TwinETag,
		DeviceETag:                d.ETag,
		Status:                    d.Status,
		StatusReason:              d.StatusReason,
		StatusUpdateTime:          d.StatusUpdatedTime,
		ConnectionState:           d.ConnectionState,
		LastActivityTime:          d.LastActivityTime,
		CloudToDeviceMessageCount: len(r.C2D),
		AuthenticationType:        d.Authentication.Type,
		X509Thumbprint:            cloneDevice(d).Authentication.X509Thumbprint,
		ModelID:                   r.ModelID,
		Version:                   r.TwinVersion,
		Tags:                      cloneMap(r.Tags),
		Properties:                TwinProperties{Desired: r.Desired.clone(), Reported: r.Reported.clone()},
		Capabilities:              d.Capabilities,
	}
	if t.Tags == nil {
		t.Tags = map[string]any{}
	}
	return t
}

// GetTwin returns the service view of a twin (docs/protocol.md E).
func (s *Store) GetTwin(hub, id string) (Twin, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, r, err := s.device(hub, id)
	if err != nil {
		return Twin{}, err
	}
	return s.twinOf(r), nil
}

// DeviceTwinView is the twin a device gets from GET (docs/protocol.md B.5): the desired
// and reported sections with $version, no tags, no $metadata.
type DeviceTwinView struct {
	Desired  map[string]any `json:"desired"`
	Reported map[string]any `json:"reported"`
}

// GetDeviceTwin returns the device view of a twin.
func (s *Store) GetDeviceTwin(hub, id string) (DeviceTwinView, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, r, err := s.device(hub, id)
	if err != nil {
		return DeviceTwinView{}, err
	}
	return DeviceTwinView{Desired: cloneMap(r.Desired.DeviceView()), Reported: cloneMap(r.Reported.DeviceView())}, nil
}

func checkTags(tags map[string]any) error {
	if err := ValidateTwinPatch(tags); err != nil {
		return err
	}
	return nil
}

// UpdateTwin merges tags and desired properties into a twin (docs/protocol.md E, PATCH
// /twins/{id}): objects merge, null deletes. A desired change bumps
// desired.$version and notifies observers with the patch.
func (s *Store) UpdateTwin(hub, id string, patch TwinPatch, ifMatch string) (Twin, error) {
	return s.changeTwin(hub, id, patch, ifMatch, false)
}

// ReplaceTwin replaces the tags and desired properties of a twin (docs/protocol.md E,
// PUT /twins/{id}). Observers get a patch that nulls removed keys.
func (s *Store) ReplaceTwin(hub, id string, patch TwinPatch, ifMatch string) (Twin, error) {
	return s.changeTwin(hub, id, patch, ifMatch, true)
}

func (s *Store) changeTwin(hub, id string, patch TwinPatch, ifMatch string, replace bool) (Twin, error) {
	tags := normalizeMap(patch.Tags)
	desired := normalizeMap(patch.Properties.Desired)
	if tags != nil {
		if err := checkTags(tags); err != nil {
			return Twin{}, err
		}
	}
	if desired != nil {
		if err := ValidateTwinPatch(desired); err != nil {
			return Twin{}, err
		}
	}
	s.mu.Lock()
	h, r, err := s.device(hub, id)
	if err != nil {
		s.mu.Unlock()
		return Twin{}, err
	}
	if !ETagMatches(ifMatch, r.TwinETag) {
		s.mu.Unlock()
		return Twin{}, ErrPrecondition.With("etag mismatch for twin %q", id)
	}
	ev, err := s.applyTwinLocked(h, r, tags, desired, replace)
	if err != nil {
		s.mu.Unlock()
		return Twin{}, err
	}
	t := s.twinOf(r)
	s.unlockAndNotify(ev)
	return t, nil
}

// applyTwinLocked changes tags/desired of r (nil leaves a section alone),
// checks size limits (docs/protocol.md F), persists, and returns the notifications.
func (s *Store) applyTwinLocked(h *hubState, r *deviceRecord, tags, desired map[string]any, replace bool) ([]func(Observer), error) {
	now := s.now()
	n := *r
	n.Tags = cloneMap(r.Tags)
	n.Desired = r.Desired.clone()
	changedTags := false
	var note map[string]any
	if tags != nil {
		if replace {
			n.Tags = cloneMap(tags)
			dropNulls(n.Tags)
		} else {
			if n.Tags == nil {
				n.Tags = map[string]any{}
			}
			mergePatch(n.Tags, map[string]any{}, tags, now, 0)
		}
		if sectionSize(n.Tags) > MaxTagsBytes {
			return nil, ErrTwinInvalid.With("tags would exceed %d bytes", MaxTagsBytes)
		}
		changedTags = true
	}
	if desired != nil {
		if replace {
			note = map[string]any{}
			for k := range r.Desired.Props {
				if _, ok := desired[k]; !ok {
					note[k] = nil
				}
			}
			clean := cloneMap(desired)
			dropNulls(clean)
			for k, v := range clean {
				note[k] = v
			}
			n.Desired.replace(clean, now)
		} else {
			note = cloneMap(desired)
			n.Desired.applyPatch(desired, now)
		}
		if sectionSize(n.Desired.Props) > MaxSectionBytes {
			return nil, ErrTwinInvalid.With("desired properties would exceed %d bytes", MaxSectionBytes)
		}
	}
	if !changedTags && desired == nil {
		return nil, nil
	}
	n.TwinVersion++
	n.TwinETag = newBase64ETag()
	if err := s.saveDevice(h, &n); err != nil {
		return nil, err
	}
	*r = n
	if desired == nil {
		return nil, nil
	}
	note["$version"] = n.Desired.Version
	host, id, v := h.HostName, r.Device.DeviceID, n.Desired.Version
	return []func(Observer){func(o Observer) { o.DesiredChanged(host, id, cloneMap(note), v) }}, nil
}

func dropNulls(m map[string]any) {
	for k, v := range m {
		switch x := v.(type) {
		case nil:
			delete(m, k)
		case map[string]any:
			dropNulls(x)
		}
	}
}

func normalizeMap(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	return normalize(m).(map[string]any)
}

// PatchReported merges a device's reported-properties patch (docs/protocol.md B.5) and
// returns the new reported $version. Invalid keys/values give
// ErrTwinInvalid; a result over 32 KB gives ErrTooLarge (docs/protocol.md G.5: the real
// status is unconfirmed; the MQTT layer answers 400 for both).
func (s *Store) PatchReported(hub, id string, patch map[string]any) (int64, error) {
	patch = normalizeMap(patch)
	if patch == nil {
		return 0, ErrTwinInvalid.With("reported patch must be a JSON object")
	}
	if err := ValidateTwinPatch(patch); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	h, r, err := s.device(hub, id)
	if err != nil {
		return 0, err
	}
	n := *r
	n.Reported = r.Reported.clone()
	n.Reported.applyPatch(patch, s.now())
	if sectionSize(n.Reported.Props) > MaxSectionBytes {
		return 0, ErrTooLarge.With("reported properties would exceed %d bytes", MaxSectionBytes)
	}
	n.TwinVersion++
	n.TwinETag = newBase64ETag()
	if err := s.saveDevice(h, &n); err != nil {
		return 0, err
	}
	*r = n
	r.Device.LastActivityTime = Time{s.now().UTC()}
	return n.Reported.Version, nil
}

// ---- cloud-to-device ----

// C2D limits (docs/protocol.md B.4, F).
const (
	MaxC2DQueue   = 50
	MaxC2DBytes   = 64 * 1024
	DefaultC2DTTL = time.Hour
)

// EnqueueC2D queues a cloud-to-device message (docs/protocol.md B.4). MessageID is
// generated when empty; ExpiryTime defaults to now + 1 h. A full queue
// gives ErrQueueFull (403004), a body over 64 KB ErrTooLarge.
func (s *Store) EnqueueC2D(hub, id string, m C2DMessage) (C2DMessage, error) {
	if len(m.Body) > MaxC2DBytes {
		return C2DMessage{}, ErrTooLarge.With("C2D message of %d bytes exceeds %d", len(m.Body), MaxC2DBytes)
	}
	s.mu.Lock()
	h, r, err := s.device(hub, id)
	if err != nil {
		s.mu.Unlock()
		return C2DMessage{}, err
	}
	now := s.now().UTC()
	r.C2D = liveC2D(r.C2D, now)
	if len(r.C2D) >= MaxC2DQueue {
		s.mu.Unlock()
		return C2DMessage{}, ErrQueueFull.With("device %q has %d queued messages", id, len(r.C2D))
	}
	if m.MessageID == "" {
		m.MessageID = newGUID()
	}
	if m.To == "" {
		m.To = fmt.Sprintf("/devices/%s/messages/deviceBound", id)
	}
	m.EnqueuedTime = Time{now}
	if m.ExpiryTime.IsZero() {
		m.ExpiryTime = Time{now.Add(DefaultC2DTTL)}
	}
	m.Body = append([]byte(nil), m.Body...)
	if err := s.setC2DLocked(h, r, append(append([]C2DMessage(nil), r.C2D...), m)); err != nil {
		s.mu.Unlock()
		return C2DMessage{}, err
	}
	host := h.HostName
	s.unlockAndNotify([]func(Observer){func(o Observer) { o.C2DEnqueued(host, id) }})
	return m, nil
}

func liveC2D(q []C2DMessage, now time.Time) []C2DMessage {
	out := q[:0:0]
	for _, m := range q {
		if m.ExpiryTime.IsZero() || m.ExpiryTime.After(now) {
			out = append(out, m)
		}
	}
	return out
}

// PendingC2D returns the unexpired queued messages of a device, oldest first.
func (s *Store) PendingC2D(hub, id string) ([]C2DMessage, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, r, err := s.device(hub, id)
	if err != nil {
		return nil, err
	}
	q := liveC2D(r.C2D, s.now())
	out := make([]C2DMessage, len(q))
	for i, m := range q {
		m.Body = append([]byte(nil), m.Body...)
		out[i] = m
	}
	return out, nil
}

// CompleteC2D removes a delivered message (a PUBACK completes it, docs/protocol.md B.4).
func (s *Store) CompleteC2D(hub, id, messageID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, r, err := s.device(hub, id)
	if err != nil {
		return err
	}
	idx := -1
	for i, m := range r.C2D {
		if m.MessageID == messageID {
			idx = i
			break
		}
	}
	if idx < 0 {
		return ErrMessageNotFound.With("no queued message %q for %q", messageID, id)
	}
	return s.setC2DLocked(h, r, append(append([]C2DMessage(nil), r.C2D[:idx]...), r.C2D[idx+1:]...))
}

// setC2DLocked stores q as the device's C2D queue. Caller holds mu.
func (s *Store) setC2DLocked(h *hubState, r *deviceRecord, q []C2DMessage) error {
	n := *r
	n.C2D = q
	n.Device.CloudToDeviceMessageCount = len(q)
	if err := s.saveDevice(h, &n); err != nil {
		return err
	}
	*r = n
	return nil
}

// PurgeC2D drops every queued message of a device and returns how many.
func (s *Store) PurgeC2D(hub, id string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, r, err := s.device(hub, id)
	if err != nil {
		return 0, err
	}
	cnt := len(r.C2D)
	if err := s.setC2DLocked(h, r, nil); err != nil {
		return 0, err
	}
	return cnt, nil
}
