// Package deploy holds what runs beside the firmware: the certificate scripts
// (deploy/certs), the local DPS + IoT Hub emulator (deploy/emulator) and the
// Azure CLI scripts (deploy/azure).
package deploy
