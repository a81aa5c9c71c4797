package service

import (
	"crypto/hmac"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/reefer/tracker/internal/sas"
)

// SASToken returns a service SAS token for resource, signed with policy's
// base64 key and valid until expiry (docs/protocol.md D "Service SAS token"); see
// [sas.Token].
func SASToken(resource, policy, key string, expiry time.Time) string {
	return sas.Token(resource, policy, key, expiry)
}

// GenerateKey returns a fresh random 256-bit policy key, base64-encoded like
// the keys Azure issues.
func GenerateKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// sasToken is a parsed service SAS token.
type sasToken struct {
	rawSR    string // sr exactly as transmitted (still URL-encoded)
	resource string // decoded sr, without a scheme
	sig      string // decoded signature
	expiry   int64
	policy   string
}

var (
	errNoToken     = errors.New("missing Authorization header")
	errBadToken    = errors.New("malformed SharedAccessSignature")
	errExpired     = errors.New("token expired")
	errBadSig      = errors.New("signature mismatch")
	errUnknownSKN  = errors.New("unknown shared access policy")
	errWrongTarget = errors.New("token resource does not cover the request")
)

// parseSAS parses "SharedAccessSignature sr=..&sig=..&se=..&skn=.." with
// the fields in any order (docs/protocol.md D).
func parseSAS(header string) (*sasToken, error) {
	header = strings.TrimSpace(header)
	if header == "" {
		return nil, errNoToken
	}
	const prefix = "sharedaccesssignature "
	if len(header) < len(prefix) || !strings.EqualFold(header[:len(prefix)], prefix) {
		return nil, fmt.Errorf("%w: not a SharedAccessSignature", errBadToken)
	}
	t := &sasToken{}
	var haveSE bool
	for _, kv := range strings.Split(strings.TrimSpace(header[len(prefix):]), "&") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("%w: field %q", errBadToken, kv)
		}
		// A raw '+' is a space in sr and skn, as every encoder writes them
		// (QueryEscape, quote_plus; a literal '+' comes as %2B), but a
		// '+' of an unencoded base64 signature must stay: PathUnescape
		// keeps it. Decoding sr with PathUnescape turned SASToken's own
		// "dev+1" for "dev 1" into a resource that covered nothing (found
		// by FuzzSASRoundTrip).
		unescape := url.QueryUnescape
		if strings.EqualFold(k, "sig") {
			unescape = url.PathUnescape
		}
		dv, err := unescape(v)
		if err != nil {
			return nil, fmt.Errorf("%w: field %s: %v", errBadToken, k, err)
		}
		switch strings.ToLower(k) {
		case "sr":
			t.rawSR = v
			t.resource = dv
		case "sig":
			t.sig = dv
		case "se":
			n, err := strconv.ParseInt(dv, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%w: se %q", errBadToken, dv)
			}
			t.expiry, haveSE = n, true
		case "skn":
			t.policy = dv
		}
	}
	if t.resource == "" || t.sig == "" || !haveSE {
		return nil, fmt.Errorf("%w: sr, sig and se are required", errBadToken)
	}
	for _, scheme := range []string{"https://", "http://"} {
		if len(t.resource) > len(scheme) && strings.EqualFold(t.resource[:len(scheme)], scheme) {
			t.resource = t.resource[len(scheme):]
		}
	}
	return t, nil
}

// host is the first segment of the token's resource: the service it names.
func (t *sasToken) host() string {
	h, _, _ := strings.Cut(t.resource, "/")
	return strings.ToLower(h)
}

// verify checks the policy, the signature (constant time) and the expiry.
func (t *sasToken) verify(policies map[string][]byte, now time.Time) error {
	if t.policy == "" {
		// Device-scoped tokens carry no skn; the service API needs a
		// shared access policy.
		return fmt.Errorf("%w: skn is required", errUnknownSKN)
	}
	key, ok := policies[strings.ToLower(t.policy)]
	if !ok {
		return fmt.Errorf("%w %q", errUnknownSKN, t.policy)
	}
	se := strconv.FormatInt(t.expiry, 10)
	// SDKs differ in how they URL-encode sr (%2F or %2f, some leave it
	// as is), so the string-to-sign is tried as transmitted and as Go
	// encodes it, in both hex cases.
	enc := url.QueryEscape(t.resource)
	candidates := []string{t.rawSR, enc, lowerHexEscapes(enc)}
	match := 0
	for _, c := range candidates {
		match |= hmacEqual(sas.Sign(key, c+"\n"+se), t.sig)
	}
	if match == 0 {
		return errBadSig
	}
	if now.Unix() >= t.expiry {
		return fmt.Errorf("%w at %s", errExpired, time.Unix(t.expiry, 0).UTC().Format(time.RFC3339))
	}
	return nil
}

func hmacEqual(a, b string) int {
	if hmac.Equal([]byte(a), []byte(b)) {
		return 1
	}
	return 0
}

// lowerHexEscapes turns "%2F" into "%2f".
func lowerHexEscapes(s string) string {
	b := []byte(s)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			for j := i + 1; j <= i+2; j++ {
				if b[j] >= 'A' && b[j] <= 'F' {
					b[j] += 'a' - 'A'
				}
			}
		}
	}
	return string(b)
}

// covers reports whether the token's resource is a prefix of the request
// resource (host + path) per path segment, case-insensitively: "/a/b"
// covers "/a/b/c" but not "/a/bc" (docs/protocol.md D).
func (t *sasToken) covers(host, path string) bool {
	tok := strings.Split(strings.Trim(strings.ToLower(t.resource), "/"), "/")
	req := strings.Split(strings.Trim(strings.ToLower(host+"/"+strings.TrimPrefix(path, "/")), "/"), "/")
	if len(tok) > len(req) {
		return false
	}
	for i := range tok {
		if tok[i] != req[i] {
			return false
		}
	}
	return true
}
