package dps

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/reefer/tracker/provisioning/internal/restopic"
)

// APIVersion is the DPS api-version the SDKs put in the MQTT user name (docs/protocol.md A.1).
const APIVersion = "2019-03-31"

// APIVersionCSR is the first api-version whose register request takes a
// csr and whose result carries issuedCertificateChain (docs/protocol.md
// A.5). It is used only for registrations that ask for a certificate.
const APIVersionCSR = "2025-07-01-preview"

const (
	// docs/protocol.md A.2: subscribe to this filter before publishing anything.
	responseFilter = "$dps/registrations/res/#"
	responsePrefix = "$dps/registrations/res/"
	registerPrefix = "$dps/registrations/PUT/iotdps-register/?$rid="
	pollPrefix     = "$dps/registrations/GET/iotdps-get-operationstatus/?$rid="
)

// Username is the MQTT user name for DPS (docs/protocol.md A.1). Unlike IoT Hub there is
// no "?" before api-version.
func Username(idScope, registrationID string) string {
	return usernameFor(idScope, registrationID, APIVersion)
}

// UsernameCSR is the user name of a registration that sends a csr
// (docs/protocol.md A.5): only the api-version differs.
func UsernameCSR(idScope, registrationID string) string {
	return usernameFor(idScope, registrationID, APIVersionCSR)
}

func usernameFor(idScope, registrationID, apiVersion string) string {
	return idScope + "/registrations/" + registrationID + "/api-version=" + apiVersion
}

// RegisterTopic is the topic of the register request (docs/protocol.md A.2).
func RegisterTopic(rid string) string {
	return registerPrefix + restopic.Escape(rid)
}

// PollTopic is the topic of an operation-status poll (docs/protocol.md A.2). The
// operation id comes from DPS; escaping keeps it one value of the query and
// free of MQTT wildcards whatever it holds.
func PollTopic(rid, operationID string) string {
	return pollPrefix + restopic.Escape(rid) + "&operationId=" + restopic.Escape(operationID)
}

// response is one message received on $dps/registrations/res/...
type response struct {
	Status     int
	RID        string
	RetryAfter time.Duration
	Body       []byte
}

// parseResponseTopic splits a response topic the way the C SDK does
// (docs/protocol.md A.2): the status is the integer between "res/" and the next "/",
// and retry-after is optional, defaulting to 0.
func parseResponseTopic(topic string) (response, error) {
	status, vals, err := restopic.Parse(topic, responsePrefix, "DPS response")
	if err != nil {
		return response{}, err
	}
	r := response{Status: status, RID: vals.Get("$rid")}
	if ra := vals.Get("retry-after"); ra != "" {
		secs, err := strconv.Atoi(ra)
		if err != nil || secs < 0 {
			return r, fmt.Errorf("topic %q: bad retry-after %q", topic, ra)
		}
		r.RetryAfter = time.Duration(secs) * time.Second
	}
	return r, nil
}

// registerBody is the JSON body of the register request (docs/protocol.md
// A.3); a csr (DER) goes as base64 DER without PEM armour (A.5).
func registerBody(registrationID string, payload json.RawMessage, csr []byte) ([]byte, error) {
	req := struct {
		RegistrationID string          `json:"registrationId"`
		CSR            string          `json:"csr,omitempty"`
		Payload        json.RawMessage `json:"payload,omitempty"`
	}{RegistrationID: registrationID, Payload: payload}
	if len(csr) > 0 {
		req.CSR = base64.StdEncoding.EncodeToString(csr)
	}
	return json.Marshal(req)
}

// operationStatus is RegistrationOperationStatus (docs/protocol.md A.4).
type operationStatus struct {
	OperationID       string          `json:"operationId"`
	Status            string          `json:"status"`
	RegistrationState json.RawMessage `json:"registrationState"`
}

// registrationState is the part of DeviceRegistrationState the device needs.
type registrationState struct {
	RegistrationID string `json:"registrationId"`
	AssignedHub    string `json:"assignedHub"`
	DeviceID       string `json:"deviceId"`
	Status         string `json:"status"`
	Substatus      string `json:"substatus"`
	ErrorCode      int    `json:"errorCode"`
	ErrorMessage   string `json:"errorMessage"`
	// IssuedCertificateChain answers a csr: base64 DER certificates, the
	// issued leaf first, then each issuer (docs/protocol.md A.5).
	IssuedCertificateChain []string `json:"issuedCertificateChain"`
}

// errorDetails is ProvisioningServiceErrorDetails (docs/protocol.md A.4).
type errorDetails struct {
	ErrorCode  int    `json:"errorCode"`
	TrackingID string `json:"trackingId"`
	Message    string `json:"message"`
}

// Terminal and intermediate statuses (docs/protocol.md A.4).
const (
	statusAssigned   = "assigned"
	statusAssigning  = "assigning"
	statusUnassigned = "unassigned"
	statusFailed     = "failed"
	statusDisabled   = "disabled"
)

// outcome is what one 200/202 response tells the registration loop.
type outcome struct {
	Done        bool    // terminal: Result or Err is set
	Result      *Result // set when assigned
	OperationID string  // for the next poll when !Done
}

// interpretOperation reads a 200 or 202 body. op names the request ("register"
// or "poll") for error context.
func interpretOperation(op string, r response) (outcome, error) {
	malformed := func(format string, args ...any) error {
		return &Error{Kind: ErrMalformed, Op: op, Status: r.Status, Message: fmt.Sprintf(format, args...)}
	}
	var st operationStatus
	if err := json.Unmarshal(r.Body, &st); err != nil {
		return outcome{}, malformed("body: %v", err)
	}
	var rs registrationState
	if len(st.RegistrationState) > 0 && string(st.RegistrationState) != "null" {
		if err := json.Unmarshal(st.RegistrationState, &rs); err != nil {
			return outcome{}, malformed("registrationState: %v", err)
		}
	}
	status := st.Status
	if status == "" {
		status = rs.Status
	}
	// docs/protocol.md A.4: a successful parse needs both assignedHub and deviceId, or neither.
	if (rs.AssignedHub == "") != (rs.DeviceID == "") {
		return outcome{}, malformed("assignedHub %q and deviceId %q must come together", rs.AssignedHub, rs.DeviceID)
	}
	switch status {
	case statusAssigned:
		if rs.AssignedHub == "" {
			return outcome{}, malformed("status assigned without assignedHub/deviceId")
		}
		// The hub client could never use this id; registering again beats
		// retrying a connection that cannot start.
		if err := restopic.CheckDeviceID(rs.DeviceID); err != nil {
			return outcome{}, malformed("assigned %v", err)
		}
		chain := make([][]byte, len(rs.IssuedCertificateChain))
		for i, c := range rs.IssuedCertificateChain {
			der, err := base64.StdEncoding.DecodeString(c)
			if err != nil || len(der) == 0 {
				return outcome{}, malformed("issuedCertificateChain[%d] is not base64 DER", i)
			}
			chain[i] = der
		}
		return outcome{Done: true, Result: &Result{
			IssuedCertificateChain: chain,
			AssignedHub:            rs.AssignedHub,
			DeviceID:               rs.DeviceID,
			Status:                 status,
			Substatus:              rs.Substatus,
			OperationID:            st.OperationID,
			RegistrationState:      st.RegistrationState,
		}}, nil
	case statusDisabled:
		return outcome{Done: true}, &Error{Kind: ErrDisabled, Op: op, Status: r.Status,
			ErrorCode: rs.ErrorCode, Message: rs.ErrorMessage}
	case statusFailed:
		return outcome{Done: true}, &Error{Kind: ErrFailed, Op: op, Status: r.Status,
			ErrorCode: rs.ErrorCode, Message: rs.ErrorMessage}
	case statusAssigning, statusUnassigned:
		// docs/protocol.md A.2/A.4: keep polling with the operationId; it is required.
		if st.OperationID == "" {
			return outcome{}, malformed("status %q without operationId", status)
		}
		return outcome{OperationID: st.OperationID}, nil
	case "":
		return outcome{}, malformed("no status")
	default:
		return outcome{}, malformed("unknown status %q", status)
	}
}

// classifyStatus turns a non-200/202 response into a typed error (docs/protocol.md A.4
// status table). The body is ProvisioningServiceErrorDetails when present;
// an unreadable body does not hide the status.
func classifyStatus(op string, r response) error {
	e := &Error{Op: op, Status: r.Status, RetryAfter: r.RetryAfter}
	var d errorDetails
	if len(r.Body) > 0 && json.Unmarshal(r.Body, &d) == nil {
		e.ErrorCode, e.Message, e.TrackingID = d.ErrorCode, d.Message, d.TrackingID
	}
	switch s := r.Status; {
	case s == 401 || s == 403:
		e.Kind = ErrUnauthorized
	case s == 404:
		e.Kind = ErrNotFound
	case s == 429:
		e.Kind = ErrThrottled
	case s >= 500:
		e.Kind = ErrTransient
	case s >= 400:
		e.Kind = ErrBadRequest
	default:
		e.Kind = ErrMalformed
		e.Message = fmt.Sprintf("unexpected status %d", s)
	}
	return e
}
