package azrest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/reefer/tracker/internal/sas"
)

// API versions the client speaks (docs/protocol.md D, E; the emulator
// accepts all three): the stable DPS service API, the DPS preview the
// enrollment routes use so that credentialPolicyName round-trips
// (docs/protocol.md D "Enrollment api-version"), and the IoT Hub service API.
const (
	DPSAPIVersion           = "2021-10-01"
	DPSEnrollmentAPIVersion = "2025-07-01-preview"
	HubAPIVersion           = "2021-04-12"
)

// tokenLifetime is how long each request's SAS token is valid; a fresh one
// is signed per request, so it only has to outlive one call.
const tokenLifetime = time.Hour

// Sentinels for what callers act on; *APIError matches them with
// errors.Is by HTTP status.
var (
	ErrNotFound     = errors.New("not found")
	ErrUnauthorized = errors.New("unauthorized")
	ErrConflict     = errors.New("already exists")
	ErrPrecondition = errors.New("etag mismatch")
	ErrThrottled    = errors.New("throttled")
	ErrUnsupported  = errors.New("not supported by this service")
)

// APIError is an error answer of the service.
type APIError struct {
	Service string // "DPS" or "IoT Hub"
	Method  string
	Path    string
	Status  int
	Code    int    // 6-digit errorCode (docs/protocol.md D, E), 0 if none
	Name    string // iothub-errorcode, when the hub sends one
	Message string
	// RetryAfter is the service's Retry-After on a 429, else 0.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	code := ""
	if e.Code != 0 {
		code = " " + strconv.Itoa(e.Code)
	}
	if e.Name != "" {
		code += " " + e.Name
	}
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	s := fmt.Sprintf("%s %s %s: %d%s: %s", e.Service, e.Method, e.Path, e.Status, code, msg)
	switch e.Status {
	case http.StatusUnauthorized:
		s += "; the service refused the shared access signature: check the connection string's SharedAccessKeyName and SharedAccessKey, and that the policy has the right for this call"
	case http.StatusForbidden:
		s += "; the policy lacks the right for this call"
	}
	return s
}

// Is matches the sentinels by status.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden
	case ErrConflict:
		return e.Status == http.StatusConflict
	case ErrPrecondition:
		return e.Status == http.StatusPreconditionFailed
	case ErrThrottled:
		return e.Status == http.StatusTooManyRequests
	}
	return false
}

// Options configure a client.
type Options struct {
	// BaseURL replaces https://<HostName> as the address requests go to
	// (the emulator serves DPS and every hub on one HTTPS address; the
	// token still names HostName). Empty for Azure.
	BaseURL string
	// HTTP is the client used (default: 30 s timeout, system roots).
	HTTP *http.Client
	// DryRun, when set, receives every request that would change
	// something instead of sending it; reads are still sent so the
	// printed writes are exact (etags, the devices of a query).
	DryRun io.Writer
	// Now is the clock for token expiry (default time.Now).
	Now func() time.Time
}

// client is what DPS and Hub share: signing, sending, decoding errors.
type client struct {
	service    string
	cs         ConnectionString
	base       string
	apiVersion string
	opts       Options
}

func newClient(service string, cs ConnectionString, apiVersion string, o Options) (*client, error) {
	if o.HTTP == nil {
		o.HTTP = &http.Client{Timeout: 30 * time.Second}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	base := "https://" + cs.HostName
	if o.BaseURL != "" {
		u, err := url.Parse(o.BaseURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, fmt.Errorf("service URL %q: want https://host[:port]", o.BaseURL)
		}
		base = strings.TrimRight(o.BaseURL, "/")
	}
	return &client{service: service, cs: cs, base: base, apiVersion: apiVersion, opts: o}, nil
}

// request is one call.
type request struct {
	method  string
	path    string // escaped path, e.g. "/enrollments/dev-1"
	query   url.Values
	header  map[string]string
	body    any // JSON-encoded unless []byte
	out     any // decoded from a 2xx answer when not nil
	read    bool
	respHdr *http.Header // receives the response headers
	// apiVersion replaces the client's api-version for this call.
	apiVersion string
}

// isRead: GETs and queries are sent even in a dry run.
func (r *request) isRead() bool { return r.method == http.MethodGet || r.read }

func (c *client) do(ctx context.Context, r request) error {
	q := url.Values{}
	for k, v := range r.query {
		q[k] = v
	}
	v := c.apiVersion
	if r.apiVersion != "" {
		v = r.apiVersion
	}
	q.Set("api-version", v)
	target := c.base + r.path + "?" + q.Encode()
	var body []byte
	switch b := r.body.(type) {
	case nil:
	case []byte:
		body = b
	default:
		var err error
		if body, err = json.Marshal(b); err != nil {
			return fmt.Errorf("encode %s %s: %w", r.method, r.path, err)
		}
	}
	if c.opts.DryRun != nil && !r.isRead() {
		c.printDry(r, target, body)
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, r.method, target, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%s %s %s: %w", c.service, r.method, r.path, err)
	}
	req.Header.Set("Authorization", tokenFor(c))
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	resp, err := c.opts.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach %s at %s: %w", c.service, c.base, unwrapURLError(err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s %s: reading the answer: %w", c.service, r.method, r.path, err)
	}
	if r.respHdr != nil {
		*r.respHdr = resp.Header
	}
	if resp.StatusCode/100 != 2 {
		return c.apiError(r, resp, b)
	}
	if r.out != nil && len(bytes.TrimSpace(b)) > 0 {
		if err := json.Unmarshal(b, r.out); err != nil {
			return fmt.Errorf("%s %s %s: the answer is not the JSON expected: %w", c.service, r.method, r.path, err)
		}
	}
	return nil
}

// tokenFor signs a fresh service SAS token for the client's host (docs/protocol.md D).
func tokenFor(c *client) string {
	return sas.Token(c.cs.HostName, c.cs.KeyName, c.cs.Key, c.opts.Now().Add(tokenLifetime))
}

// unwrapURLError drops the *url.Error wrapper, whose text repeats the
// whole URL with its query.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// apiError reads both error shapes: DPS's ProvisioningServiceErrorDetails
// with x-ms-error-code, and the hub's {"Message": "<JSON or text>",
// "ExceptionMessage": ...} with iothub-errorcode (docs/protocol.md D, E).
func (c *client) apiError(r request, resp *http.Response, b []byte) error {
	e := &APIError{Service: c.service, Method: r.method, Path: r.path, Status: resp.StatusCode, Name: resp.Header.Get("iothub-errorcode")}
	type details struct {
		ErrorCode int    `json:"errorCode"`
		Message   string `json:"message"`
	}
	var d details
	switch {
	case json.Unmarshal(b, &d) != nil:
		e.Message = strings.TrimSpace(string(b))
		if len(e.Message) > 300 {
			e.Message = e.Message[:300] + "..."
		}
	case d.ErrorCode != 0:
		e.Code, e.Message = d.ErrorCode, d.Message
	default:
		// The hub's Message (which the case-insensitive decoder put in
		// d.Message) holds the details as a JSON string, or text.
		var inner details
		if json.Unmarshal([]byte(d.Message), &inner) == nil && inner.ErrorCode != 0 {
			e.Code, e.Message = inner.ErrorCode, inner.Message
		} else {
			e.Message = d.Message
		}
	}
	if e.Code == 0 {
		e.Code, _ = strconv.Atoi(resp.Header.Get("x-ms-error-code"))
	}
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		if n, err := strconv.Atoi(ra); err == nil && n >= 0 {
			e.RetryAfter = time.Duration(n) * time.Second
		}
	}
	return e
}

// dryMu keeps each printed request whole: bulk work sends from several
// goroutines, and the DPS and hub clients share the writer.
var dryMu sync.Mutex

// printDry shows a request that a dry run does not send. The signature is
// left out: a dry run's output may end up in a ticket.
func (c *client) printDry(r request, target string, body []byte) {
	var w bytes.Buffer
	fmt.Fprintf(&w, "%s %s\n", r.method, target)
	fmt.Fprintf(&w, "Authorization: SharedAccessSignature sr=%s&sig=<redacted>&se=<+1h>&skn=%s\n", url.QueryEscape(c.cs.HostName), c.cs.KeyName)
	keys := make([]string, 0, len(r.header))
	for k := range r.header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&w, "%s: %s\n", k, r.header[k])
	}
	if body != nil {
		var pretty bytes.Buffer
		if json.Indent(&pretty, body, "", "  ") == nil {
			body = pretty.Bytes()
		}
		fmt.Fprintf(&w, "Content-Type: application/json; charset=utf-8\n\n%s\n", body)
	}
	w.WriteString("\n")
	dryMu.Lock()
	defer dryMu.Unlock()
	_, _ = c.opts.DryRun.Write(w.Bytes())
}

// pages runs a query (docs/protocol.md D, E: POST .../query with x-ms-max-item-count,
// following x-ms-continuation) and calls each with every page's raw items.
// q gives the path, the body and, if any, the api-version.
func (c *client) pages(ctx context.Context, q request, each func(json.RawMessage) error) error {
	cont := ""
	for {
		var page []json.RawMessage
		var h http.Header
		hdr := map[string]string{"x-ms-max-item-count": "100"}
		if cont != "" {
			hdr["x-ms-continuation"] = cont
		}
		r := request{method: http.MethodPost, path: q.path, header: hdr, body: q.body, out: &page, read: true, respHdr: &h, apiVersion: q.apiVersion}
		if err := c.do(ctx, r); err != nil {
			return err
		}
		for _, item := range page {
			if err := each(item); err != nil {
				return err
			}
		}
		cont = h.Get("x-ms-continuation")
		if cont == "" || len(page) == 0 {
			return nil
		}
	}
}

// escape is one path segment.
func escape(id string) string { return url.PathEscape(id) }
