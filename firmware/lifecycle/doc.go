// Package lifecycle is the provisioning lifecycle of a tracker, independent
// of telemetry: wait for a plausible clock before any TLS, find the hub
// (cached assignment or a DPS registration), connect, and when the hub or
// DPS refuses the device, go back to DPS and keep retrying on a schedule that
// suits the reason, so that a tracker disenrolled after one trip provisions
// again by itself when it is re-enrolled for the next (reference flow steps 7–9).
//
// The pieces:
//
//   - WaitForClock and ClockFloor: a board without a battery-backed clock
//     boots in the past; waiting here gives one clear log line instead of a
//     confusing TLS "certificate not yet valid" error. The same floor tells
//     the telemetry agent which sample timestamps to believe.
//   - Provisioner.Assignment: the cached hub when it belongs to the current
//     certificate, otherwise a DPS registration saved atomically.
//   - Provisioner.Run: the daemon's loop around a Connector (an IoT Hub
//     client in production, a fake in tests), publishing a Status for
//     systemd STATUS= lines, reported properties and `tracker doctor`.
//
// Retry policy, by cause:
//
//   - IoT Hub refuses the device (iothub.ErrNotAuthorized: identity deleted
//     or disabled, certificate changed; docs/protocol.md B.7): drop the cache and
//     register with DPS again at once, as the Azure SDKs advise. If a fresh
//     DPS assignment is refused again, DPS cannot help (the identity is
//     disabled in the hub): wait on the long schedule.
//   - DPS answers "disabled" or refuses the certificate (dps.ErrDisabled,
//     dps.ErrUnauthorized; docs/protocol.md A.4, C): an operator must act; log what it
//     means and retry on the long jittered schedule (config
//     reprovisionRetry, minutes to an hour), never giving up.
//   - Throttling (honouring retry-after) and network or server failures:
//     capped exponential back-off with full jitter.
//   - The assigned hub unreachable (not refusing) for Config.HubGiveUp:
//     ask DPS again, in case the device was moved or its hub deleted.
package lifecycle
