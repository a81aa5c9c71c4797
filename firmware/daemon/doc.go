// Package daemon assembles the tracker daemon (`tracker run`) from its
// parts, so that main only parses flags and wires: the device identity and
// trust roots (provisioning/certs), the on-disk queue (firmware/queue), the
// sensors (drivers/choose), the sampling and store-and-forward loop
// (firmware/agent), the provisioning lifecycle (firmware/lifecycle around an
// IoT Hub client from provisioning/iothub) and systemd's notify protocol
// (firmware/health).
//
// Order of start-up, and why:
//
//  1. Identity: the certificate chain and key are checked before anything
//     else; a refusal (bad permissions, wrong chain, key mismatch) is final
//     and Run returns an error wrapping ErrIdentity (exit 78 in main).
//  2. Queue and sensors: local only. Sampling starts at once, so a tracker
//     at sea queues readings without ever having reached the hub. While the
//     wall clock is below lifecycle.ClockFloor the agent holds readings in
//     memory and queues them with their true time once it is set (see
//     firmware/agent); STATUS= says "waiting for the clock; N samples held".
//  3. READY=1 on the first hub connection or after Config.ReadyWait,
//     whichever comes first: systemd learns we are up without the start-up
//     timeout depending on the network.
//  4. The clock: no TLS before it is plausible (lifecycle.WaitForClock).
//  5. The lifecycle: cached hub or DPS, reconnects, refusals and retries.
//     Each hub session feeds the agent: SetConnected from the client's state
//     changes, the twin GET and desired patches, reported properties, and
//     the getStatus and sendNow direct methods.
//
// On cancellation (SIGTERM) Run sends STOPPING=1, stops sampling, lets the
// agent flush what it can within its bound while the hub session is still
// up, then closes the session, the sensors and the queue.
package daemon
