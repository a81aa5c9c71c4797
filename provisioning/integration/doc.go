// Package integration holds end-to-end tests of the device client
// (provisioning/certs, provisioning/dps, provisioning/iothub) against the
// in-process DPS + IoT Hub emulator (deploy/emulator): real MQTT, real
// mutual TLS, real certificate files. It has no non-test code.
//
// The emulator is an independent implementation written from the same
// spec; where the two disagree the spec decides, and a test that fails
// because of the emulator is skipped with t.Skip("emulator: ...").
package integration
