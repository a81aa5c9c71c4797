// Package simulated provides devices that behave like the real ones when the
// hardware is absent: models with state that evolves with time, not replays.
//
// Every reading a simulator produces carries drivers.Simulated as its Source,
// so simulated data can never pass as real. Simulators are deterministic for
// a given seed and sequence of clock values, so tests can pin their output.
package simulated
