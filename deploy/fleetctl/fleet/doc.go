// Package fleet is the operator's side of the reference flow built from
// the DPS and IoT Hub service calls of azrest: enrollment groups,
// disenrolling and re-enrolling trackers one at a time or a whole port
// call at once (DPS bulk operations, at most 10 enrollments each, run a
// few at a time), and the cleanup after a trip (registration records, hub
// identities). fleetctl's commands and the demo call it; it knows nothing
// of flags or output formats.
package fleet
