// Package choose picks the driver behind each sensor from the configured
// drivers.Mode: real hardware, the simulator, or hardware with a simulator
// fallback ("auto"). It is the one place that decides, so that main and the
// agent only ever see the drivers interfaces.
//
// A fallback to the simulator is always logged at WARN with the reason, and
// simulated readings say so in their Source.
package choose
