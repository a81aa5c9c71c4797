package gps

import (
	"fmt"
	"io"

	"go.bug.st/serial"
)

// DefaultBaud is the NMEA 0183 standard rate most modules ship with.
const DefaultBaud = 9600

// OpenSerial opens a serial port at baud (DefaultBaud if 0), 8N1, raw.
// Errors name the port.
func OpenSerial(path string, baud int) (io.ReadCloser, error) {
	if baud <= 0 {
		baud = DefaultBaud
	}
	p, err := serial.Open(path, &serial.Mode{
		BaudRate: baud,
		DataBits: 8,
		Parity:   serial.NoParity,
		StopBits: serial.OneStopBit,
	})
	if err != nil {
		return nil, fmt.Errorf("open serial port %s at %d baud: %w", path, baud, err)
	}
	return p, nil
}
