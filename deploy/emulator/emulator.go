// Package emulator is a local Azure IoT DPS + IoT Hub emulator that speaks
// the real device protocols (MQTT 3.1.1 over TLS with X.509 client
// certificates, spec sections A–C), so the device client and daemon can be
// tested on one machine without an Azure account. It is an independent
// service-side implementation written from the spec; it never imports the
// project's device code.
//
// One MQTT listener serves the DPS device endpoint and hub 1 (told apart by
// the CONNECT user name); every further hub gets its own listener. Hub host
// names are "localhost" (port 8883) or "localhost:PORT", which devices dial
// as-is. An HTTPS listener is reserved for the service API, mounted through
// Config.ServiceHandler. State lives in package store under the data dir.
//
// Each hub has Azure's built-in shared access policies (iothubowner,
// service, device, registryRead, registryReadWrite) and the DPS has
// provisioningserviceowner; their keys are generated once (secrets.json)
// and listed in emulator.json (Info: HubInfo.Policies, DPSInfo.Policies).
// The default service API grants each policy only its Azure rights (see
// package service). The device policy's key cannot connect a device: MQTT
// devices authenticate with X.509 only.
//
// Where spec section G leaves a point open, the emulator picks:
//   - G.1: a disabled enrollment answers 202 then 200 {"status":"disabled"}
//     like every other registration (the first poll is terminal).
//   - G.2: no matching enrollment or an untrusted chain is a 401 with
//     errorCode 401002 on the register response; CONNECT to DPS succeeds.
//   - G.3: deleted, disabled and unknown devices all get CONNACK 0x05.
//   - G.4: publishing to an unsupported topic, subscribing to an
//     unsupported filter or to more than 5 filters closes the connection.
//   - G.5: an invalid or oversized reported patch gets status 400.
//   - G.6: a direct method that is not answered in time is 504101.
//   - G.8: DPS applies the hub's keep-alive rule.
//   - G.11: DPS creates selfSigned identities with the SHA-256 thumbprint.
//   - G.12: PUT /devices/{id} without If-Match on an existing id is 409001.
//   - G.13: re-registration re-creates a hub identity deleted out of band.
//   - G.9: a csr (certificate issuance, docs/protocol.md A.5) under an
//     api-version before 2025-07-01-preview, a CSR that is not valid base64
//     DER PKCS#10, a CN other than the registration id, and an enrollment
//     without an existing credential policy are refused with 400 and
//     errorCode 400301, 400302, 400303, 400304; the poll's payload is
//     ignored. Credential policies (Config.CredentialPolicies, the service
//     API's /credentialPolicies) stand in for Azure Device Registry; a
//     device that received a certificate gets a certificateAuthority hub
//     identity, admitted with any unexpired certificate issued for it.
//
// # Isolation between clients
//
// No client's bytes reach another client; the emulator's services are the
// only senders. IoT Hub's $iothub topics name no device, so a broker that
// routed by topic would hand one device's message to every device
// subscribed to the same filter. Hence:
//   - mochi delivers nothing: every PUBLISH is handled by the DPS or hub
//     service and marked ignored, and the broker's read ACL refuses every
//     delivery; the services write each message to its one recipient.
//     Granted filters are kept in the client's own state only, not in
//     mochi's topic index, and a SUBSCRIBE gets no retained messages.
//   - A Will is accepted only from a hub device, only on its own
//     telemetry topic (devices/{id}/messages/events/...) with QoS 0 or 1
//     (docs/protocol.md B.2); any other Will, and any Will sent to DPS, gets CONNACK
//     0x05. The Will is taken from mochi at CONNECT and, on an ungraceful
//     close, recorded as the device's telemetry (iothub-MessageType=Will).
//   - Retain is never stored (docs/protocol.md B.2): retained telemetry and a retained
//     Will are recorded with mqtt-retain=true.
//   - Publishing outside the client's own topics, subscribing outside
//     them (another device's C2D, $share/..., #, $SYS) and QoS 2 close
//     the connection (G.4). devices/+/messages/devicebound/# is allowed
//     (the embedded C SDK uses it) and yields only the device's own C2D.
//   - MQTT 5 gets CONNACK 0x84 (unsupported protocol version), so topic
//     aliases, shared-subscription semantics and Will delays never apply:
//     a standard hub and DPS speak MQTT 3.1.1 (docs/protocol.md A.1, B.1).
//   - Broker client ids come from the authenticated identity (hub/device,
//     or $dps/{registrationId}/{random}), so no client can take over
//     another's session.
//
// # Delivery
//
// The emulator, not mochi's router, sends every message a client receives
// (hook.go, hub.go): a service queues the PUBLISH on the recipient's
// session, and one goroutine per session, alive only while there is work,
// writes the queue in order with mochi's Client.WritePacket and runs C2D
// delivery. This stays so, deliberately:
//   - Topic routing cannot isolate devices (see above). Twin responses,
//     desired patches and method requests travel on $iothub topics that
//     name no device, and mochi's per-delivery ACL check sees only the
//     subscriber and the topic: it cannot tell which of two devices
//     waiting on $iothub/twin/res/200/?$rid=1 a response belongs to.
//   - It would cost a walk over every hub device per message: all of them
//     hold the same $iothub filters, so each twin response or method call
//     would visit every subscriber (10,000 in bench/fleet) to be refused
//     by all but one. session.subscribed checks one client's at most five
//     filters instead of mochi's topic index.
//   - C2D follows IoT Hub, not MQTT: a message stays locked while in
//     flight, the device's PUBACK of that packet id completes it, and it
//     is delivered again after Config.C2DLockTimeout or on a reconnect
//     (the lock belongs to the connection), never twice on one connection
//     while locked: a PUBACK releases the lock only once the message is
//     completed, and a delivery pass reads the locks before the queue.
//     The session maps its own packet ids to C2D message ids for that;
//     mochi's in-flight store resends only to a resumed persistent
//     session and knows no lock.
//
// # Throttling
//
// Config.TelemetryPerSecond sets the hub's device-to-cloud limit (docs/protocol.md F),
// per hub and shared by all its devices, on the injectable clock
// Config.Now. IoT Hub first queues excess traffic (traffic shaping), then
// rejects it with 429001 ThrottlingException; over MQTT a rejection closes
// the connection (docs/protocol.md B.2, B.7). The emulator models the queue as a burst
// allowance of one second's worth of messages, accepted at once, and
// closes the connection of the device whose message finds the allowance
// used up (logged with 429001; the message is not recorded, not
// acknowledged). Will messages are not counted. Other throttles of docs/protocol.md F
// (connections, twin, registry) are not emulated; DPS has its own limits
// (RegistrationsPerMinute, PollLimit).
//
// Other simplifications: C2D locks last Config.C2DLockTimeout per
// connection (a reconnect redelivers at once); telemetry history is bounded
// per device (Config.TelemetryHistory, TelemetryHistoryBytes).
//
// # What the emulator does not do
//
// Cloud or device code that relies on any of these needs a real hub and
// DPS (the README keeps the same list):
//   - Device transports other than MQTT 3.1.1 over TLS on TCP: no MQTT over
//     WebSockets (port 443), no MQTT 5, no AMQP or AMQP over WebSockets, no
//     device HTTPS API (telemetry, C2D polling, file upload), and DPS
//     registration over MQTT only (not HTTPS or AMQP).
//   - Device authentication other than X.509: no SAS tokens or symmetric
//     keys for devices (CONNACK 0x05) and no TPM. DPS stores symmetricKey
//     and tpm enrollments (they round-trip through the service API), but no
//     device can register with them.
//   - Modules, module twins and IoT Edge: a module user name gets CONNACK
//     0x05.
//   - AMQP on the service side, and with it the service SDKs' cloud-to-device
//     send (ServiceClient / IoTHubRegistryManager C2D), delivery feedback
//     and file-upload notifications. C2D is queued through the emulator's
//     own HTTPS route (POST /devices/{id}/messages/deviceBound, package
//     service).
//   - The Event Hubs-compatible endpoint: telemetry is read from the
//     emulator's own HTTPS routes (package service), not with an Event Hubs
//     client or az iot hub monitor-events; no message routing, custom
//     endpoints, enrichments, consumer groups, or Event Grid events.
//   - Custom allocation: a registration under allocationPolicy custom (an
//     Azure Function webhook) fails with 400207; geoLatency behaves like
//     hashed; the registration payload is accepted and not interpreted.
//   - Azure Device Registry: credential policies are the emulator's own
//     (docs/protocol.md A.5); no ADR namespaces or ARM API, no revocation
//     of issued certificates, no renewal through the hub (a device renews
//     by registering again with a csr).
//   - Jobs, bulk import/export of identities, configurations and automatic
//     device management, the digital twins (Plug and Play) API beyond
//     recording model-id, device streams, file upload, distributed tracing.
//   - Most of the query language: hub queries are SELECT * FROM devices
//     with equalities joined by AND (on deviceId, status, connectionState,
//     tags, desired or reported properties), no projection, OR, ranges,
//     functions, GROUP BY or devices.modules; DPS queries return
//     everything.
//   - The management plane: hubs, the DPS, their policies and keys are made
//     at first start (Azure's built-in policies; no custom policies or key
//     regeneration), no Microsoft Entra ID tokens (SAS only), no metrics or
//     diagnostic logs.
//   - Throttles and quotas other than D2C telemetry and DPS registrations
//     and polls (see Throttling); message and twin size limits are applied.
package emulator

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/reefer/tracker/deploy/emulator/pki"
	"github.com/reefer/tracker/deploy/emulator/service"
	"github.com/reefer/tracker/deploy/emulator/store"
)

// Config configures an Emulator. Zero values give the documented defaults.
type Config struct {
	// DataDir holds state and generated secrets (required).
	DataDir string
	// MQTTAddr is the MQTT-over-TLS listener for DPS and hub 1
	// (default 127.0.0.1:8883). Port 0 picks a free port on first start
	// and reuses it on later starts with the same DataDir.
	MQTTAddr string
	// HubAddrs optionally sets the listener of hub 2, 3, ... (index 0 is
	// hub 2). Missing entries use MQTT port + n when that port is fixed,
	// else a free port, remembered across restarts.
	HubAddrs []string
	// HTTPSAddr is the service API listener (default 127.0.0.1:8443).
	// Set it to "-" to disable.
	HTTPSAddr string
	// ServiceHandler builds the HTTPS service API handler; nil means
	// ServiceAPI. A handler that is an io.Closer is closed on shutdown
	// (ending long-lived monitoring streams).
	ServiceHandler func(*Emulator) http.Handler
	// Hubs is the number of emulated hubs (default 1).
	Hubs int
	// IDScope of the DPS (default: generated once and kept).
	IDScope string

	// RetryAfter is the retry-after DPS sends with 202 (default 3 s,
	// docs/protocol.md A.4; whole seconds, 0 allowed).
	RetryAfter time.Duration
	// AssignDelay is how long a registration stays "assigning" before a
	// poll returns the terminal result (default 0: the first poll).
	AssignDelay time.Duration
	// RegistrationsPerMinute limits register requests per DPS instance
	// (default 1000, docs/protocol.md F). Above it DPS answers 429 with retry-after.
	RegistrationsPerMinute int
	// PollLimit and PollWindow limit operation-status polls per device
	// (default 5 per 10 s, docs/protocol.md A.4).
	PollLimit  int
	PollWindow time.Duration
	// C2DLockTimeout is how long a delivered, un-acknowledged C2D message
	// stays locked before redelivery (default 1 min, docs/protocol.md B.4).
	C2DLockTimeout time.Duration
	// HandshakeTimeout bounds the TLS handshake, with the wait for a
	// handshake slot (MaxHandshakes), and the wait for CONNECT (default
	// 30 s).
	HandshakeTimeout time.Duration
	// MaxHandshakes bounds the TLS handshakes in progress at once over all
	// listeners (default 256); connections beyond it wait, accepted, in
	// arrival order. It bounds the memory a burst of connecting devices
	// holds in handshake state.
	MaxHandshakes int
	// TelemetryHistory and TelemetryHistoryBytes bound the telemetry kept
	// per device, in memory and in DataDir (defaults 1000 messages,
	// 1 MiB; see store.Options).
	TelemetryHistory      int
	TelemetryHistoryBytes int
	// TelemetryPerSecond limits device-to-cloud messages per hub (docs/protocol.md F
	// "D2C sends"; 0, the default, is unlimited). A token bucket on the
	// clock Now holds one second of traffic; a telemetry PUBLISH that finds
	// it empty closes the sender's connection (429001, docs/protocol.md B.2, B.7).
	TelemetryPerSecond int
	// Now is the clock (default time.Now) for DPS rate limits, poll
	// windows and retry-after, C2D lock and TTL expiry, certificate
	// validity, timestamps, and SAS token expiry in the service API, so
	// tests can step time instead of waiting. Network deadlines and
	// direct-method timeouts use real time.
	Now func() time.Time
	// IssuedCertValidity is the validity of certificates DPS issues under
	// a credential policy created without one (default 30 days,
	// store.DefaultIssuedCertValidity; docs/protocol.md A.5).
	IssuedCertValidity time.Duration
	// CredentialPolicies are created at start when missing and given
	// IssuedCertValidity (an existing one keeps its issuing CA): the
	// emulator-specific stand-ins for the Azure
	// Device Registry policies an enrollment's credentialPolicyName names
	// (docs/protocol.md A.5).
	CredentialPolicies []string
	// NoSync skips fsync in the store (benchmarks).
	NoSync bool
	// Logger (default: discard).
	Logger *slog.Logger
}

func (c *Config) defaults() error {
	if c.DataDir == "" {
		return errors.New("emulator: Config.DataDir is required")
	}
	if c.MQTTAddr == "" {
		c.MQTTAddr = "127.0.0.1:8883"
	}
	if c.ServiceHandler == nil {
		c.ServiceHandler = ServiceAPI
	}
	if c.HTTPSAddr == "" {
		c.HTTPSAddr = "127.0.0.1:8443"
	}
	if c.Hubs <= 0 {
		c.Hubs = 1
	}
	if c.RetryAfter == 0 {
		c.RetryAfter = 3 * time.Second
	}
	if c.RetryAfter < 0 {
		c.RetryAfter = 0
	}
	if c.RegistrationsPerMinute <= 0 {
		c.RegistrationsPerMinute = 1000
	}
	if c.PollLimit <= 0 {
		c.PollLimit = 5
	}
	if c.PollWindow <= 0 {
		c.PollWindow = 10 * time.Second
	}
	if c.C2DLockTimeout <= 0 {
		c.C2DLockTimeout = time.Minute
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 30 * time.Second
	}
	if c.MaxHandshakes <= 0 {
		c.MaxHandshakes = 256
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// HubInfo describes one emulated hub.
type HubInfo struct {
	Name string `json:"name"`
	// HostName is what devices get as assignedHub and dial.
	HostName string `json:"hostName"`
	// MQTTAddress is the bound listener address.
	MQTTAddress string `json:"mqttAddress"`
	// ConnectionString is the service connection string (policy
	// iothubowner); its HostName is the hub host name.
	ConnectionString    string `json:"connectionString"`
	SharedAccessKeyName string `json:"sharedAccessKeyName"`
	SharedAccessKey     string `json:"sharedAccessKey"`
	// Policies holds the key of every built-in hub policy (iothubowner,
	// service, device, registryRead, registryReadWrite; see
	// service.BuiltinHubPolicies for their rights). The service API
	// enforces each policy's rights.
	Policies map[string]string `json:"policies"`
}

// ConnectionStringFor is the service connection string of the named
// policy ("" if the hub has no such policy).
func (h HubInfo) ConnectionStringFor(policy string) string {
	k, ok := h.Policies[policy]
	if !ok {
		return ""
	}
	return fmt.Sprintf("HostName=%s;SharedAccessKeyName=%s;SharedAccessKey=%s", h.HostName, policy, k)
}

// DPSInfo describes the DPS instance.
type DPSInfo struct {
	IDScope string `json:"idScope"`
	// DeviceEndpoint is host:port of the device-facing MQTT endpoint
	// (the emulator's global.azure-devices-provisioning.net).
	DeviceEndpoint string `json:"deviceEndpoint"`
	// ServiceHostName is the HostName of the service connection string:
	// host:port of the HTTPS listener.
	ServiceHostName     string `json:"serviceHostName"`
	ConnectionString    string `json:"connectionString"`
	SharedAccessKeyName string `json:"sharedAccessKeyName"`
	SharedAccessKey     string `json:"sharedAccessKey"`
	// Policies holds the key of every DPS policy; like a new DPS, the
	// emulator has only provisioningserviceowner (every right).
	Policies map[string]string `json:"policies"`
}

// Info is how to reach the emulator; it is written to DataDir/emulator.json.
type Info struct {
	DPS  DPSInfo   `json:"dps"`
	Hubs []HubInfo `json:"hubs"`
	// ServiceAddress is the bound HTTPS listener ("" when disabled) and
	// ServiceURL its https:// base URL.
	ServiceAddress string `json:"serviceAddress"`
	ServiceURL     string `json:"serviceUrl"`
	// CACertPath is the PEM of the CA that signs every server
	// certificate; devices and service clients trust it.
	CACertPath string `json:"caCertPath"`
	// CredentialRootCertPath is the PEM of the credential root CA: the
	// root of every chain DPS issues (docs/protocol.md A.5), the last
	// element of issuedCertificateChain.
	CredentialRootCertPath string `json:"credentialRootCertPath"`
	// IssuedCertificateValidity is the validity of certificates issued
	// under a credential policy created without one (a Go duration).
	IssuedCertificateValidity string `json:"issuedCertificateValidity"`
	// CredentialPolicies are the names of the credential policies that
	// existed at start (the service API lists the current ones).
	CredentialPolicies []string `json:"credentialPolicies"`
}

// ownerPolicy is the hub policy with every right; its key is HubKeys.
const ownerPolicy = "iothubowner"

// secrets are generated on first start and kept in DataDir/secrets.json.
type secrets struct {
	IDScope string            `json:"idScope"`
	DPSKey  string            `json:"dpsKey"`
	HubKeys map[string]string `json:"hubKeys"` // hub -> iothubowner key
	// HubPolicyKeys holds the keys of the other built-in hub policies:
	// hub -> policy -> key.
	HubPolicyKeys map[string]map[string]string `json:"hubPolicyKeys,omitempty"`
	Ports         map[string]int               `json:"ports"` // listener name -> port
}

// Emulator is a running DPS + IoT Hub emulator.
type Emulator struct {
	cfg   Config
	log   *slog.Logger
	store *store.Store
	sec   secrets
	ca    *pki.Cert
	info  Info

	server    *mqtt.Server
	tlsConfig *tls.Config
	listeners []*tlsListener
	httpLn    net.Listener
	httpSrv   *http.Server
	hubs      []hubEndpoint // index 0 = hub1
	removeObs func()

	dps  *dpsService
	hub  *hubService
	hook *brokerHook

	mu      sync.Mutex
	started bool
	closed  bool
	wg      sync.WaitGroup
}

type hubEndpoint struct {
	name     string
	host     string // device-facing host name
	listener string // mochi listener id
}

// New prepares an emulator: it loads or creates the data dir, PKI and
// secrets and binds every listener, so a taken port fails here with a clear
// error. Start begins serving.
func New(cfg Config) (*Emulator, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("emulator: data dir: %w", err)
	}
	e := &Emulator{cfg: cfg, log: cfg.Logger}
	if err := e.loadSecrets(); err != nil {
		return nil, err
	}
	ca, err := loadOrCreateCA(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	e.ca = ca
	if err := e.bind(); err != nil {
		e.closeListeners()
		return nil, err
	}
	hubs := make([]store.Hub, len(e.hubs))
	for i, h := range e.hubs {
		hubs[i] = store.Hub{Name: h.name, HostName: h.host}
	}
	st, err := store.Open(filepath.Join(cfg.DataDir, "state"), store.Options{Hubs: hubs, NoSync: cfg.NoSync, Logger: cfg.Logger, Now: cfg.Now,
		TelemetryHistory: cfg.TelemetryHistory, TelemetryHistoryBytes: cfg.TelemetryHistoryBytes, IssuedCertValidity: cfg.IssuedCertValidity})
	if err != nil {
		e.closeListeners()
		return nil, fmt.Errorf("emulator: %w", err)
	}
	e.store = st
	for _, name := range cfg.CredentialPolicies {
		// Created, or (keeping its CA) given the validity configured now,
		// so a restart with another --issued-cert-validity applies it.
		if _, err := st.PutCredentialPolicy(store.CredentialPolicy{Name: name}, ""); err != nil {
			e.closeListeners()
			st.Close()
			return nil, fmt.Errorf("emulator: credential policy: %w", err)
		}
	}
	if err := e.saveSecrets(); err != nil {
		e.closeListeners()
		return nil, err
	}
	return e, nil
}

func randomKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

func (e *Emulator) loadSecrets() error {
	p := filepath.Join(e.cfg.DataDir, "secrets.json")
	b, err := os.ReadFile(p)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &e.sec); err != nil {
			return fmt.Errorf("emulator: %s: %w", p, err)
		}
	case errors.Is(err, os.ErrNotExist):
	default:
		return fmt.Errorf("emulator: %w", err)
	}
	if e.sec.IDScope == "" {
		r := make([]byte, 4)
		_, _ = rand.Read(r)
		e.sec.IDScope = "0ne" + strings.ToUpper(hex.EncodeToString(r))
	}
	if e.cfg.IDScope != "" {
		e.sec.IDScope = e.cfg.IDScope
	}
	if e.sec.DPSKey == "" {
		e.sec.DPSKey = randomKey()
	}
	if e.sec.HubKeys == nil {
		e.sec.HubKeys = map[string]string{}
	}
	if e.sec.Ports == nil {
		e.sec.Ports = map[string]int{}
	}
	if e.sec.HubPolicyKeys == nil {
		e.sec.HubPolicyKeys = map[string]map[string]string{}
	}
	for i := 1; i <= e.cfg.Hubs; i++ {
		n := "hub" + strconv.Itoa(i)
		if e.sec.HubKeys[n] == "" {
			e.sec.HubKeys[n] = randomKey()
		}
		// Generated once, so tokens and connection strings stay valid
		// across restarts (data dirs from before policies get them now).
		keys := e.sec.HubPolicyKeys[n]
		if keys == nil {
			keys = map[string]string{}
			e.sec.HubPolicyKeys[n] = keys
		}
		for p := range service.BuiltinHubPolicies() {
			if p != ownerPolicy && keys[p] == "" {
				keys[p] = randomKey()
			}
		}
	}
	return nil
}

func (e *Emulator) saveSecrets() error {
	b, _ := json.MarshalIndent(e.sec, "", "  ")
	if err := store.WriteFileAtomic(filepath.Join(e.cfg.DataDir, "secrets.json"), b, true); err != nil {
		return fmt.Errorf("emulator: save secrets: %w", err)
	}
	return nil
}

// listenAddr resolves the address for a named listener: an explicit port
// wins; port 0 reuses the port remembered from an earlier start.
func (e *Emulator) listenAddr(name, addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port != "0" {
		return addr
	}
	if p := e.sec.Ports[name]; p > 0 {
		return net.JoinHostPort(host, strconv.Itoa(p))
	}
	return addr
}

func listen(name, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscallEADDRINUSE) {
			return nil, fmt.Errorf("emulator: %s listener: address %s is already in use (pick another with the flag or stop the other process): %w", name, addr, err)
		}
		return nil, fmt.Errorf("emulator: %s listener on %s: %w", name, addr, err)
	}
	return ln, nil
}

func portOf(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }

// hubHost is the device-facing host name of a hub on port p (spec: hosts
// must be dialable as-is; 8883 is implied).
func hubHost(p int) string {
	if p == 8883 {
		return "localhost"
	}
	return "localhost:" + strconv.Itoa(p)
}

func (e *Emulator) bind() error {
	addr := e.listenAddr("mqtt", e.cfg.MQTTAddr)
	ln, err := listen("mqtt", addr)
	if err != nil {
		return err
	}
	mainPort := portOf(ln)
	e.sec.Ports["mqtt"] = mainPort
	e.listeners = append(e.listeners, &tlsListener{id: "mqtt", ln: ln})
	e.hubs = append(e.hubs, hubEndpoint{name: "hub1", host: hubHost(mainPort), listener: "mqtt"})
	_, cfgPort, _ := net.SplitHostPort(e.cfg.MQTTAddr)
	host, _, _ := net.SplitHostPort(e.cfg.MQTTAddr)
	for i := 2; i <= e.cfg.Hubs; i++ {
		name := "hub" + strconv.Itoa(i)
		var a string
		switch {
		case i-2 < len(e.cfg.HubAddrs) && e.cfg.HubAddrs[i-2] != "":
			a = e.cfg.HubAddrs[i-2]
		case cfgPort != "0":
			a = net.JoinHostPort(host, strconv.Itoa(mainPort+i-1))
		default:
			a = e.listenAddr(name, net.JoinHostPort(host, "0"))
		}
		ln, err := listen(name, a)
		if err != nil {
			return err
		}
		e.sec.Ports[name] = portOf(ln)
		e.listeners = append(e.listeners, &tlsListener{id: name, ln: ln})
		e.hubs = append(e.hubs, hubEndpoint{name: name, host: hubHost(portOf(ln)), listener: name})
	}
	if e.cfg.HTTPSAddr != "-" {
		ln, err := listen("https", e.listenAddr("https", e.cfg.HTTPSAddr))
		if err != nil {
			return err
		}
		e.sec.Ports["https"] = portOf(ln)
		e.httpLn = ln
	}
	return nil
}

func (e *Emulator) closeListeners() {
	for _, l := range e.listeners {
		_ = l.ln.Close()
	}
	if e.httpLn != nil {
		_ = e.httpLn.Close()
	}
}

// Start serves every listener, writes DataDir/emulator.json and logs
// "ready". It returns once the emulator accepts connections; ctx ending
// closes the emulator.
func (e *Emulator) Start(ctx context.Context) error {
	e.mu.Lock()
	if e.started || e.closed {
		e.mu.Unlock()
		return errors.New("emulator: already started or closed")
	}
	e.started = true
	e.mu.Unlock()

	hosts := []string{"localhost", "127.0.0.1", "::1"}
	srvCert, err := e.ca.NewServer(hosts, pki.Options{})
	if err != nil {
		return fmt.Errorf("emulator: server certificate: %w", err)
	}
	tc := srvCert.TLS()
	e.tlsConfig = &tls.Config{
		MinVersion:   tls.VersionTLS12, // docs/protocol.md A.1, B.1
		Certificates: []tls.Certificate{tc},
		// Classic ECDHE, as IoT Hub's documented suites are: Go's default
		// hybrid post-quantum exchange (X25519MLKEM768) costs the server
		// about a tenth more CPU per handshake, a cost that shows with
		// thousands of devices connecting at once.
		CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256, tls.CurveP384},
		// Client certificates are checked per DPS/hub rule at CONNECT.
		ClientAuth: tls.RequireAnyClientCert,
	}

	e.dps = newDPSService(e)
	e.hub = newHubService(e)
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumQos = 1 // docs/protocol.md B.2: QoS 2 subscriptions are granted 1
	// docs/protocol.md B.2: retain is not stored, only forwarded as mqtt-retain. mochi
	// stores nothing anyway (every PUBLISH is handled and marked ignored,
	// the Will never reaches it); 1 keeps it from refusing a retained Will.
	caps.RetainAvailable = 1
	caps.MaximumPacketSize = 512 * 1024 // telemetry limit is 256 KB; bound memory
	// mochi queues only what it routes itself, which is nothing (see
	// OnACLCheck); its per-client queue is sized by this (8 bytes a slot).
	caps.MaximumClientWritesPending = 16
	caps.MinimumProtocolVersion = 4 // MQTT 3.1.1 (docs/protocol.md A.1, B.1); v5 gets its own preview
	e.server = mqtt.New(&mqtt.Options{Capabilities: caps, Logger: slog.New(quietHandler{e.log.Handler()}).With("component", "mochi"), InlineClient: false,
		// Device packets are a few hundred bytes; a larger one is read
		// through the buffer all the same. mochi's 2 KiB default, kept for
		// every connection's life, was 15 MB for 10,000 devices.
		ClientNetReadBufferSize: 512})
	e.hook = &brokerHook{e: e}
	if err := e.server.AddHook(e.hook, nil); err != nil {
		return fmt.Errorf("emulator: add hook: %w", err)
	}
	handshakes := newLimiter(e.cfg.MaxHandshakes)
	for _, l := range e.listeners {
		l.tlsConfig = e.tlsConfig
		l.timeout = e.cfg.HandshakeTimeout
		l.handshakes = handshakes
		l.log = e.log
		l.ended = e.hook.connEnded
		if err := e.server.AddListener(l); err != nil {
			return fmt.Errorf("emulator: add listener %s: %w", l.id, err)
		}
	}
	e.removeObs = e.store.AddObserver(e.hub)
	if err := e.server.Serve(); err != nil {
		return fmt.Errorf("emulator: serve: %w", err)
	}
	// Info first: the service handler may read it (keys, host names).
	e.info = e.buildInfo()
	if e.httpLn != nil {
		var h http.Handler = http.HandlerFunc(notImplemented)
		if e.cfg.ServiceHandler != nil {
			h = e.cfg.ServiceHandler(e)
		}
		e.httpSrv = &http.Server{
			Handler:           h,
			TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{tc}},
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(e.log.Handler(), slog.LevelDebug),
		}
		if c, ok := h.(io.Closer); ok {
			e.httpSrv.RegisterOnShutdown(func() { c.Close() })
		}
		ln := tls.NewListener(e.httpLn, e.httpSrv.TLSConfig)
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			if err := e.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				e.log.Error("https service stopped", "err", err)
			}
		}()
	}
	b, _ := json.MarshalIndent(e.info, "", "  ")
	if err := store.WriteFileAtomic(filepath.Join(e.cfg.DataDir, "emulator.json"), append(b, '\n'), true); err != nil {
		return fmt.Errorf("emulator: write emulator.json: %w", err)
	}
	if ctx != nil && ctx.Done() != nil {
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			select {
			case <-ctx.Done():
				go e.Close()
			case <-e.hub.done:
			}
		}()
	}
	hubHosts := make([]string, len(e.info.Hubs))
	for i, h := range e.info.Hubs {
		hubHosts[i] = h.HostName
	}
	e.log.Info("ready", "idScope", e.info.DPS.IDScope, "dps", e.info.DPS.DeviceEndpoint,
		"hubs", strings.Join(hubHosts, ","), "https", e.info.ServiceAddress, "ca", e.info.CACertPath,
		"info", filepath.Join(e.cfg.DataDir, "emulator.json"))
	return nil
}

func notImplemented(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusNotFound)
	_, _ = w.Write([]byte(`{"errorCode":404000,"message":"the service API is not mounted in this emulator build"}`))
}

func (e *Emulator) buildInfo() Info {
	inf := Info{CACertPath: filepath.Join(e.cfg.DataDir, "ca.pem"), CredentialRootCertPath: e.store.CredentialRootPath(),
		IssuedCertificateValidity: e.store.IssuedCertValidity().String(), CredentialPolicies: []string{}}
	for _, p := range []*string{&inf.CACertPath, &inf.CredentialRootCertPath} {
		if abs, err := filepath.Abs(*p); err == nil {
			*p = abs
		}
	}
	for _, p := range e.store.ListCredentialPolicies() {
		inf.CredentialPolicies = append(inf.CredentialPolicies, p.Name)
	}
	svcHost := ""
	if e.httpLn != nil {
		inf.ServiceAddress = e.httpLn.Addr().String()
		svcHost = "localhost:" + strconv.Itoa(portOf(e.httpLn))
		inf.ServiceURL = "https://" + svcHost
	}
	inf.DPS = DPSInfo{
		IDScope:             e.sec.IDScope,
		DeviceEndpoint:      "localhost:" + strconv.Itoa(portOf(e.listeners[0].ln)),
		ServiceHostName:     svcHost,
		SharedAccessKeyName: "provisioningserviceowner",
		SharedAccessKey:     e.sec.DPSKey,
		Policies:            map[string]string{"provisioningserviceowner": e.sec.DPSKey},
	}
	inf.DPS.ConnectionString = fmt.Sprintf("HostName=%s;SharedAccessKeyName=%s;SharedAccessKey=%s", svcHost, inf.DPS.SharedAccessKeyName, inf.DPS.SharedAccessKey)
	for _, h := range e.hubs {
		hi := HubInfo{Name: h.name, HostName: h.host, MQTTAddress: e.listenerByID(h.listener).Addr().String(),
			SharedAccessKeyName: ownerPolicy, SharedAccessKey: e.sec.HubKeys[h.name], Policies: map[string]string{ownerPolicy: e.sec.HubKeys[h.name]}}
		for p, k := range e.sec.HubPolicyKeys[h.name] {
			hi.Policies[p] = k
		}
		hi.ConnectionString = fmt.Sprintf("HostName=%s;SharedAccessKeyName=%s;SharedAccessKey=%s", hi.HostName, hi.SharedAccessKeyName, hi.SharedAccessKey)
		inf.Hubs = append(inf.Hubs, hi)
	}
	return inf
}

func (e *Emulator) listenerByID(id string) net.Listener {
	for _, l := range e.listeners {
		if l.id == id {
			return l.ln
		}
	}
	return nil
}

// Close stops every listener and disconnects every client. It is safe to
// call more than once.
func (e *Emulator) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	started := e.started
	e.mu.Unlock()
	if !started {
		e.closeListeners()
		return e.store.Close()
	}
	if e.removeObs != nil {
		e.removeObs()
	}
	if e.httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = e.httpSrv.Shutdown(ctx)
		cancel()
	}
	if e.hub != nil {
		e.hub.close()
	}
	var err error
	if e.server != nil {
		err = e.server.Close()
	} else {
		e.closeListeners()
	}
	e.wg.Wait()
	// Last: telemetry that arrived until the server closed is written.
	return errors.Join(err, e.store.Close())
}

// Store is the emulator's state, for service APIs and tests.
func (e *Emulator) Store() *store.Store { return e.store }

// Info describes how to reach the emulator (valid after Start).
func (e *Emulator) Info() Info { return e.info }

// Now is the emulator's clock (Config.Now).
func (e *Emulator) Now() time.Time { return e.cfg.Now() }

// Logger is the emulator's logger.
func (e *Emulator) Logger() *slog.Logger { return e.log }

// CACertificate is the CA that signs the server certificates.
func (e *Emulator) CACertificate() *x509.Certificate { return e.ca.Cert }

// CACertPool is a pool holding CACertificate, for client TLS configs.
func (e *Emulator) CACertPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(e.ca.Cert)
	return p
}

// InvokeMethod invokes a direct method on a connected device; it
// implements store.MethodInvoker for the service API.
func (e *Emulator) InvokeMethod(ctx context.Context, hub, deviceID string, req store.MethodRequest) (store.MethodResult, error) {
	return e.hub.invoke(ctx, hub, deviceID, req)
}

var _ store.MethodInvoker = (*Emulator)(nil)

// loadOrCreateCA keeps the emulator CA in DataDir (ca.pem, ca.key).
func loadOrCreateCA(dir string) (*pki.Cert, error) {
	certPath, keyPath := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	if c, err := pki.Load(certPath, keyPath); err == nil {
		return c, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("emulator: load CA: %w", err)
	}
	c, err := pki.NewRootCA("Azure IoT Emulator Root CA", pki.Options{})
	if err != nil {
		return nil, fmt.Errorf("emulator: create CA: %w", err)
	}
	if err := c.WriteFiles(certPath, keyPath); err != nil {
		return nil, fmt.Errorf("emulator: write CA: %w", err)
	}
	return c, nil
}
