// Package deps pins the module's direct dependencies while the packages that
// use them are being written on parallel branches, so that `go mod tidy` on
// any branch leaves go.mod alone. Delete it once every module is imported by
// real code.
package deps

import (
	_ "github.com/adrianmo/go-nmea"
	_ "github.com/coreos/go-systemd/v22/daemon"
	_ "github.com/creack/pty"
	_ "github.com/eclipse/paho.mqtt.golang"
	_ "github.com/mochi-mqtt/server/v2"
	_ "github.com/mochi-mqtt/server/v2/hooks/auth"
	_ "github.com/mochi-mqtt/server/v2/listeners"
	_ "go.bug.st/serial"
	_ "go.etcd.io/bbolt"
	_ "periph.io/x/conn/v3/i2c/i2creg"
	_ "periph.io/x/conn/v3/i2c/i2ctest"
	_ "periph.io/x/devices/v3/bmxx80"
	_ "periph.io/x/host/v3"
)
