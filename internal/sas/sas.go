// Package sas makes the shared access signatures of the Azure IoT service
// APIs (docs/protocol.md D "Service SAS token"). The DPS and IoT Hub service sides take
// the same token, so the operator tool signs with it and the emulator
// checks with it: one implementation of the signature for both.
package sas

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/url"
	"strconv"
	"time"
)

// Token returns a complete Authorization header value for resource (a
// host name such as "mydps.azure-devices-provisioning.net", optionally
// followed by a path), signed with the policy's base64 key and valid until
// expiry: sig = base64(HMAC-SHA256(base64decode(key), urlencode(resource) +
// "\n" + se)). A key that is not valid base64 is used as raw bytes; the
// service will then refuse the token.
func Token(resource, policy, key string, expiry time.Time) string {
	se := strconv.FormatInt(expiry.Unix(), 10)
	sr := url.QueryEscape(resource)
	sig := Sign(DecodeKey(key), sr+"\n"+se)
	return "SharedAccessSignature sr=" + sr + "&sig=" + url.QueryEscape(sig) + "&se=" + se + "&skn=" + url.QueryEscape(policy)
}

// DecodeKey decodes a base64 policy key, falling back to the raw bytes.
func DecodeKey(key string) []byte {
	if b, err := base64.StdEncoding.DecodeString(key); err == nil {
		return b
	}
	return []byte(key)
}

// Sign is base64(HMAC-SHA256(key, msg)), the signature of a token whose
// string-to-sign is msg.
func Sign(key []byte, msg string) string {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(msg))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}
