// Package agenttest holds fakes for testing code built on firmware/agent:
// the manual Clock (internal/faketime's), an in-memory Queue, and a
// Publisher, Reporter, EnvSensor and Positioner whose behaviour a test
// controls.
package agenttest
