// Package doctor checks a tracker for a field technician: configuration,
// device certificate and key, clock, sensors, DPS and IoT Hub reachability,
// the cached DPS assignment and the offline queue. Each check yields one
// line, OK, WARN or FAIL, and for anything not OK a fix a stranger can
// follow.
//
// Every check is a small function of its inputs (paths, a clock, a
// resolver, a dialer, a sensor reading), so tests drive them without
// hardware or Azure. Run strings them together in a fixed order; `tracker
// doctor` prints the Report, and the agent's getStatus method can embed one
// run with the slow checks (sensors, network) skipped.
//
// Doctor never registers with DPS (registrations are billable, docs/protocol.md F) and
// never takes over the hub connection of a running tracker (docs/protocol.md B.7).
package doctor
