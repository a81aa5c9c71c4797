package sas

import (
	"net/url"
	"strings"
	"testing"
	"time"
)

// The string-to-sign and the encoding of every field, checked against a
// signature computed independently with openssl:
//
//	printf 'hub.example.net\n1700000000' | openssl dgst -sha256 -mac HMAC -macopt hexkey:6b6579 -binary | base64
func TestToken(t *testing.T) {
	got := Token("hub.example.net", "iothubowner", "a2V5", time.Unix(1700000000, 0)) // key "key"
	const sig = "O4+PTNJpE6yal4xKLKa+tWF81Puw4LygjQ6YKrqXbp0="
	want := "SharedAccessSignature sr=hub.example.net&sig=" + url.QueryEscape(sig) + "&se=1700000000&skn=iothubowner"
	if got != want {
		t.Fatalf("Token = %q\nwant    %q", got, want)
	}
	// A path is part of sr and URL-encoded.
	if tok := Token("dps.example.net/enrollments", "p", "a2V5", time.Unix(1, 0)); !strings.Contains(tok, "sr=dps.example.net%2Fenrollments&") {
		t.Errorf("sr not URL-encoded: %s", tok)
	}
}

func TestDecodeKeyFallsBackToRawBytes(t *testing.T) {
	if string(DecodeKey("a2V5")) != "key" || string(DecodeKey("not base64!")) != "not base64!" {
		t.Fatal("DecodeKey")
	}
}
