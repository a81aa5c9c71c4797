package emulator

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/reefer/tracker/deploy/emulator/store"
)

// DPS topics (docs/protocol.md A.2).
const (
	dpsRegisterPrefix = "$dps/registrations/PUT/iotdps-register/?"
	dpsPollPrefix     = "$dps/registrations/GET/iotdps-get-operationstatus/?"
	dpsResponseFmt    = "$dps/registrations/res/%d/?$rid=%s"
	// operations are forgotten after this long.
	operationTTL = time.Hour
)

type dpsService struct {
	e *Emulator

	mu     sync.Mutex
	ops    map[string]*operation
	regs   []time.Time            // recent register requests (instance limit)
	polls  map[string][]time.Time // lower(registration id) -> recent polls
	lastGC time.Time
}

type operation struct {
	id      string
	rid     string
	result  store.DeviceRegistrationResult
	readyAt time.Time
	created time.Time
}

func newDPSService(e *Emulator) *dpsService {
	return &dpsService{e: e, ops: map[string]*operation{}, polls: map[string][]time.Time{}}
}

// authenticate checks the DPS user name and client id (docs/protocol.md A.1): the
// user name is `{idScope}/registrations/{rid}/api-version=...` and the
// client id is the same registration id. Whether the certificate CN
// matches is answered at register time (400), as is enrollment (401). It
// returns the registration id and the api-version.
func (d *dpsService) authenticate(user, clientID string) (string, string, error) {
	parts := strings.SplitN(user, "/", 4)
	if !strings.EqualFold(parts[0], d.e.sec.IDScope) {
		return "", "", fmt.Errorf("unknown ID scope %q", parts[0])
	}
	rid := parts[2]
	if !store.ValidRegistrationID(rid) {
		return "", "", fmt.Errorf("invalid registration id %q", rid)
	}
	if clientID != rid {
		return "", "", fmt.Errorf("client id %q differs from the user name's registration id %q", clientID, rid)
	}
	params := strings.Split(parts[3], "&")
	v, ok := strings.CutPrefix(params[0], "api-version=")
	if !ok || v == "" {
		return "", "", errors.New("user name has no api-version")
	}
	return rid, v, nil
}

// csrAPIVersion is the first DPS api-version with certificate issuance
// (docs/protocol.md A.5).
var csrAPIVersion = time.Date(2025, 7, 1, 0, 0, 0, 0, time.UTC)

// supportsCSR reports whether a DPS api-version ("2025-07-01-preview",
// "2026-11-01", ...) knows the register body's csr: its date is
// csrAPIVersion or later.
func supportsCSR(apiVersion string) bool {
	if len(apiVersion) < 10 {
		return false
	}
	t, err := time.Parse("2006-01-02", apiVersion[:10])
	return err == nil && !t.Before(csrAPIVersion)
}

// errorBody is ProvisioningServiceErrorDetails (docs/protocol.md A.4).
func errorBody(code int, msg string, now time.Time) []byte {
	b, _ := json.Marshal(map[string]any{
		"errorCode":    code,
		"trackingId":   newTrackingID(),
		"message":      msg,
		"timestampUtc": now.UTC().Format("2006-01-02T15:04:05.0000000Z"),
	})
	return b
}

func newTrackingID() string {
	h := randomSuffix() + randomSuffix() + randomSuffix()
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func (d *dpsService) respond(s *session, status int, rid string, retryAfter time.Duration, body []byte) {
	topic := fmt.Sprintf(dpsResponseFmt, status, rid)
	if retryAfter >= 0 {
		topic += "&retry-after=" + strconv.Itoa(int(math.Ceil(retryAfter.Seconds())))
	}
	// Only a subscribed client hears the answer, as with the real broker.
	if !s.subscribed(topic) {
		d.e.log.Debug("dps response dropped: client not subscribed", "client", s.cl.ID, "topic", topic)
		return
	}
	// The C SDK notes register responses arrive at QoS 0 (docs/protocol.md A.1).
	s.publish(topic, body, 0, 0)
}

func (d *dpsService) respondError(s *session, rid string, err error, retryAfter time.Duration) {
	code := store.CodeOf(err)
	msg := err.Error()
	var se *store.Error
	if errors.As(err, &se) && se.Message != "" {
		msg = se.Message
	}
	d.respond(s, code/1000, rid, retryAfter, errorBody(code, msg, d.e.cfg.Now()))
}

// handle serves one DPS publish; false closes the connection.
func (d *dpsService) handle(s *session, pk packets.Packet) bool {
	q, ok := topicQuery(pk.TopicName)
	if !ok || q.Get("$rid") == "" {
		return false
	}
	rid := q.Get("$rid")
	switch {
	case strings.HasPrefix(pk.TopicName, dpsRegisterPrefix):
		d.register(s, rid, pk.Payload)
	case strings.HasPrefix(pk.TopicName, dpsPollPrefix):
		d.poll(s, rid, q.Get("operationId"))
	default:
		return false
	}
	return true
}

// allow is a sliding-window limiter: it records now in *times when fewer
// than limit events happened within window, else returns how long until
// one slot frees.
func allow(times *[]time.Time, now time.Time, limit int, window time.Duration) (bool, time.Duration) {
	keep := (*times)[:0]
	for _, t := range *times {
		if now.Sub(t) < window {
			keep = append(keep, t)
		}
	}
	*times = keep
	if len(keep) >= limit {
		return false, window - now.Sub(keep[0])
	}
	*times = append(*times, now)
	return true, 0
}

func (d *dpsService) register(s *session, rid string, body []byte) {
	var req struct {
		RegistrationID string          `json:"registrationId"`
		Payload        json.RawMessage `json:"payload"`
		CSR            *string         `json:"csr"`
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	if err := dec.Decode(&req); err != nil {
		d.respondError(s, rid, store.ErrInvalid.With("malformed register body: %v", err), -1)
		return
	}
	if req.RegistrationID == "" {
		d.respondError(s, rid, store.ErrInvalid.With("registrationId is required"), -1)
		return
	}
	if !strings.EqualFold(req.RegistrationID, s.rid) {
		d.respondError(s, rid, store.ErrInvalid.With("registrationId %q differs from the connection's %q", req.RegistrationID, s.rid), -1)
		return
	}
	var csr []byte
	if req.CSR != nil {
		// docs/protocol.md A.5, G.9: the emulator refuses a csr the
		// api-version does not know, and anything but base64 DER.
		if !supportsCSR(s.apiVersion) {
			d.respondError(s, rid, store.ErrCSRAPIVersion.With("csr needs api-version 2025-07-01-preview or later in the user name, not %q", s.apiVersion), -1)
			return
		}
		der, err := base64.StdEncoding.DecodeString(*req.CSR)
		if err != nil || len(der) == 0 {
			d.respondError(s, rid, store.ErrCSRInvalid.With("csr is not base64 DER (no PEM armour): %v", err), -1)
			return
		}
		csr = der
	}
	now := d.e.cfg.Now()
	d.mu.Lock()
	ok, wait := allow(&d.regs, now, d.e.cfg.RegistrationsPerMinute, time.Minute)
	d.gcLocked(now)
	d.mu.Unlock()
	if !ok {
		// docs/protocol.md F: 1,000 registrations/min per instance; 429 with
		// retry-after (docs/protocol.md A.4).
		d.respondError(s, rid, store.ErrThrottled.With("registration rate limit exceeded"), wait)
		return
	}
	res, err := d.e.store.Register(store.RegisterRequest{RegistrationID: s.rid, Chain: s.chain, Payload: req.Payload, CSR: csr})
	if err != nil {
		d.e.log.Info("dps register refused", "registrationId", s.rid, "err", err)
		d.respondError(s, rid, err, -1)
		return
	}
	res.Payload = nil // no custom-allocation webhook, so nothing to return
	op := &operation{
		id:      "4." + randomSuffix() + randomSuffix()[:4] + "." + newTrackingID(),
		rid:     strings.ToLower(s.rid),
		result:  res,
		readyAt: now.Add(d.e.cfg.AssignDelay),
		created: now,
	}
	d.mu.Lock()
	d.ops[op.id] = op
	d.mu.Unlock()
	d.e.log.Info("dps registration", "registrationId", s.rid, "status", res.Status, "assignedHub", res.AssignedHub, "substatus", res.Substatus,
		"issuedCertificate", len(res.IssuedCertificateChain) > 0)
	b, _ := json.Marshal(map[string]any{"operationId": op.id, "status": store.RegAssigning})
	d.respond(s, 202, rid, d.e.cfg.RetryAfter, b)
}

func (d *dpsService) poll(s *session, rid, opID string) {
	now := d.e.cfg.Now()
	d.mu.Lock()
	pl := d.polls[strings.ToLower(s.rid)]
	ok, wait := allow(&pl, now, d.e.cfg.PollLimit, d.e.cfg.PollWindow)
	d.polls[strings.ToLower(s.rid)] = pl
	op := d.ops[opID]
	d.mu.Unlock()
	if !ok {
		// docs/protocol.md A.4: 5 polls per 10 s per device.
		d.respondError(s, rid, store.ErrThrottled.With("operation status polled too often"), wait)
		return
	}
	if op == nil || op.rid != strings.ToLower(s.rid) {
		d.respondError(s, rid, &store.Error{Code: 404201, Name: "OperationNotFound", Message: fmt.Sprintf("operation %q not found", opID)}, -1)
		return
	}
	if now.Before(op.readyAt) {
		b, _ := json.Marshal(map[string]any{"operationId": op.id, "status": store.RegAssigning,
			"registrationState": map[string]any{"registrationId": op.result.RegistrationID, "status": store.RegAssigning}})
		retry := d.e.cfg.RetryAfter
		if left := op.readyAt.Sub(now); left < retry {
			retry = left
		}
		d.respond(s, 202, rid, retry, b)
		return
	}
	b, _ := json.Marshal(map[string]any{"operationId": op.id, "status": op.result.Status, "registrationState": op.result})
	d.respond(s, 200, rid, -1, b)
}

// gcLocked drops old operations and poll windows. Caller holds mu.
func (d *dpsService) gcLocked(now time.Time) {
	if now.Sub(d.lastGC) < time.Minute {
		return
	}
	d.lastGC = now
	for id, op := range d.ops {
		if now.Sub(op.created) > operationTTL {
			delete(d.ops, id)
		}
	}
	for k, v := range d.polls {
		if len(v) == 0 || now.Sub(v[len(v)-1]) > d.e.cfg.PollWindow {
			delete(d.polls, k)
		}
	}
}
