package emulator

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// docs/protocol.md B.2: the hub idles a client out after 1.5 × keep-alive, capped at
// 1767 s; 1178 × 1.5 = 1767. A keep-alive of 0 gets the cap too.
const maxKeepAlive = 1178

// docs/protocol.md B.2, F: at most 5 subscriptions per device.
const maxSubscriptions = 5

// errClose is the stop cause of a connection closed for protocol misuse:
// IoT Hub and DPS answer misuse by closing the connection (docs/protocol.md B.2).
var errClose = errors.New("protocol violation")

// reject closes the connection from OnPacketRead; mochi only honours
// ErrRejectPacket from that hook, and a read error ends the connection.
func (s *session) reject() (packets.Packet, error) {
	s.stop(errClose)
	return packets.Packet{}, packets.ErrRejectPacket
}

type sessionKind int

const (
	kindDPS sessionKind = iota + 1
	kindHub
)

// session is the emulator's view of one MQTT connection.
type session struct {
	e     *Emulator
	cl    *mqtt.Client
	kind  sessionKind
	chain []*x509.Certificate

	rid        string // DPS registration id
	apiVersion string // DPS api-version from the user name (docs/protocol.md A.1, A.5)

	hub          string // hub host name
	hubName      string
	deviceID     string
	generationID string
	modelID      string

	// Outgoing packets wait in queue and are written by one goroutine
	// that exists only while there is something to write (or C2D to
	// deliver), so observers never block on a slow client's socket and an
	// idle connection costs no goroutine of ours.
	qmu       sync.Mutex
	queue     []*packets.Packet
	ready     bool // CONNACK went out: nothing may be written before it
	ended     bool
	draining  bool
	wantC2D   bool        // deliver C2D on the next drain
	lockTimer *time.Timer // re-delivers once C2D locks may have expired

	// will is the hub device's Will, held here rather than by mochi so
	// that it can only ever become the device's own telemetry.
	will *mqtt.Will

	mu          sync.Mutex
	nextPID     uint16
	c2dInflight map[uint16]string // packet id -> C2D message id
	c2dLocked   map[string]int64  // message id -> unlock time (unix nano)
	methods     map[string]chan methodReply
}

type methodReply struct {
	status int
	body   []byte
}

func newSession(e *Emulator, cl *mqtt.Client, kind sessionKind, chain []*x509.Certificate) *session {
	return &session{e: e, cl: cl, kind: kind, chain: chain,
		c2dInflight: map[uint16]string{}, c2dLocked: map[string]int64{}, methods: map[string]chan methodReply{}}
}

// maxQueued bounds a session's unwritten packets (a slow consumer).
const maxQueued = 256

// publish queues a PUBLISH to the client. Packets are dropped when the
// queue is full, as a broker drops them for a slow consumer.
func (s *session) publish(topic string, body []byte, qos byte, pid uint16) bool {
	pk := &packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
		TopicName:   topic,
		Payload:     body,
		PacketID:    pid,
	}
	s.qmu.Lock()
	defer s.qmu.Unlock()
	switch {
	case s.ended:
		return false
	case len(s.queue) >= maxQueued:
		s.e.log.Warn("client write queue full, dropping message", "client", s.cl.ID, "topic", topic)
		return false
	}
	s.queue = append(s.queue, pk)
	s.startDrainLocked()
	return true
}

// kickC2D asks for a C2D delivery pass on the session's writer.
func (s *session) kickC2D() {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	s.wantC2D = true
	s.startDrainLocked()
}

// established marks CONNACK sent: what was queued may now be written.
func (s *session) established() {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	s.ready = true
	s.startDrainLocked()
}

// startDrainLocked starts the writer if there is work and none runs.
// Caller holds qmu.
func (s *session) startDrainLocked() {
	if s.ready && !s.ended && !s.draining && (len(s.queue) > 0 || s.wantC2D) {
		s.draining = true
		go s.drain()
	}
}

// drain writes queued packets in order and runs C2D delivery for hub
// sessions, then exits when there is nothing left to do.
func (s *session) drain() {
	for {
		s.qmu.Lock()
		if s.ended || (len(s.queue) == 0 && !s.wantC2D) {
			s.draining = false
			s.queue = nil
			s.qmu.Unlock()
			return
		}
		batch, c2d := s.queue, s.wantC2D
		s.queue, s.wantC2D = nil, false
		s.qmu.Unlock()
		for _, pk := range batch {
			if err := s.cl.WritePacket(*pk); err != nil {
				s.e.log.Debug("write to client failed", "client", s.cl.ID, "err", err)
			}
		}
		if c2d {
			s.deliverC2D()
		}
	}
}

// armLockTimer makes expired C2D locks noticed within a quarter lock
// time while any message is locked.
func (s *session) armLockTimer() {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if s.ended || s.lockTimer != nil {
		return
	}
	s.lockTimer = time.AfterFunc(s.e.cfg.C2DLockTimeout/4, func() {
		s.qmu.Lock()
		s.lockTimer = nil
		s.qmu.Unlock()
		s.kickC2D()
	})
}

func (s *session) stop(reason error) {
	s.cl.Stop(reason)
}

// end stops the session's writing for good.
func (s *session) end() {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	s.ended = true
	s.queue = nil
	if s.lockTimer != nil {
		s.lockTimer.Stop()
		s.lockTimer = nil
	}
}

// subscribed reports whether the client holds a filter matching topic.
func (s *session) subscribed(topic string) bool {
	for f := range s.cl.State.Subscriptions.GetAll() {
		if topicMatch(f, topic) {
			return true
		}
	}
	return false
}

// topicMatch is MQTT filter matching (+ one level, # the rest).
func topicMatch(filter, topic string) bool {
	fs, ts := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, f := range fs {
		if f == "#" {
			return true
		}
		if i >= len(ts) {
			return false
		}
		if f != "+" && f != ts[i] {
			return false
		}
	}
	return len(fs) == len(ts)
}

// brokerHook connects mochi to the DPS and hub services.
type brokerHook struct {
	mqtt.HookBase
	e        *Emulator
	sessions sync.Map // *mqtt.Client -> *session
	conns    sync.Map // net.Conn -> *mqtt.Client with a session
}

// track records a new session.
func (h *brokerHook) track(cl *mqtt.Client, s *session) {
	h.sessions.Store(cl, s)
	h.conns.Store(cl.Net.Conn, cl)
}

// connEnded forgets the session of a connection that ended. mochi calls
// OnDisconnect for a client once CONNACK went out; when CONNACK could
// not be written it does not, and the listener's word is the only one.
func (h *brokerHook) connEnded(c net.Conn) {
	if v, ok := h.conns.LoadAndDelete(c); ok {
		h.forget(v.(*mqtt.Client), errors.New("connection ended before CONNACK"))
	}
}

func (h *brokerHook) ID() string { return "azemu" }

func (h *brokerHook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPacketRead, mqtt.OnPublish,
		mqtt.OnSubscribe, mqtt.OnSubscribed, mqtt.OnSessionEstablished, mqtt.OnDisconnect,
	}, []byte{b})
}

func (h *brokerHook) session(cl *mqtt.Client) *session {
	v, ok := h.sessions.Load(cl)
	if !ok {
		return nil
	}
	return v.(*session)
}

func randomSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// OnConnectAuthenticate authenticates a CONNECT. Returning false makes
// mochi answer CONNACK 0x05 (not authorized) on MQTT 3.1.1.
func (h *brokerHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	log := h.e.log.With("listener", cl.Net.Listener, "clientId", pk.Connect.ClientIdentifier, "username", string(pk.Connect.Username))
	tc, ok := cl.Net.Conn.(*tls.Conn)
	if !ok {
		log.Warn("refused: not a TLS connection")
		return false
	}
	chain := tc.ConnectionState().PeerCertificates
	if len(chain) == 0 {
		log.Info("refused: no client certificate")
		return false
	}
	if pk.Connect.PasswordFlag && len(pk.Connect.Password) > 0 {
		// docs/protocol.md A.1, B.1: no password with X.509; SAS is not emulated.
		log.Info("refused: password given; only X.509 authentication is emulated")
		return false
	}
	if ka := cl.State.Keepalive; ka == 0 || ka > maxKeepAlive {
		cl.State.Keepalive = maxKeepAlive
	}
	user := string(pk.Connect.Username)
	if cl.Net.Listener == "mqtt" && isDPSUsername(user) {
		rid, apiVersion, err := h.e.dps.authenticate(user, pk.Connect.ClientIdentifier)
		if err != nil {
			log.Info("dps connect refused", "err", err)
			return false
		}
		s := newSession(h.e, cl, kindDPS, chain)
		s.rid, s.apiVersion = rid, apiVersion
		cl.Properties.Will = mqtt.Will{} // refused in OnPacketRead; never kept
		// docs/protocol.md A.1: DPS keeps no session; every connection is clean.
		// A unique broker id keeps parallel DPS connections apart.
		cl.Properties.Clean = true
		cl.ID = "$dps/" + rid + "/" + randomSuffix()
		h.track(cl, s)
		log.Debug("dps connect", "registrationId", rid)
		return true
	}
	ep := h.e.endpointFor(cl.Net.Listener)
	if ep == nil {
		return false
	}
	s, err := h.e.hub.authenticate(cl, ep, user, pk.Connect.ClientIdentifier, chain)
	if err != nil {
		log.Info("hub connect refused", "err", err)
		return false
	}
	// The Will (vetted in OnPacketRead) moves from mochi to the session:
	// mochi would publish it to every subscriber of its topic.
	if w := cl.Properties.Will; w.Flag != 0 && ownTelemetry(s.deviceID, w.TopicName) {
		s.will = &w
	}
	cl.Properties.Will = mqtt.Will{}
	h.track(cl, s)
	log.Debug("hub connect", "hub", s.hub, "deviceId", s.deviceID, "will", s.will != nil)
	return true
}

func (e *Emulator) endpointFor(listener string) *hubEndpoint {
	for i := range e.hubs {
		if e.hubs[i].listener == listener {
			return &e.hubs[i]
		}
	}
	return nil
}

// isDPSUsername: `{idScope}/registrations/{registrationId}/api-version=...`
// with no '?' (docs/protocol.md A.1).
func isDPSUsername(u string) bool {
	parts := strings.SplitN(u, "/", 4)
	return len(parts) == 4 && parts[1] == "registrations" && strings.HasPrefix(parts[3], "api-version=")
}

// OnACLCheck lets mochi deliver nothing. Publishes are vetted in
// OnPacketRead, where a violation can close the connection (mochi's ACL
// only drops QoS 0). A read check is either a SUBSCRIBE filter, allowed
// when the session may hold it, or a delivery of a topic to a subscriber,
// always refused: the emulator writes each message to its one recipient
// itself, because $iothub topics name no device and a broker would fan a
// message out to every device subscribed to them.
func (h *brokerHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if write {
		return true
	}
	s := h.session(cl)
	return s != nil && s.maySubscribe(topic)
}

// refuseConnect answers a CONNECT with a refusal and ends the connection
// (mochi ignores any error from OnPacketRead but ErrRejectPacket, which
// on a CONNECT ends the connection).
func (h *brokerHook) refuseConnect(cl *mqtt.Client, pk packets.Packet, code packets.Code, why string) (packets.Packet, error) {
	h.e.log.Info("connect refused", "listener", cl.Net.Listener, "clientId", pk.Connect.ClientIdentifier,
		"username", string(pk.Connect.Username), "reason", why)
	cl.Properties.ProtocolVersion = pk.ProtocolVersion // CONNACK in the client's version
	_ = h.e.server.SendConnack(cl, code, false, nil)
	cl.Stop(errClose)
	return pk, fmt.Errorf("%w: %s", packets.ErrRejectPacket, why)
}

// vetConnect refuses, before mochi parses it, a CONNECT the hub or DPS
// would not accept: MQTT 5 (a standard hub speaks 3.1.1; docs/protocol.md A.1, B.1),
// and a Will other than one on the device's own telemetry topic with QoS
// 0 or 1 (docs/protocol.md B.2). DPS takes no Will. mochi would publish a Will to
// whoever subscribes to its topic, and would answer a QoS 2 Will with a
// code MQTT 3.1.1 does not have.
func (h *brokerHook) vetConnect(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.ProtocolVersion >= 5 {
		return h.refuseConnect(cl, pk, packets.ErrUnsupportedProtocolVersion, "MQTT 5 is not supported; use MQTT 3.1.1")
	}
	if !pk.Connect.WillFlag {
		return pk, nil
	}
	c := pk.Connect
	// ErrBadUsernameOrPassword is CONNACK 0x05 (not authorized) in 3.1.1.
	switch {
	case cl.Net.Listener == "mqtt" && isDPSUsername(string(c.Username)):
		return h.refuseConnect(cl, pk, packets.ErrBadUsernameOrPassword, "DPS takes no Will message")
	case !ownTelemetry(c.ClientIdentifier, c.WillTopic):
		return h.refuseConnect(cl, pk, packets.ErrBadUsernameOrPassword,
			fmt.Sprintf("Will topic %q is not devices/%s/messages/events/", c.WillTopic, c.ClientIdentifier))
	case c.WillQos > 1:
		return h.refuseConnect(cl, pk, packets.ErrBadUsernameOrPassword, "Will QoS 2 is not supported")
	}
	return pk, nil
}

// OnPacketRead vets every packet before mochi processes it.
func (h *brokerHook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type == packets.Connect {
		return h.vetConnect(cl, pk)
	}
	s := h.session(cl)
	if s == nil {
		return pk, nil
	}
	switch pk.FixedHeader.Type {
	case packets.Publish:
		if pk.FixedHeader.Qos > 1 {
			// docs/protocol.md B.2: a QoS 2 PUBLISH closes the connection.
			h.e.log.Info("closing connection: QoS 2 publish", "client", cl.ID, "topic", pk.TopicName)
			return s.reject()
		}
		if !s.mayPublish(pk.TopicName) {
			h.e.log.Info("closing connection: publish to unsupported topic", "client", cl.ID, "topic", pk.TopicName)
			return s.reject()
		}
	case packets.Subscribe:
		existing := s.cl.State.Subscriptions.GetAll()
		n := len(existing)
		for _, f := range pk.Filters {
			if !s.maySubscribe(f.Filter) {
				h.e.log.Info("closing connection: subscribe to unsupported filter", "client", cl.ID, "filter", f.Filter)
				return s.reject()
			}
			if _, ok := existing[f.Filter]; !ok {
				n++
			}
		}
		if n > maxSubscriptions {
			h.e.log.Info("closing connection: more than 5 subscriptions", "client", cl.ID)
			return s.reject()
		}
	case packets.Puback:
		if s.kind == kindHub {
			h.e.hub.puback(s, pk.PacketID)
		}
	}
	return pk, nil
}

func (s *session) mayPublish(topic string) bool {
	if s.kind == kindDPS {
		return strings.HasPrefix(topic, dpsRegisterPrefix) || strings.HasPrefix(topic, dpsPollPrefix)
	}
	switch {
	case ownTelemetry(s.deviceID, topic):
		return true
	case strings.HasPrefix(topic, twinGetPrefix), strings.HasPrefix(topic, twinReportedPrefix):
		return true
	case strings.HasPrefix(topic, methodResPrefix):
		return true
	}
	return false
}

// ownTelemetry reports whether topic is the device-to-cloud topic of
// deviceID, with or without a property bag (docs/protocol.md B.3).
func ownTelemetry(deviceID, topic string) bool {
	ev := "devices/" + deviceID + "/messages/events"
	return deviceID != "" && (topic == ev || strings.HasPrefix(topic, ev+"/"))
}

func (s *session) maySubscribe(filter string) bool {
	if s.kind == kindDPS {
		return filter == "$dps/registrations/res/#"
	}
	switch filter {
	case "devices/" + s.deviceID + "/messages/devicebound/#", "devices/+/messages/devicebound/#",
		"$iothub/twin/res/#", "$iothub/twin/PATCH/properties/desired/#", "$iothub/methods/POST/#":
		return true
	}
	return false
}

// OnPublish handles a device's publish. Handled messages are marked
// ignored so mochi acknowledges QoS 1 but routes nothing.
func (h *brokerHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	s := h.session(cl)
	if s == nil {
		return pk, packets.ErrRejectPacket
	}
	var ok bool
	if s.kind == kindDPS {
		ok = h.e.dps.handle(s, pk)
	} else {
		ok = h.e.hub.handle(s, pk)
	}
	if !ok {
		s.stop(errClose)
		return pk, packets.ErrRejectPacket
	}
	return pk, packets.CodeSuccessIgnore
}

// OnSubscribe tells mochi to send no retained messages for any filter
// (MQTT 5 retain handling 2, set for 3.1.1 clients too). It holds none:
// every PUBLISH is handled and ignored, retain is never stored
// (docs/protocol.md B.2). Without this, mochi searches its topic tree for
// retained messages on each filter of every SUBSCRIBE, under its topic
// index lock, in a recursion that took the connection's goroutine stack
// to 64 KB, kept for as long as the device stays connected.
func (h *brokerHook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	for i := range pk.Filters {
		pk.Filters[i].RetainHandling = 2
	}
	return pk
}

// OnSubscribed takes the granted filters back out of mochi's topic
// index, which only routes (and the emulator routes nothing through
// mochi): a device's subscriptions stay in its client state, where
// session.subscribed reads them, and the index does not grow by a few KB
// per connected device. Then it wakes C2D delivery and method waiters.
func (h *brokerHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	for i, f := range pk.Filters {
		if i < len(codes) && codes[i] <= packets.CodeGrantedQos2.Code {
			h.e.server.Topics.Unsubscribe(f.Filter, cl.ID)
		}
	}
	if s := h.session(cl); s != nil && s.kind == kindHub {
		h.e.hub.subscribed(s)
	}
}

// OnSessionEstablished runs after CONNACK. A persistent session taken
// over from an earlier connection brought its subscriptions back into
// mochi's topic index; they leave it again as in OnSubscribed.
func (h *brokerHook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	for f := range cl.State.Subscriptions.GetAll() {
		h.e.server.Topics.Unsubscribe(f, cl.ID)
	}
	s := h.session(cl)
	if s == nil {
		return
	}
	s.established()
	if s.kind == kindHub {
		h.e.hub.established(s)
	}
}

// OnDisconnect sends the Will of a connection that ended without
// DISCONNECT (err is nil only after one) and forgets the session.
func (h *brokerHook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	if s := h.session(cl); s != nil && err != nil && s.will != nil {
		h.sendWill(s)
	}
	h.forget(cl, err)
}

func (h *brokerHook) forget(cl *mqtt.Client, err error) {
	v, loaded := h.sessions.LoadAndDelete(cl)
	if !loaded {
		return
	}
	s := v.(*session)
	h.conns.Delete(cl.Net.Conn)
	s.end()
	if s.kind == kindHub {
		h.e.hub.disconnected(s, err)
	}
}

// sendWill records a hub device's Will as its telemetry with
// iothub-MessageType=Will (docs/protocol.md B.2); it reaches no client.
func (h *brokerHook) sendWill(s *session) {
	w := s.will
	s.will = nil
	if err := h.e.hub.recordTelemetry(s, w.TopicName, w.Payload, w.Retain, map[string]string{"iothub-MessageType": "Will"}); err != nil {
		h.e.log.Debug("will not recorded", "client", s.cl.ID, "err", err)
	}
}

// parseHubUsername splits `{host}/{deviceId}/?api-version=...` (docs/protocol.md B.1).
// A module user name yields a non-empty module.
func parseHubUsername(u string) (host, deviceID, module string, q url.Values, err error) {
	i := strings.Index(u, "/?")
	if i < 0 {
		return "", "", "", nil, fmt.Errorf("user name %q has no '/?' before the parameters", u)
	}
	path, query := u[:i], u[i+2:]
	parts := strings.Split(path, "/")
	switch len(parts) {
	case 2:
		host, deviceID = parts[0], parts[1]
	case 3:
		host, deviceID, module = parts[0], parts[1], parts[2]
	default:
		return "", "", "", nil, fmt.Errorf("user name %q is not host/deviceId/?params", u)
	}
	// "hub/dev//?..." would otherwise pass as device dev with an empty
	// module (found by FuzzMQTTUsername).
	for _, p := range parts {
		if p == "" {
			return "", "", "", nil, fmt.Errorf("user name %q has an empty host, device id or module", u)
		}
	}
	q, err = userParams(query)
	if err != nil {
		return "", "", "", nil, fmt.Errorf("user name parameters: %w", err)
	}
	return host, deviceID, module, q, nil
}

// maxUserParams bounds a hub user name's parameters. Clients send a handful
// (api-version, DeviceClientType, model-id); one carrying thousands is
// refused before they are decoded, well under the 10,000 that net/url
// parses in one query (GODEBUG urlmaxqueryparams, in Go 1.26):
// FuzzMQTTUsername's re-encode check failed past that (seed
// regression-10001-parameters).
const maxUserParams = 32

// userParams parses the user name's parameters. Only "&" separates them:
// Learn writes a model id as is (model-id=dtmi:com:example:Thermostat;1,
// docs/protocol.md B.1 model-id), and its ";" belongs to the value, where
// url.ParseQuery would refuse the whole query. A "+" stays a "+".
func userParams(query string) (url.Values, error) {
	q := url.Values{}
	n := 0
	for _, kv := range strings.Split(query, "&") {
		if kv == "" {
			continue
		}
		if n++; n > maxUserParams {
			return nil, fmt.Errorf("more than %d parameters", maxUserParams)
		}
		k, v, _ := strings.Cut(kv, "=")
		key, err := url.QueryUnescape(strings.ReplaceAll(k, "+", "%2B"))
		if err != nil {
			return nil, err
		}
		val, err := url.QueryUnescape(strings.ReplaceAll(v, "+", "%2B"))
		if err != nil {
			return nil, err
		}
		q.Add(key, val)
	}
	return q, nil
}
