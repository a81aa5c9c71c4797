package azrest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
)

// CACertificate is a CA certificate resource as the emulator serves it,
// shaped like ARM's certificate resource.
type CACertificate struct {
	Name       string `json:"name"`
	ETag       string `json:"etag"`
	Properties struct {
		Subject          string `json:"subject"`
		Thumbprint       string `json:"thumbprint"`
		IsVerified       bool   `json:"isVerified"`
		VerificationCode string `json:"verificationCode,omitempty"`
		Expiry           string `json:"expiry,omitempty"`
	} `json:"properties"`
}

// On Azure a DPS's CA certificates are Azure Resource Manager resources
// (`az iot dps certificate`), not part of the DPS service API; the
// emulator serves them on the DPS host.
func (d *DPS) certErr(err error) error {
	return emulatorOnly(err, "CA certificates are Azure Resource Manager resources on Azure; use deploy/azure/fleet.sh (az iot dps certificate)")
}

// emulatorOnly turns the answer of a service that lacks an emulator-only
// route into ErrUnsupported saying what to use instead. The emulator's own
// 404s name what is missing with a specific errorCode; a 404 without one
// (or the generic 404000) means the route itself is not there.
func emulatorOnly(err error, instead string) error {
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusNotFound || (ae.Code != 404000 && ae.Code != 0) {
		return err
	}
	return fmt.Errorf("%w: %s. %v", ErrUnsupported, instead, err)
}

// UploadCA is PUT /certificates/{name} with the PEM (emulator; ARM on Azure).
func (d *DPS) UploadCA(ctx context.Context, name, pem string, verified bool) (CACertificate, error) {
	var c CACertificate
	err := d.c.do(ctx, request{method: http.MethodPut, path: "/certificates/" + escape(name),
		body: map[string]any{"certificate": pem, "isVerified": verified}, out: &c})
	return c, d.certErr(err)
}

// GetCA is GET /certificates/{name}.
func (d *DPS) GetCA(ctx context.Context, name string) (CACertificate, error) {
	var c CACertificate
	err := d.c.do(ctx, request{method: http.MethodGet, path: "/certificates/" + escape(name), out: &c})
	return c, d.certErr(err)
}

// VerificationCode is POST /certificates/{name}/generateVerificationCode:
// the code the proof-of-possession certificate's CN must carry (docs/protocol.md C).
func (d *DPS) VerificationCode(ctx context.Context, name string) (CACertificate, error) {
	var c CACertificate
	err := d.c.do(ctx, request{method: http.MethodPost, path: "/certificates/" + escape(name) + "/generateVerificationCode", header: ifMatch("*"), out: &c})
	return c, d.certErr(err)
}

// VerifyCA is POST /certificates/{name}/verify with the proof-of-possession
// certificate (CN = code, signed by the CA's key).
func (d *DPS) VerifyCA(ctx context.Context, name, proofPEM string) (CACertificate, error) {
	var c CACertificate
	err := d.c.do(ctx, request{method: http.MethodPost, path: "/certificates/" + escape(name) + "/verify", header: ifMatch("*"),
		body: map[string]any{"certificate": proofPEM}, out: &c})
	return c, d.certErr(err)
}

// DeleteCA is DELETE /certificates/{name}.
func (d *DPS) DeleteCA(ctx context.Context, name string) error {
	return d.certErr(d.c.do(ctx, request{method: http.MethodDelete, path: "/certificates/" + escape(name), header: ifMatch("*")}))
}
