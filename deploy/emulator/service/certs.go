package service

import (
	"net/http"
	"strings"

	"github.com/reefer/tracker/deploy/emulator/store"
)

// certRoutes registers CA certificate management, modelled on ARM's
// .../certificates/{name} resources but relative to the service host. On
// the DPS host the owner is the DPS (docs/protocol.md C "Group enrollment from a CA");
// on a hub host it is that hub.
func (s *Service) certRoutes(t *target) {
	owner := store.DPSOwner
	if t.kind == kindHub {
		owner = t.host
	}
	c := &certAPI{s: s, owner: owner}
	// CA certificates are ARM resources in Azure, managed by the
	// subscription rather than by a data-plane policy. The emulator asks
	// for the owner's rights: ServiceConfig on the DPS (its service
	// configuration), every right on a hub (iothubowner).
	p := ServiceConfig
	if t.kind == kindHub {
		p = HubAll
	}
	t.mux.HandleFunc("GET /certificates", s.need(p, c.list))
	t.mux.HandleFunc("PUT /certificates/{name}", s.need(p, c.put))
	t.mux.HandleFunc("GET /certificates/{name}", s.need(p, c.get))
	t.mux.HandleFunc("DELETE /certificates/{name}", s.need(p, c.delete))
	t.mux.HandleFunc("POST /certificates/{name}/generateVerificationCode", s.need(p, c.generateCode))
	t.mux.HandleFunc("POST /certificates/{name}/verify", s.need(p, c.verify))
}

type certAPI struct {
	s     *Service
	owner string
}

// certBody is ARM's CertificateBodyDescription / VerificationCodeRequest,
// accepted at the top level or under "properties".
type certBody struct {
	Certificate string `json:"certificate"`
	IsVerified  *bool  `json:"isVerified"`
	Properties  *struct {
		Certificate string `json:"certificate"`
		IsVerified  *bool  `json:"isVerified"`
	} `json:"properties"`
}

// readCert returns the certificate text (PEM, or base64 DER as the az CLI
// sends) and the isVerified flag from a JSON body or a bare PEM body.
func readCert(r *http.Request) (string, bool, error) {
	b, err := readBody(r)
	if err != nil {
		return "", false, err
	}
	verified := strings.EqualFold(r.URL.Query().Get("isVerified"), "true")
	text := strings.TrimSpace(string(b))
	if strings.HasPrefix(text, "-----BEGIN") {
		return text, verified, nil
	}
	if text == "" {
		return "", false, store.ErrInvalid.With("request body is empty")
	}
	var cb certBody
	if err := jsonUnmarshal(b, &cb); err != nil {
		return "", false, err
	}
	cert, v := cb.Certificate, cb.IsVerified
	if cb.Properties != nil {
		if cert == "" {
			cert = cb.Properties.Certificate
		}
		if v == nil {
			v = cb.Properties.IsVerified
		}
	}
	if v != nil {
		verified = *v
	}
	if cert == "" {
		return "", false, store.ErrInvalid.With("certificate is required")
	}
	return cert, verified, nil
}

func (c *certAPI) put(w http.ResponseWriter, r *http.Request) {
	cert, verified, err := readCert(r)
	if err != nil {
		c.s.fail(w, r, err)
		return
	}
	out, err := c.s.st.PutCACertificate(c.owner, r.PathValue("name"), cert, verified, r.Header.Get("If-Match"))
	c.s.reply(w, r, out, out.ETag, err)
}

func (c *certAPI) list(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"value": c.s.st.ListCACertificates(c.owner)})
}

func (c *certAPI) get(w http.ResponseWriter, r *http.Request) {
	out, err := c.s.st.GetCACertificate(c.owner, r.PathValue("name"))
	c.s.reply(w, r, out, out.ETag, err)
}

func (c *certAPI) delete(w http.ResponseWriter, r *http.Request) {
	c.s.replyDeleted(w, r, c.s.st.DeleteCACertificate(c.owner, r.PathValue("name"), r.Header.Get("If-Match")))
}

// generateCode issues the proof-of-possession code (docs/protocol.md C, step 1); it is
// in properties.verificationCode of the answer.
func (c *certAPI) generateCode(w http.ResponseWriter, r *http.Request) {
	out, err := c.s.st.GenerateVerificationCode(c.owner, r.PathValue("name"), r.Header.Get("If-Match"))
	c.s.reply(w, r, out, out.ETag, err)
}

// verify takes the proof certificate (CN = code, signed by the CA key) and
// marks the CA verified (docs/protocol.md C, steps 2-3).
func (c *certAPI) verify(w http.ResponseWriter, r *http.Request) {
	cert, _, err := readCert(r)
	if err != nil {
		c.s.fail(w, r, err)
		return
	}
	out, err := c.s.st.VerifyCACertificate(c.owner, r.PathValue("name"), cert, r.Header.Get("If-Match"))
	c.s.reply(w, r, out, out.ETag, err)
}
