// Package systemdtest proves the tracker's Debian package under a live
// systemd: `make test-systemd` builds the package, and TestSystemd boots a
// Debian 12 rootfs (mmdebstrap, cached in .cache/systemd-test) with
// `systemd-nspawn --boot`, installs the package with dpkg and drives the
// tracker against the emulator on the host's loopback (nspawn shares the
// host network). It needs root, systemd-nspawn and mmdebstrap, and skips
// saying which is missing; without TRACKER_SYSTEMD_TEST=1 it skips too, so
// `make test` does not boot containers.
package systemdtest
