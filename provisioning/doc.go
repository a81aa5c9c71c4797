// Package provisioning is the device side of Azure IoT: the X.509 identity
// (provisioning/certs), DPS registration (provisioning/dps) and the IoT Hub
// MQTT client (provisioning/iothub). None of it imports drivers or firmware.
package provisioning
