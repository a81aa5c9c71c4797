// Package store is the state layer of the local DPS + IoT Hub emulator: CA
// certificates, enrollment groups, individual enrollments and registration
// records of the Device Provisioning Service, and the device identities,
// twins, recent telemetry and cloud-to-device queues of each emulated hub.
//
// The JSON types mirror the Azure REST shapes of spec sections D and E, so a
// service API can serialise what the store returns as-is. State is kept in
// memory and written through to a data directory, one JSON file per entity,
// each written atomically (temp file, fsync, rename), so it survives a
// restart. The bounded per-device telemetry history is instead appended to
// one log per hub by a background flusher and compacted when it doubles
// (see telemetry.go); it outlives the identity, as IoT Hub retains
// messages.
//
// Protocol layers learn about changes through an [Observer] (desired-twin
// patches, identity changes, C2D enqueues) and the service API reaches
// connected devices through a [MethodInvoker]. Errors carry the Azure
// 6-digit codes (see [Error]); the HTTP status is Code/1000.
//
// Assumptions where spec section G leaves a point open are listed next to the
// code that makes them.
package store
