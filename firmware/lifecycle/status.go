package lifecycle

import (
	"errors"
	"fmt"
	"time"

	"github.com/reefer/tracker/provisioning/dps"
	"github.com/reefer/tracker/provisioning/iothub"
)

// Phase is where the tracker stands in its provisioning lifecycle. The
// values are stable strings: they appear in systemd STATUS= lines, in the
// reported properties and in `tracker doctor`.
type Phase string

const (
	// PhaseStarting: nothing attempted yet.
	PhaseStarting Phase = "starting"
	// PhaseProvisioning: registering with DPS.
	PhaseProvisioning Phase = "provisioning"
	// PhaseAssigned: a hub is known (cached or fresh); connecting to it.
	PhaseAssigned Phase = "assigned"
	// PhaseConnected: connected to the hub.
	PhaseConnected Phase = "connected"
	// PhaseRefusedDisabled: DPS says the enrollment is disabled; an operator
	// must re-enable it. Retrying on the long schedule.
	PhaseRefusedDisabled Phase = "refused-disabled"
	// PhaseRefusedUnauthorized: DPS refused the certificate (no enrollment
	// matches), or the hub keeps refusing a freshly assigned device. Retrying
	// on the long schedule.
	PhaseRefusedUnauthorized Phase = "refused-unauthorized"
	// PhaseBackingOff: a transient failure (network, throttling, server
	// error, or a DPS answer that needs an operator); waiting to retry.
	PhaseBackingOff Phase = "backing-off"
)

// Status is a snapshot of the lifecycle. The JSON form is what the tracker
// reports (reported properties, doctor --json).
type Status struct {
	Phase Phase     `json:"phase"`
	Since time.Time `json:"since"` // when Phase began
	// Hub and DeviceID of the current assignment, if any.
	Hub      string `json:"hub,omitempty"`
	DeviceID string `json:"deviceId,omitempty"`
	// FromCache: the assignment came from the cache, not from DPS this run.
	FromCache bool `json:"fromCache,omitempty"`
	// LastError is the last failure, kept after recovery for diagnosis.
	LastError string `json:"lastError,omitempty"`
	// Advice says what the failure means for the operator, if known.
	Advice string `json:"advice,omitempty"`
	// LastProvisioned is when DPS last assigned the device (this run, or
	// from the cache).
	LastProvisioned time.Time `json:"lastProvisioned,omitzero"`
	// NextAttempt is when the next attempt is due while refused or backing off.
	NextAttempt time.Time `json:"nextAttempt,omitzero"`
	// NextRenewal is when the operational certificate is renewed next
	// (Config.Operational); RenewalError is why the last renewal failed,
	// cleared by a successful one.
	NextRenewal  time.Time `json:"nextRenewal,omitzero"`
	RenewalError string    `json:"renewalError,omitempty"`
	// Err is the last failure as an error, for errors.Is.
	Err error `json:"-"`
}

// String is a one-line summary for systemd's STATUS=.
func (s Status) String() string {
	switch s.Phase {
	case PhaseConnected:
		return fmt.Sprintf("connected to %s as %s", s.Hub, s.DeviceID)
	case PhaseAssigned:
		return fmt.Sprintf("connecting to %s as %s", s.Hub, s.DeviceID)
	case PhaseProvisioning:
		return "provisioning through DPS"
	case PhaseStarting:
		return "starting"
	}
	msg := string(s.Phase)
	if s.Advice != "" {
		msg += ": " + s.Advice
	} else if s.LastError != "" {
		msg += ": " + s.LastError
	}
	if !s.NextAttempt.IsZero() {
		msg += "; next attempt " + s.NextAttempt.UTC().Format(time.RFC3339)
	}
	return msg
}

// Operator advice for the refusals, in the words an operator acts on.
const (
	AdviceDisabled = "enrollment disabled: re-enable it or delete the disabling individual enrollment " +
		"(az iot dps enrollment / enrollment-group update --provisioning-status enabled); the tracker retries by itself"
	AdviceUnauthorized = "DPS refused the certificate: no enabled enrollment matches it (enrollment group deleted, " +
		"CA not uploaded or not verified, or the chain lacks the intermediate): create or restore an enrollment " +
		"for this device's CA or certificate; the tracker retries by itself"
	AdviceHubRefused = "IoT Hub refused the device although DPS assigned it: the device identity is disabled in the hub " +
		"(az iot hub device-identity update --status enabled) or its certificate thumbprint does not match; " +
		"the tracker retries by itself"
	AdviceFailed = "DPS registration failed (custom allocation error or a request DPS rejects): check the enrollment's " +
		"allocation policy, the ID scope and the DPS logs"
	// A 400 is most likely the certificate request (docs/protocol.md A.5):
	// the one part of the request the device adds on its own.
	AdviceBadRequest = "DPS rejected the registration request (the error says why): with certificateIssuance enabled, " +
		"the enrollment must name a credential policy (credentialPolicyName; fleetctl's --credential-policy) " +
		"or the config must turn issuance off; otherwise check the enrollment, the ID scope and the DPS logs"
)

// Explain says what a provisioning error means for the operator, or ""
// when it is transient or unknown.
func Explain(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, dps.ErrDisabled):
		return AdviceDisabled
	case errors.Is(err, dps.ErrUnauthorized):
		return AdviceUnauthorized
	case errors.Is(err, ErrHubRefused):
		return AdviceHubRefused
	case errors.Is(err, iothub.ErrNotAuthorized):
		return "IoT Hub refused the device (identity deleted or disabled, or certificate changed): registering with DPS again"
	case errors.Is(err, dps.ErrNotFound):
		return "DPS does not know this ID scope: check idScope in the config (az iot dps show --query properties.idScope)"
	case errors.Is(err, dps.ErrBadRequest):
		return AdviceBadRequest
	case errors.Is(err, dps.ErrFailed):
		return AdviceFailed
	case errors.Is(err, dps.ErrThrottled):
		return "DPS is throttling this device; waiting as it asks"
	}
	return ""
}
