// Package firmware is the root of the tracker firmware: the tracker command
// lives in firmware/cmd/tracker and the daemon's parts in the packages below.
package firmware
