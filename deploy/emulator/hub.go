package emulator

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/reefer/tracker/deploy/emulator/store"
)

// Hub topics (docs/protocol.md B.3–B.6).
const (
	twinGetPrefix      = "$iothub/twin/GET/?"
	twinReportedPrefix = "$iothub/twin/PATCH/properties/reported/?"
	twinResFmt         = "$iothub/twin/res/%d/?$rid=%s"
	desiredFmt         = "$iothub/twin/PATCH/properties/desired/?$version=%d"
	methodReqFmt       = "$iothub/methods/POST/%s/?$rid=%s"
	methodResPrefix    = "$iothub/methods/res/"

	// docs/protocol.md F: 256 KB per D2C message; 128 KB per method payload.
	maxTelemetryBytes = 256 * 1024
	maxMethodBytes    = 128 * 1024
)

// Connection errors recorded as the stop cause (docs/protocol.md B.2, B.7).
var (
	errTakenOver = errors.New("400027 ConnectionForcefullyClosedOnNewConnection")
	errDisabled  = errors.New("device disabled, deleted or re-keyed")
)

type connKey struct{ hub, device string }

// hubService implements the IoT Hub device side and store.Observer.
type hubService struct {
	e    *Emulator
	seq  atomic.Uint64
	done chan struct{}
	d2c  *d2cLimiter

	mu      sync.Mutex
	conns   map[connKey]*session
	waiters map[connKey][]chan struct{}
	closed  bool
}

func newHubService(e *Emulator) *hubService {
	return &hubService{e: e, done: make(chan struct{}), d2c: newD2CLimiter(e.cfg.TelemetryPerSecond, e.cfg.Now), conns: map[connKey]*session{}, waiters: map[connKey][]chan struct{}{}}
}

func (h *hubService) close() {
	h.mu.Lock()
	if !h.closed {
		h.closed = true
		close(h.done)
	}
	h.mu.Unlock()
}

func stripDefaultPort(host string) string { return strings.TrimSuffix(host, ":8883") }

// checkCert applies the identity's authentication rule (docs/protocol.md B.1): a
// selfSigned identity matches the leaf's SHA-1 or SHA-256 thumbprint; a
// certificateAuthority identity needs CN = deviceId and a chain to a
// verified CA of the hub or, for certificates DPS issued, to the
// credential root (docs/protocol.md A.5).
func (h *hubService) checkCert(hub string, d store.Device, chain []*x509.Certificate) error {
	leaf := chain[0]
	now := h.e.cfg.Now()
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return errors.New("client certificate is not valid now")
	}
	a := d.Authentication
	switch a.Type {
	case store.AuthSelfSigned:
		for _, t := range []*string{a.X509Thumbprint.PrimaryThumbprint, a.X509Thumbprint.SecondaryThumbprint} {
			if t != nil && store.ThumbprintMatches(*t, leaf) {
				return nil
			}
		}
		return errors.New("certificate thumbprint does not match the identity")
	case store.AuthCertificateAuthority:
		if leaf.Subject.CommonName != d.DeviceID {
			return fmt.Errorf("certificate CN %q is not the device id", leaf.Subject.CommonName)
		}
		roots := x509.NewCertPool()
		for _, c := range h.e.store.VerifiedCACertificates(hub) {
			roots.AddCert(c)
		}
		// Certificates DPS issued (docs/protocol.md A.5) chain to the
		// credential root, which every hub trusts as Azure's hubs trust
		// their ADR namespace.
		roots.AddCert(h.e.store.CredentialRoot())
		inter := x509.NewCertPool()
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return fmt.Errorf("certificate chain: %w", err)
		}
		return nil
	default:
		return fmt.Errorf("authentication type %q is not supported over X.509", a.Type)
	}
}

// authenticate checks a hub CONNECT (docs/protocol.md B.1, B.7) and registers the
// session, closing an older connection of the same device.
func (h *hubService) authenticate(cl *mqtt.Client, ep *hubEndpoint, user, clientID string, chain []*x509.Certificate) (*session, error) {
	host, deviceID, module, q, err := parseHubUsername(user)
	if err != nil {
		return nil, err
	}
	if stripDefaultPort(host) != stripDefaultPort(ep.host) {
		return nil, fmt.Errorf("user name host %q is not this hub (%s)", host, ep.host)
	}
	if module != "" {
		return nil, errors.New("module identities are not emulated")
	}
	if clientID != deviceID {
		return nil, fmt.Errorf("client id %q differs from the user name's device id %q", clientID, deviceID)
	}
	if q.Get("api-version") == "" {
		return nil, errors.New("user name has no api-version")
	}
	d, err := h.e.store.GetDevice(ep.host, deviceID)
	if err != nil {
		return nil, err
	}
	if d.Status != store.StatusEnabled {
		return nil, errors.New("device is disabled")
	}
	if err := h.checkCert(ep.host, d, chain); err != nil {
		return nil, err
	}
	s := newSession(h.e, cl, kindHub, chain)
	s.hub, s.hubName, s.deviceID, s.generationID = ep.host, ep.name, deviceID, d.GenerationID
	s.modelID = q.Get("model-id")
	cl.ID = ep.name + "/" + deviceID
	k := connKey{ep.host, deviceID}
	h.mu.Lock()
	old := h.conns[k]
	h.conns[k] = s
	h.mu.Unlock()
	if old != nil {
		// docs/protocol.md B.7: only one connection per device; the new one wins.
		h.e.log.Info("closing older connection of the same device", "hub", ep.host, "deviceId", deviceID)
		old.stop(errTakenOver)
	}
	// Recorded before CONNACK so a device that saw CONNACK is listed as
	// connected.
	h.e.store.SetConnectionState(s.hub, s.deviceID, true)
	if s.modelID != "" {
		h.e.store.SetModelID(s.hub, s.deviceID, s.modelID)
	}
	return s, nil
}

func (h *hubService) established(s *session) { h.subscribed(s) }

// subscribed wakes C2D delivery and anyone waiting for the device.
func (h *hubService) subscribed(s *session) {
	s.kickC2D()
	k := connKey{s.hub, s.deviceID}
	h.mu.Lock()
	ws := h.waiters[k]
	delete(h.waiters, k)
	h.mu.Unlock()
	for _, w := range ws {
		close(w)
	}
}

func (h *hubService) disconnected(s *session, err error) {
	k := connKey{s.hub, s.deviceID}
	h.mu.Lock()
	current := h.conns[k] == s
	if current {
		delete(h.conns, k)
	}
	h.mu.Unlock()
	if current {
		h.e.store.SetConnectionState(s.hub, s.deviceID, false)
	}
	h.e.log.Debug("hub device disconnected", "hub", s.hub, "deviceId", s.deviceID, "err", err)
}

func (h *hubService) conn(hub, id string) *session {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.conns[connKey{hub, id}]
}

// handle serves one hub publish; false closes the connection.
func (h *hubService) handle(s *session, pk packets.Packet) bool {
	t := pk.TopicName
	switch {
	case strings.HasPrefix(t, "devices/"):
		if !h.d2c.allow(s.hub) {
			// docs/protocol.md F, B.7: over the D2C limit; MQTT closes (B.2).
			h.e.log.Info("telemetry throttled; closing connection", "hub", s.hub, "deviceId", s.deviceID,
				"code", 429001, "limitPerSecond", h.e.cfg.TelemetryPerSecond)
			s.stop(errThrottled)
			return false
		}
		if err := h.recordTelemetry(s, t, pk.Payload, pk.FixedHeader.Retain, nil); err != nil {
			h.e.log.Info("telemetry refused; closing connection", "hub", s.hub, "deviceId", s.deviceID, "err", err)
			return false
		}
		return true
	case strings.HasPrefix(t, twinGetPrefix):
		q, ok := topicQuery(t)
		if !ok || q.Get("$rid") == "" {
			return false
		}
		h.twinGet(s, q.Get("$rid"))
		return true
	case strings.HasPrefix(t, twinReportedPrefix):
		q, ok := topicQuery(t)
		if !ok || q.Get("$rid") == "" {
			return false
		}
		h.twinReported(s, q.Get("$rid"), pk.Payload)
		return true
	case strings.HasPrefix(t, methodResPrefix):
		return h.methodResponse(s, t, pk.Payload)
	}
	return false
}

// recordTelemetry decodes and stores a D2C message (docs/protocol.md B.3).
func (h *hubService) recordTelemetry(s *session, topic string, body []byte, retain bool, extra map[string]string) error {
	ev := "devices/" + s.deviceID + "/messages/events"
	bag := strings.TrimPrefix(strings.TrimPrefix(topic, ev), "/")
	sys, app, err := parsePropertyBag(bag)
	if err != nil {
		return err
	}
	size := len(body)
	for _, v := range sys {
		size += len(v)
	}
	for k, v := range app {
		size += len(k) + len(v)
	}
	if size > maxTelemetryBytes {
		// docs/protocol.md F: 256 KB; over MQTT an error closes the connection.
		return fmt.Errorf("413001 message of %d bytes exceeds %d", size, maxTelemetryBytes)
	}
	if retain {
		app["mqtt-retain"] = "true" // docs/protocol.md B.2
	}
	for k, v := range extra {
		app[k] = v
	}
	now := h.e.cfg.Now().UTC()
	sys["iothub-connection-device-id"] = s.deviceID
	sys["iothub-connection-auth-generation-id"] = s.generationID
	sys["iothub-connection-auth-method"] = `{"scope":"device","type":"x509","issuer":"iothub"}`
	sys["iothub-enqueuedtime"] = now.Format(time.RFC3339Nano)
	if s.modelID != "" {
		sys["dt-dataschema"] = s.modelID
	}
	return h.e.store.RecordTelemetry(store.Message{
		DeviceID: s.deviceID, Hub: s.hub, Topic: topic, EnqueuedTime: store.Time{Time: now},
		Body: append([]byte(nil), body...), MessageID: sys["message-id"], SystemProperties: sys, Properties: app,
	})
}

func (h *hubService) twinReply(s *session, status int, rid string, extra string, body []byte) {
	topic := fmt.Sprintf(twinResFmt, status, rid) + extra
	if !s.subscribed(topic) {
		h.e.log.Debug("twin response dropped: client not subscribed", "client", s.cl.ID, "topic", topic)
		return
	}
	s.publish(topic, body, 0, 0)
}

func twinError(code int, msg string) []byte {
	b, _ := json.Marshal(map[string]any{"errorCode": code, "message": msg})
	return b
}

func (h *hubService) twinGet(s *session, rid string) {
	tw, err := h.e.store.GetDeviceTwin(s.hub, s.deviceID)
	if err != nil {
		h.twinReply(s, store.CodeOf(err)/1000, rid, "", twinError(store.CodeOf(err), err.Error()))
		return
	}
	b, _ := json.Marshal(tw)
	h.twinReply(s, 200, rid, "", b)
}

func (h *hubService) twinReported(s *session, rid string, body []byte) {
	patch, err := store.DecodeJSONObject(body)
	if err != nil {
		// docs/protocol.md B.5: 400 for malformed JSON.
		h.twinReply(s, 400, rid, "", twinError(400004, "malformed reported properties: "+err.Error()))
		return
	}
	v, err := h.e.store.PatchReported(s.hub, s.deviceID, patch)
	if err != nil {
		// docs/protocol.md G.5: invalid or oversized patches answer 400.
		code := store.CodeOf(err)
		status := code / 1000
		if errors.Is(err, store.ErrTooLarge) || errors.Is(err, store.ErrTwinInvalid) {
			status = 400
		}
		h.twinReply(s, status, rid, "", twinError(code, err.Error()))
		return
	}
	h.twinReply(s, 204, rid, "&$version="+strconv.FormatInt(v, 10), nil)
}

// ---- store.Observer ----

// DesiredChanged forwards a desired patch to a connected, subscribed
// device (docs/protocol.md B.5). Offline devices get nothing; they GET on reconnect.
func (h *hubService) DesiredChanged(hub, id string, patch map[string]any, version int64) {
	s := h.conn(hub, id)
	if s == nil {
		return
	}
	topic := fmt.Sprintf(desiredFmt, version)
	if !s.subscribed(topic) {
		return
	}
	b, _ := json.Marshal(patch)
	s.publish(topic, b, 0, 0)
}

// DeviceChanged closes the connection of a device that was deleted,
// disabled, re-created or whose credential no longer matches (docs/protocol.md B.7).
func (h *hubService) DeviceChanged(hub, id string, old, new *store.Device) {
	s := h.conn(hub, id)
	if s == nil {
		return
	}
	reason := ""
	switch {
	case new == nil:
		reason = "deleted"
	case new.Status != store.StatusEnabled:
		reason = "disabled"
	case new.GenerationID != s.generationID:
		reason = "re-created"
	default:
		if err := h.checkCert(hub, *new, s.chain); err != nil {
			reason = "credential changed: " + err.Error()
		}
	}
	if reason != "" {
		h.e.log.Info("disconnecting device", "hub", hub, "deviceId", id, "reason", reason)
		s.stop(errDisabled)
	}
}

// C2DEnqueued wakes delivery to a connected device.
func (h *hubService) C2DEnqueued(hub, id string) {
	if s := h.conn(hub, id); s != nil {
		s.kickC2D()
	}
}

// ---- cloud-to-device (docs/protocol.md B.4) ----

// c2dTopicBase is the topic C2D messages go out on, before the property bag.
func (s *session) c2dTopicBase() string { return "devices/" + s.deviceID + "/messages/devicebound/" }

// deliverC2D runs one delivery pass: every pending message not locked on
// this connection goes out and is locked. Passes run one at a time on the
// session's writer. The locks are read before the queue: a PUBACK
// completes its message in the store before it releases the lock (see
// puback), so a message this pass finds unlocked and still pending was not
// acknowledged on this connection meanwhile, and an acknowledged one is
// never delivered a second time on it (docs/protocol.md B.4).
func (s *session) deliverC2D() {
	if !s.subscribed(s.c2dTopicBase()) {
		return
	}
	locked := s.lockedC2D()
	msgs, err := s.e.store.PendingC2D(s.hub, s.deviceID)
	if err != nil {
		return
	}
	s.deliverPending(locked, msgs)
}

// lockedC2D is the set of message ids locked on this connection now.
func (s *session) lockedC2D() map[string]bool {
	now := s.e.cfg.Now().UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	locked := make(map[string]bool, len(s.c2dLocked))
	for id, until := range s.c2dLocked {
		if until > now {
			locked[id] = true
		}
	}
	return locked
}

// deliverPending delivers the messages of msgs not in locked, both read
// at the start of the pass (locked first), and locks them.
func (s *session) deliverPending(locked map[string]bool, msgs []store.C2DMessage) {
	topicBase := s.c2dTopicBase()
	defer func() {
		// Locks of messages no longer pending (completed, expired) go;
		// while any remain, their expiry is checked again.
		pending := make(map[string]bool, len(msgs))
		for _, m := range msgs {
			pending[m.MessageID] = true
		}
		s.mu.Lock()
		for id := range s.c2dLocked {
			if !pending[id] {
				delete(s.c2dLocked, id)
			}
		}
		anyLocked := len(s.c2dLocked) > 0
		s.mu.Unlock()
		if anyLocked {
			s.armLockTimer()
		}
	}()
	now := s.e.cfg.Now().UnixNano()
	for _, m := range msgs {
		if locked[m.MessageID] {
			continue
		}
		s.mu.Lock()
		// A message whose lock expired is delivered again.
		for pid, id := range s.c2dInflight {
			if id == m.MessageID {
				delete(s.c2dInflight, pid)
			}
		}
		pid := s.allocPID()
		if pid == 0 {
			s.mu.Unlock()
			return
		}
		s.c2dInflight[pid] = m.MessageID
		s.c2dLocked[m.MessageID] = now + int64(s.e.cfg.C2DLockTimeout)
		s.mu.Unlock()
		sys := [][2]string{{"mid", m.MessageID}, {"to", m.To}, {"cid", m.CorrelationID}, {"uid", m.UserID},
			{"ct", m.ContentType}, {"ce", m.ContentEncoding}}
		if !m.ExpiryTime.IsZero() {
			sys = append(sys, [2]string{"exp", m.ExpiryTime.UTC().Format(time.RFC3339)})
		}
		s.publish(topicBase+encodePropertyBag(sys, m.Properties), m.Body, 1, pid)
	}
}

// allocPID returns a free packet id for a server-to-client QoS 1 publish.
// Caller holds s.mu.
func (s *session) allocPID() uint16 {
	for i := 0; i < 65535; i++ {
		s.nextPID++
		if s.nextPID == 0 {
			s.nextPID = 1
		}
		if _, used := s.c2dInflight[s.nextPID]; !used {
			return s.nextPID
		}
	}
	return 0
}

// puback completes a C2D message (docs/protocol.md B.4: PUBACK completes).
// The lock goes only once the store no longer holds the message: a
// delivery pass that reads the locks before the queue then either sees it
// locked or no longer pending, never unlocked and pending (deliverC2D).
func (h *hubService) puback(s *session, pid uint16) {
	s.mu.Lock()
	id, ok := s.c2dInflight[pid]
	delete(s.c2dInflight, pid)
	s.mu.Unlock()
	if !ok {
		return
	}
	if err := h.e.store.CompleteC2D(s.hub, s.deviceID, id); err != nil && !errors.Is(err, store.ErrMessageNotFound) {
		// Still pending and still locked: delivered again once the lock
		// expires, as a message whose completion failed.
		h.e.log.Warn("complete C2D", "hub", s.hub, "deviceId", s.deviceID, "messageId", id, "err", err)
		return
	}
	s.mu.Lock()
	delete(s.c2dLocked, id)
	s.mu.Unlock()
}

// ---- direct methods (docs/protocol.md B.6, E) ----

// validMethodName: printable US-ASCII without $ ( ) < > @ , ; : \ " / [ ] ? = { }, space or tab (docs/protocol.md F).
func validMethodName(n string) bool {
	if n == "" {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if c <= 0x20 || c >= 0x7f || strings.IndexByte(`$()<>@,;:\"/[]?={}`, c) >= 0 {
			return false
		}
	}
	return true
}

func (h *hubService) methodResponse(s *session, topic string, body []byte) bool {
	rest := strings.TrimPrefix(topic, methodResPrefix)
	statusStr, query, ok := strings.Cut(rest, "/?")
	if !ok {
		return false
	}
	status, err := strconv.Atoi(statusStr)
	if err != nil {
		return false
	}
	q, ok := topicQuery("?" + query)
	if !ok || q.Get("$rid") == "" {
		return false
	}
	s.mu.Lock()
	ch := s.methods[q.Get("$rid")]
	delete(s.methods, q.Get("$rid"))
	s.mu.Unlock()
	if ch != nil {
		ch <- methodReply{status: status, body: append([]byte(nil), body...)}
	}
	return true
}

// methodSession returns the device's connection if it listens for methods.
func (h *hubService) methodSession(hub, id string) *session {
	s := h.conn(hub, id)
	if s != nil && s.subscribed(fmt.Sprintf(methodReqFmt, "m", "1")) {
		return s
	}
	return nil
}

func (h *hubService) invoke(ctx context.Context, hub, id string, req store.MethodRequest) (store.MethodResult, error) {
	if !h.e.store.HasHub(hub) {
		return store.MethodResult{}, store.ErrHubNotFound.With("no hub %q", hub)
	}
	if _, err := h.e.store.GetDevice(hub, id); err != nil {
		return store.MethodResult{}, err
	}
	if !validMethodName(req.MethodName) {
		return store.MethodResult{}, store.ErrInvalid.With("invalid method name %q", req.MethodName)
	}
	rt, ct := req.ResponseTimeoutInSeconds, req.ConnectTimeoutInSeconds
	if rt == 0 {
		rt = 30
	}
	if rt < 5 || rt > 300 || ct < 0 || ct > 300 {
		return store.MethodResult{}, store.ErrInvalid.With("responseTimeoutInSeconds must be 5-300 and connectTimeoutInSeconds 0-300")
	}
	payload := []byte(req.Payload)
	if len(payload) > maxMethodBytes {
		return store.MethodResult{}, store.ErrTooLarge.With("method payload of %d bytes exceeds %d", len(payload), maxMethodBytes)
	}
	if string(payload) == "null" {
		payload = nil
	}

	s := h.methodSession(hub, id)
	if s == nil && ct > 0 {
		deadline := time.NewTimer(time.Duration(ct) * time.Second)
		defer deadline.Stop()
		for s == nil {
			w := make(chan struct{})
			k := connKey{hub, id}
			h.mu.Lock()
			h.waiters[k] = append(h.waiters[k], w)
			h.mu.Unlock()
			if s = h.methodSession(hub, id); s != nil {
				break
			}
			select {
			case <-w:
				s = h.methodSession(hub, id)
			case <-deadline.C:
				return store.MethodResult{}, store.ErrDeviceNotOnline.With("device %q did not connect within %d s", id, ct)
			case <-ctx.Done():
				return store.MethodResult{}, store.ErrDeviceNotOnline.With("device %q is not online", id)
			}
		}
	}
	if s == nil {
		return store.MethodResult{}, store.ErrDeviceNotOnline.With("device %q is not online", id)
	}
	rid := strconv.FormatUint(h.seq.Add(1), 16)
	ch := make(chan methodReply, 1)
	s.mu.Lock()
	s.methods[rid] = ch
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.methods, rid)
		s.mu.Unlock()
	}()
	s.publish(fmt.Sprintf(methodReqFmt, req.MethodName, rid), payload, 0, 0)
	timer := time.NewTimer(time.Duration(rt) * time.Second)
	defer timer.Stop()
	select {
	case r := <-ch:
		res := store.MethodResult{Status: r.status, Payload: json.RawMessage("null")}
		switch {
		case len(r.body) == 0:
		case json.Valid(r.body):
			res.Payload = json.RawMessage(r.body)
		default:
			b, _ := json.Marshal(string(r.body))
			res.Payload = b
		}
		return res, nil
	case <-timer.C:
		return store.MethodResult{}, store.ErrMethodTimeout.With("device %q did not answer %q within %d s", id, req.MethodName, rt)
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return store.MethodResult{}, store.ErrMethodTimeout.With("device %q did not answer %q in time", id, req.MethodName)
		}
		return store.MethodResult{}, ctx.Err()
	}
}

var _ store.Observer = (*hubService)(nil)
