// Package certs holds the operator's OpenSSL scripts for the test PKI
// (ca.sh, device.sh, verification.sh; see README.md). The Go package has no
// code of its own: it exists so that `go test` runs the scripts and checks
// what they produce with openssl and crypto/x509.
package certs
