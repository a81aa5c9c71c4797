package azrest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Device is a hub device identity (docs/protocol.md E), the fields the tool shows.
type Device struct {
	DeviceID                   string          `json:"deviceId"`
	GenerationID               string          `json:"generationId,omitempty"`
	ETag                       string          `json:"etag,omitempty"`
	Status                     string          `json:"status"`
	ConnectionState            string          `json:"connectionState,omitempty"`
	ConnectionStateUpdatedTime string          `json:"connectionStateUpdatedTime,omitempty"`
	LastActivityTime           string          `json:"lastActivityTime,omitempty"`
	Authentication             json.RawMessage `json:"authentication,omitempty"`
}

// Twin is the service view of a device twin (docs/protocol.md E).
type Twin struct {
	DeviceID        string         `json:"deviceId"`
	ETag            string         `json:"etag,omitempty"`
	Status          string         `json:"status,omitempty"`
	ConnectionState string         `json:"connectionState,omitempty"`
	Tags            map[string]any `json:"tags,omitempty"`
	Properties      struct {
		Desired  map[string]any `json:"desired"`
		Reported map[string]any `json:"reported"`
	} `json:"properties"`
}

// MethodResult is a direct method's answer: the device's status and payload.
type MethodResult struct {
	Status  int             `json:"status"`
	Payload json.RawMessage `json:"payload"`
}

// Event is one telemetry message of the emulator's monitor stream.
type Event struct {
	DeviceID         string            `json:"deviceId"`
	EnqueuedTime     time.Time         `json:"enqueuedTime"`
	MessageID        string            `json:"messageId,omitempty"`
	Payload          json.RawMessage   `json:"payload"`
	Properties       map[string]string `json:"properties,omitempty"`
	SystemProperties map[string]string `json:"systemProperties,omitempty"`
}

// Hub is a client of the IoT Hub service API.
type Hub struct{ c *client }

// NewHub returns a hub client for an IoT Hub service connection string.
func NewHub(cs ConnectionString, o Options) (*Hub, error) {
	c, err := newClient("IoT Hub", cs, HubAPIVersion, o)
	if err != nil {
		return nil, err
	}
	return &Hub{c: c}, nil
}

// HostName is the hub host the client signs for.
func (h *Hub) HostName() string { return h.c.cs.HostName }

// GetDevice is GET /devices/{id}.
func (h *Hub) GetDevice(ctx context.Context, id string) (Device, error) {
	var d Device
	err := h.c.do(ctx, request{method: http.MethodGet, path: "/devices/" + escape(id), out: &d})
	return d, err
}

// DeleteDevice is DELETE /devices/{id} with If-Match "*" unless an etag is
// given (docs/protocol.md E: the hub wants an If-Match on delete). The twin goes with it.
func (h *Hub) DeleteDevice(ctx context.Context, id, etag string) error {
	if etag == "" {
		etag = "*"
	}
	return h.c.do(ctx, request{method: http.MethodDelete, path: "/devices/" + escape(id), header: ifMatch(etag)})
}

// Query is POST /devices/query with "SELECT * FROM devices [WHERE
// where]", every page (docs/protocol.md E): the twins of the matching devices.
func (h *Hub) Query(ctx context.Context, where string) ([]Twin, error) {
	q := "SELECT * FROM devices"
	if w := strings.TrimSpace(where); w != "" {
		q += " WHERE " + w
	}
	var out []Twin
	err := h.c.pages(ctx, request{path: "/devices/query", body: map[string]string{"query": q}}, func(raw json.RawMessage) error {
		var t Twin
		if err := json.Unmarshal(raw, &t); err != nil {
			return fmt.Errorf("IoT Hub query: %w", err)
		}
		out = append(out, t)
		return nil
	})
	return out, err
}

// GetTwin is GET /twins/{id}.
func (h *Hub) GetTwin(ctx context.Context, id string) (Twin, error) {
	var t Twin
	err := h.c.do(ctx, request{method: http.MethodGet, path: "/twins/" + escape(id), out: &t})
	return t, err
}

// UpdateDesired is PATCH /twins/{id} with {"properties":{"desired":...}}:
// a merge, null removes a property (docs/protocol.md E).
func (h *Hub) UpdateDesired(ctx context.Context, id string, desired map[string]any) (Twin, error) {
	var t Twin
	body := map[string]any{"properties": map[string]any{"desired": desired}}
	err := h.c.do(ctx, request{method: http.MethodPatch, path: "/twins/" + escape(id), header: ifMatch("*"), body: body, out: &t})
	return t, err
}

// InvokeMethod is POST /twins/{id}/methods (docs/protocol.md E). responseTimeout is
// 5-300 s; connectTimeout 0 means the device must be connected now.
func (h *Hub) InvokeMethod(ctx context.Context, id, method string, payload json.RawMessage, responseTimeout, connectTimeout time.Duration) (MethodResult, error) {
	if len(payload) == 0 {
		payload = json.RawMessage("null")
	}
	body := map[string]any{
		"methodName":               method,
		"payload":                  payload,
		"responseTimeoutInSeconds": int(responseTimeout / time.Second),
		"connectTimeoutInSeconds":  int(connectTimeout / time.Second),
	}
	var r MethodResult
	err := h.c.do(ctx, request{method: http.MethodPost, path: "/twins/" + escape(id) + "/methods", body: body, out: &r})
	return r, err
}

// Monitor streams telemetry from the emulator's monitor route (GET
// /messages/events/stream, newline-delimited JSON) until ctx ends or each
// returns false. Azure delivers telemetry through its Event Hubs-compatible
// endpoint instead (AMQP, not this API): there it answers ErrUnsupported.
// deviceID "" watches every device.
func (h *Hub) Monitor(ctx context.Context, deviceID string, each func(Event) bool) error {
	return h.MonitorSince(ctx, deviceID, time.Time{}, each)
}

// MonitorSince is Monitor starting with the kept messages enqueued after
// since (zero: from now), so a watcher that lost its stream (the emulator
// restarted) misses nothing.
func (h *Hub) MonitorSince(ctx context.Context, deviceID string, since time.Time, each func(Event) bool) error {
	q := url.Values{"api-version": {h.c.apiVersion}}
	if deviceID != "" {
		q.Set("deviceId", deviceID)
	}
	if !since.IsZero() {
		q.Set("since", since.UTC().Format(time.RFC3339Nano))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.c.base+"/messages/events/stream?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", tokenFor(h.c))
	stream := *h.c.opts.HTTP
	stream.Timeout = 0 // a long-lived stream
	resp, err := stream.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("cannot reach %s at %s: %w", h.c.service, h.c.base, unwrapURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return fmt.Errorf("%w: watching telemetry over this API needs the emulator (azemu); on Azure use `az iot hub monitor-events`", ErrUnsupported)
	}
	if resp.StatusCode != http.StatusOK {
		var b [4096]byte
		n, _ := resp.Body.Read(b[:])
		return h.c.apiError(request{method: http.MethodGet, path: "/messages/events/stream"}, resp, b[:n])
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return fmt.Errorf("monitor stream: %w", err)
		}
		if !each(e) {
			return nil
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("monitor stream: %w", err)
	}
	return nil
}
