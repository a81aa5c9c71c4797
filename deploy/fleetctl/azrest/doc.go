// Package azrest is a client of the SAS-authenticated data-plane REST APIs
// that Azure and the local emulator (azemu) share: the DPS service API
// (enrollment groups, individual enrollments and their bulk operation,
// registration records; docs/protocol.md D) and the IoT Hub service API (identities,
// the twin query, twins, direct methods; docs/protocol.md E). Each request carries a
// fresh service SAS token signed with the connection string's policy key.
//
// Errors from the services are *APIError, which errors.Is matches against
// ErrNotFound, ErrUnauthorized, ErrConflict, ErrPrecondition and
// ErrThrottled. Options.DryRun prints the requests that would change
// something instead of sending them.
//
// The enrollment routes use DPSEnrollmentAPIVersion (2025-07-01-preview),
// the first version with credentialPolicyName, so that reading and
// writing an enrollment back keeps its credential policy; the other DPS
// routes use DPSAPIVersion (docs/protocol.md D).
//
// Three kinds of route exist only on the emulator: CA certificates and
// credential policies on the DPS host (Azure Resource Manager and Azure
// Device Registry resources on Azure) and the telemetry stream (Event Hubs
// on Azure); on Azure they answer ErrUnsupported with what to use instead.
package azrest
