// Package gps reads a GNSS receiver that speaks NMEA 0183 over a serial
// port (a u-blox or MediaTek module on /dev/serial0 or a USB dongle).
//
// The byte stream is split by a bounded line reader that survives noise,
// then RMC and GGA sentences are parsed with go-nmea and merged into one
// Fix. "No fix" is reported as no fix, never as latitude 0, longitude 0,
// and a fix older than Options.MaxAge is withheld. Receiver.Run reopens
// the port with capped exponential backoff when it disappears, so an
// unplugged USB receiver comes back by itself.
package gps
