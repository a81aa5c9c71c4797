//go:build !linux

package doctor

import "errors"

// SystemClockSynced is only known on Linux.
func SystemClockSynced() (bool, error) {
	return false, errors.New("not supported on this OS")
}
