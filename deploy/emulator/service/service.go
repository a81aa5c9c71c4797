package service

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/reefer/tracker/deploy/emulator/store"
)

// Policies maps a shared access policy name (e.g. "iothubowner",
// "provisioningserviceowner") to its base64 key.
type Policies map[string]string

// DPSConfig describes the emulated Device Provisioning Service.
type DPSConfig struct {
	// HostName is the service host, the sr of its SAS tokens (e.g.
	// "dps.localhost" or "mydps.azure-devices-provisioning.net"). Empty
	// disables the DPS service API.
	HostName string
	// IDScope is reported by GET /$emulator.
	IDScope string
	// Policies are the DPS shared access policies.
	Policies Policies
	// Permissions optionally sets the rights of policies by name. A policy
	// without an entry has the rights of the built-in policy of that name
	// (BuiltinDPSPolicies), or every DPS right when there is none.
	Permissions map[string]Permission
}

// Config configures the service API.
type Config struct {
	DPS DPSConfig
	// Hubs maps a hub host name, exactly as the store knows it (the
	// HostName= of its connection string), to its policies. A store hub
	// without an entry has no service API.
	Hubs map[string]Policies
	// HubPermissions optionally sets, per hub host name, the rights of
	// that hub's policies by name. A policy without an entry has the
	// rights of the built-in policy of that name (BuiltinHubPolicies:
	// iothubowner, service, device, registryRead, registryReadWrite), or
	// every hub right when there is none.
	HubPermissions map[string]map[string]Permission
	// Methods reaches connected devices for direct methods; the hub MQTT
	// layer implements it. Nil answers every invocation with 404103.
	Methods store.MethodInvoker
	// Logger (default discards).
	Logger *slog.Logger
	// Now is the clock for token expiry and monitoring (default time.Now).
	Now func() time.Time
	// MaxBodyBytes bounds request bodies (default 512 KiB).
	MaxBodyBytes int64
}

// Accepted api-version values (docs/protocol.md D, E). Older and newer values that the
// SDKs send are included; anything else is refused with 400 400001.
var (
	DPSAPIVersions = []string{"2018-09-01-preview", "2019-03-31", "2021-06-01", "2021-10-01", "2025-07-01-preview", "2026-04-01", "2026-11-02-preview"}
	HubAPIVersions = []string{"2018-06-30", "2019-03-30", "2019-10-01", "2020-03-13", "2020-09-30", "2021-04-12"}
)

type kind int

const (
	kindDPS kind = iota
	kindHub
)

// target is one service reachable through the handler.
type target struct {
	kind     kind
	host     string // canonical host name (store spelling for hubs)
	policies map[string][]byte
	perms    map[string]Permission // lower(policy) -> rights
	mux      *http.ServeMux
}

// Service is the HTTPS service API of the emulator. It implements
// http.Handler; mount it on the emulator's TLS listener.
type Service struct {
	st      *store.Store
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	targets map[string]*target // lower(host) -> target

	ctx    context.Context // cancelled by Close; ends streams
	cancel context.CancelFunc
	once   sync.Once
}

var _ http.Handler = (*Service)(nil)

// New builds the service API over st. Every hub in cfg.Hubs must exist in
// the store, every key must be base64, and host names must be distinct.
func New(st *store.Store, cfg Config) (*Service, error) {
	if st == nil {
		return nil, errors.New("service: nil store")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 512 << 10
	}
	s := &Service{st: st, cfg: cfg, log: cfg.Logger, now: cfg.Now, targets: map[string]*target{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	add := func(k kind, host string, pol Policies, perms map[string]Permission) error {
		key := strings.ToLower(host)
		if host == "" {
			return errors.New("service: empty host name")
		}
		if s.targets[key] != nil {
			return fmt.Errorf("service: host %q configured twice", host)
		}
		if len(pol) == 0 {
			return fmt.Errorf("service: %s has no policies", host)
		}
		if err := checkPermissions(host, pol, perms); err != nil {
			return err
		}
		keys := map[string][]byte{}
		var names []string
		for name, k := range pol {
			names = append(names, name)
			b, err := base64.StdEncoding.DecodeString(k)
			if err != nil || len(b) == 0 {
				return fmt.Errorf("service: %s policy %s: key is not base64", host, name)
			}
			keys[strings.ToLower(name)] = b
		}
		t := &target{kind: k, host: host, policies: keys, perms: resolvePermissions(k, names, perms), mux: http.NewServeMux()}
		if k == kindDPS {
			s.dpsRoutes(t.mux)
			s.policyRoutes(t.mux)
		} else {
			s.hubRoutes(t.mux, host)
		}
		s.certRoutes(t)
		s.targets[key] = t
		return nil
	}
	if cfg.DPS.HostName != "" {
		if err := add(kindDPS, cfg.DPS.HostName, cfg.DPS.Policies, cfg.DPS.Permissions); err != nil {
			return nil, err
		}
	}
	for host, pol := range cfg.Hubs {
		if !st.HasHub(host) {
			return nil, fmt.Errorf("service: hub %q is not in the store", host)
		}
		if err := add(kindHub, host, pol, cfg.HubPermissions[host]); err != nil {
			return nil, err
		}
	}
	for host := range cfg.HubPermissions {
		if _, ok := cfg.Hubs[host]; !ok {
			return nil, fmt.Errorf("service: permissions for hub %q, which has no policies", host)
		}
	}
	if len(s.targets) == 0 {
		return nil, errors.New("service: neither DPS nor any hub configured")
	}
	return s, nil
}

// Close ends long-lived monitoring streams so an http.Server can shut down.
func (s *Service) Close() error {
	s.once.Do(s.cancel)
	return nil
}

// ServeHTTP routes a request to DPS or a hub (by the token's sr, falling
// back to the Host header), authenticates it, checks api-version and
// dispatches it. Panics are logged and answered with 500.
func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sw := &statusWriter{ResponseWriter: w}
	var t *target
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.log.Error("service: panic", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			if !sw.wrote {
				s.writeError(sw, r, t, store.ErrInternal.With("internal error"))
			}
		}
	}()
	r.Body = http.MaxBytesReader(sw, r.Body, s.cfg.MaxBodyBytes)

	tok, perr := parseSAS(r.Header.Get("Authorization"))
	if perr == nil {
		t = s.targets[tok.host()]
	}
	if t == nil {
		t = s.targets[strings.ToLower(r.Host)]
		if t == nil {
			if h, _, err := net.SplitHostPort(r.Host); err == nil {
				t = s.targets[strings.ToLower(h)]
			}
		}
	}
	switch {
	case perr != nil:
		s.writeError(sw, r, t, errUnauthorized(perr))
		return
	case t == nil || !strings.EqualFold(t.host, tok.host()):
		s.writeError(sw, r, t, errUnauthorized(fmt.Errorf("%w: no emulated service %q", errWrongTarget, tok.host())))
		return
	}
	if err := tok.verify(t.policies, s.now()); err != nil {
		s.writeError(sw, r, t, errUnauthorized(err))
		return
	}
	if !tok.covers(t.host, r.URL.Path) {
		s.writeError(sw, r, t, errUnauthorized(fmt.Errorf("%w: %s", errWrongTarget, tok.resource)))
		return
	}
	if err := checkAPIVersion(t.kind, r.URL.Query().Get("api-version")); err != nil {
		s.writeError(sw, r, t, err)
		return
	}
	ctx := context.WithValue(r.Context(), targetKey{}, t)
	policy := strings.ToLower(tok.policy)
	ctx = context.WithValue(ctx, grantKey{}, grant{policy: tok.policy, perms: t.perms[policy]})
	t.mux.ServeHTTP(sw, r.WithContext(ctx))
	s.log.Debug("service: request", "service", t.host, "method", r.Method, "path", r.URL.Path, "status", sw.status, "policy", tok.policy)
}

type targetKey struct{}

func targetOf(r *http.Request) *target {
	t, _ := r.Context().Value(targetKey{}).(*target)
	return t
}

func checkAPIVersion(k kind, v string) error {
	list := HubAPIVersions
	if k == kindDPS {
		list = DPSAPIVersions
	}
	if v == "" {
		return errAPIVersion.With("the api-version query parameter is required")
	}
	if !slices.Contains(list, v) {
		return errAPIVersion.With("api-version %q is not supported; supported: %s", v, strings.Join(list, ", "))
	}
	return nil
}

// Errors the service adds to the store's (codes from the Azure SDKs'
// ErrorCode enums).
var (
	errAPIVersion    = &store.Error{Code: 400001, Name: "InvalidProtocolVersion"}
	errNotFoundRoute = &store.Error{Code: 404000, Name: "NotFound"}
	errUnauthorizedE = &store.Error{Code: 401002, Name: "IotHubUnauthorizedAccess"}
)

func errUnauthorized(err error) *store.Error {
	return errUnauthorizedE.With("Unauthorized: %v", err)
}

// statusWriter remembers whether a response was started, so the panic
// handler does not write a second header.
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.status, w.wrote = http.StatusOK, true
	}
	return w.ResponseWriter.Write(b)
}

// Flush lets monitoring streams push each event.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap serves http.ResponseController.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func trackingID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return strings.ToUpper(hex.EncodeToString(b))
}

// dpsErrorBody is ProvisioningServiceErrorDetails (docs/protocol.md D).
type dpsErrorBody struct {
	ErrorCode    int    `json:"errorCode"`
	TrackingID   string `json:"trackingId"`
	Message      string `json:"message"`
	TimestampUTC string `json:"timestampUtc"`
}

// hubErrorBody is the IoT Hub REST error body: Message holds a JSON
// document with the 6-digit code (the shape current hubs send, e.g.
// azure-iot-sdk-csharp#3436), ExceptionMessage is empty.
type hubErrorBody struct {
	Message          string `json:"Message"`
	ExceptionMessage string `json:"ExceptionMessage"`
}

// writeError answers with the error body of the target service: DPS
// (ProvisioningServiceErrorDetails + x-ms-error-code), or hub (Message /
// ExceptionMessage + iothub-errorcode). Without a known target the DPS
// shape is used.
func (s *Service) writeError(w http.ResponseWriter, r *http.Request, t *target, err error) {
	var e *store.Error
	if !errors.As(err, &e) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			e = store.ErrTooLarge.With("request body exceeds %d bytes", mbe.Limit)
		} else {
			e = store.ErrInternal.With("%v", err)
		}
	}
	msg := e.Message
	if msg == "" {
		msg = e.Name
	}
	ts := s.now().UTC().Format("2006-01-02T15:04:05.0000000Z")
	details := dpsErrorBody{ErrorCode: e.Code, TrackingID: trackingID(), Message: msg, TimestampUTC: ts}
	status := e.Status()
	if status < 400 || status > 599 {
		status = http.StatusInternalServerError
	}
	if status >= 500 || status == http.StatusUnauthorized {
		s.log.Info("service: error", "method", r.Method, "path", r.URL.Path, "code", e.Code, "message", msg)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	var body any = details
	if t != nil && t.kind == kindHub {
		inner, _ := json.Marshal(details)
		body = hubErrorBody{Message: string(inner)}
		h.Set("iothub-errorcode", e.Name)
	} else {
		h.Set("x-ms-error-code", fmt.Sprint(e.Code))
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

// fail writes err in the shape of the request's target service.
func (s *Service) fail(w http.ResponseWriter, r *http.Request, err error) {
	s.writeError(w, r, targetOf(r), err)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// setETag sets the ETag response header, quoting the value if needed.
// reply answers 200 with v and its etag, or the error.
func (s *Service) reply(w http.ResponseWriter, r *http.Request, v any, etag string, err error) {
	if err != nil {
		s.fail(w, r, err)
		return
	}
	setETag(w, etag)
	writeJSON(w, http.StatusOK, v)
}

// replyDeleted answers 204, or the error.
func (s *Service) replyDeleted(w http.ResponseWriter, r *http.Request, err error) {
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func setETag(w http.ResponseWriter, etag string) {
	if etag == "" {
		return
	}
	if !strings.HasPrefix(etag, `"`) {
		etag = `"` + etag + `"`
	}
	w.Header().Set("ETag", etag)
}

// readBody reads the whole (size-limited) body.
func readBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, store.ErrTooLarge.With("request body exceeds %d bytes", mbe.Limit)
		}
		return nil, store.ErrInvalid.With("reading body: %v", err)
	}
	return b, nil
}

// decodeJSON decodes the body into v; malformed JSON is 400004.
func decodeJSON(r *http.Request, v any) error {
	b, err := readBody(r)
	if err != nil {
		return err
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return store.ErrInvalid.With("request body is empty")
	}
	return jsonUnmarshal(b, v)
}

// jsonUnmarshal decodes b into v; malformed JSON is 400004.
func jsonUnmarshal(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return store.ErrInvalid.With("malformed JSON body: %v", err)
	}
	return nil
}

// info is GET /$emulator: what this service is.
func (s *Service) info(w http.ResponseWriter, r *http.Request) {
	t := targetOf(r)
	out := map[string]any{"hostName": t.host}
	if t.kind == kindDPS {
		out["service"] = "dps"
		out["idScope"] = s.cfg.DPS.IDScope
		var hubs []string
		for _, h := range s.st.Hubs() {
			hubs = append(hubs, h.HostName)
		}
		out["iotHubs"] = hubs
		out["apiVersions"] = DPSAPIVersions
	} else {
		out["service"] = "iothub"
		out["apiVersions"] = HubAPIVersions
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Service) notFound(w http.ResponseWriter, r *http.Request) {
	s.fail(w, r, errNotFoundRoute.With("no route %s %s", r.Method, r.URL.Path))
}
