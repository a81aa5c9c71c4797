package emulator

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Spec B.2: the hub idles a client out after 1.5 × keep-alive, capped at
// 1767 s; 1178 × 1.5 = 1767. A keep-alive of 0 gets the cap too.
const maxKeepAlive = 1178

// Spec B.2, F: at most 5 subscriptions per device.
const maxSubscriptions = 5

// errClose is the stop cause of a connection closed for protocol misuse:
// IoT Hub and DPS answer misuse by closing the connection (spec B.2).
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

	rid string // DPS registration id

	hub          string // hub host name
	hubName      string
	deviceID     string
	generationID string
	modelID      string

	out   chan *packets.Packet
	kick  chan struct{} // C2D delivery wake-up
	ready chan struct{} // closed once CONNACK went out
	done  chan struct{}
	once  sync.Once
	rOnce sync.Once

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
	s := &session{e: e, cl: cl, kind: kind, chain: chain,
		out: make(chan *packets.Packet, 256), kick: make(chan struct{}, 1), ready: make(chan struct{}), done: make(chan struct{}),
		c2dInflight: map[uint16]string{}, c2dLocked: map[string]int64{}, methods: map[string]chan methodReply{}}
	go s.writeLoop()
	return s
}

// writeLoop writes queued packets, so store observers never block on a
// slow client's socket, and runs C2D delivery for hub sessions (one
// goroutine per connection besides mochi's two).
func (s *session) writeLoop() {
	// Nothing may precede CONNACK, even a notification for a session
	// whose subscriptions were inherited (CleanSession 0).
	// If CONNACK cannot be sent mochi never calls OnDisconnect; notice
	// the closed client and clean up ourselves.
	tick := time.NewTicker(time.Second)
wait:
	for {
		select {
		case <-s.ready:
			break wait
		case <-s.done:
			tick.Stop()
			return
		case <-tick.C:
			if s.cl.Closed() {
				tick.Stop()
				s.e.hook.forget(s.cl, errors.New("closed before CONNACK"))
				return
			}
		}
	}
	tick.Stop()
	var lockTick <-chan time.Time
	if s.kind == kindHub {
		// Expired C2D locks are noticed within a quarter lock time.
		t := time.NewTicker(s.e.cfg.C2DLockTimeout / 4)
		defer t.Stop()
		lockTick = t.C
	}
	for {
		select {
		case pk := <-s.out:
			if err := s.cl.WritePacket(*pk); err != nil {
				s.e.log.Debug("write to client failed", "client", s.cl.ID, "err", err)
			}
		case <-s.kick:
			s.deliverC2D()
		case <-lockTick:
			s.deliverC2D()
		case <-s.done:
			return
		}
	}
}

// publish queues a PUBLISH to the client. QoS 0 packets are dropped when
// the queue is full, as a broker drops them for a slow consumer.
func (s *session) publish(topic string, body []byte, qos byte, pid uint16) bool {
	pk := &packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
		TopicName:   topic,
		Payload:     body,
		PacketID:    pid,
	}
	select {
	case s.out <- pk:
		return true
	case <-s.done:
		return false
	default:
		s.e.log.Warn("client write queue full, dropping message", "client", s.cl.ID, "topic", topic)
		return false
	}
}

func (s *session) stop(reason error) {
	s.cl.Stop(reason)
}

func (s *session) end() {
	s.once.Do(func() { close(s.done) })
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
}

func (h *brokerHook) ID() string { return "azemu" }

func (h *brokerHook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPacketRead, mqtt.OnPublish,
		mqtt.OnSubscribed, mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnWill,
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
		// Spec A.1, B.1: no password with X.509; SAS is not emulated.
		log.Info("refused: password given; only X.509 authentication is emulated")
		return false
	}
	if ka := cl.State.Keepalive; ka == 0 || ka > maxKeepAlive {
		cl.State.Keepalive = maxKeepAlive
	}
	user := string(pk.Connect.Username)
	if cl.Net.Listener == "mqtt" && isDPSUsername(user) {
		rid, err := h.e.dps.authenticate(user, pk.Connect.ClientIdentifier)
		if err != nil {
			log.Info("dps connect refused", "err", err)
			return false
		}
		s := newSession(h.e, cl, kindDPS, chain)
		s.rid = rid
		// Spec A.1: DPS keeps no session; every connection is clean.
		// A unique broker id keeps parallel DPS connections apart.
		cl.Properties.Clean = true
		cl.ID = "$dps/" + rid + "/" + randomSuffix()
		h.sessions.Store(cl, s)
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
	h.sessions.Store(cl, s)
	log.Debug("hub connect", "hub", s.hub, "deviceId", s.deviceID)
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
// with no '?' (spec A.1).
func isDPSUsername(u string) bool {
	parts := strings.SplitN(u, "/", 4)
	return len(parts) == 4 && parts[1] == "registrations" && strings.HasPrefix(parts[3], "api-version=")
}

// OnACLCheck allows everything: topics are vetted in OnPacketRead, where a
// violation can close the connection (mochi's ACL only drops QoS 0).
func (h *brokerHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool { return true }

// OnPacketRead vets every packet before mochi processes it.
func (h *brokerHook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	s := h.session(cl)
	if s == nil {
		return pk, nil
	}
	switch pk.FixedHeader.Type {
	case packets.Publish:
		if pk.FixedHeader.Qos > 1 {
			// Spec B.2: a QoS 2 PUBLISH closes the connection.
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
	ev := "devices/" + s.deviceID + "/messages/events"
	switch {
	case topic == ev, strings.HasPrefix(topic, ev+"/"):
		return true
	case strings.HasPrefix(topic, twinGetPrefix), strings.HasPrefix(topic, twinReportedPrefix):
		return true
	case strings.HasPrefix(topic, methodResPrefix):
		return true
	}
	return false
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

// OnSubscribed wakes C2D delivery and method waiters.
func (h *brokerHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	if s := h.session(cl); s != nil && s.kind == kindHub {
		h.e.hub.subscribed(s)
	}
}

// OnSessionEstablished runs after CONNACK.
func (h *brokerHook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	s := h.session(cl)
	if s == nil {
		return
	}
	s.rOnce.Do(func() { close(s.ready) })
	if s.kind == kindHub {
		h.e.hub.established(s)
	}
}

// OnDisconnect forgets the session.
func (h *brokerHook) OnDisconnect(cl *mqtt.Client, err error, expire bool) { h.forget(cl, err) }

func (h *brokerHook) forget(cl *mqtt.Client, err error) {
	v, loaded := h.sessions.LoadAndDelete(cl)
	if !loaded {
		return
	}
	s := v.(*session)
	s.end()
	if s.kind == kindHub {
		h.e.hub.disconnected(s, err)
	}
}

// OnWill forwards a hub device's will as telemetry with
// iothub-MessageType=Will (spec B.2). The returned will reaches no
// subscriber.
func (h *brokerHook) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	s := h.session(cl)
	if s == nil || s.kind != kindHub || !s.mayPublish(will.TopicName) || strings.HasPrefix(will.TopicName, "$") {
		return will, nil
	}
	if err := h.e.hub.recordTelemetry(s, will.TopicName, will.Payload, will.Retain, map[string]string{"iothub-MessageType": "Will"}); err != nil {
		h.e.log.Debug("will not recorded", "client", cl.ID, "err", err)
	}
	return will, nil
}

// parseHubUsername splits `{host}/{deviceId}/?api-version=...` (spec B.1).
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
	q, err = url.ParseQuery(strings.ReplaceAll(query, "+", "%2B"))
	if err != nil {
		return "", "", "", nil, fmt.Errorf("user name parameters: %w", err)
	}
	return host, deviceID, module, q, nil
}
