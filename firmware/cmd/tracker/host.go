package main

// The Linux i2c-dev buses (/dev/i2c-N) are the only periph host driver the
// tracker uses: the GPS is a serial port (go.bug.st/serial). So only
// periph's sysfs package is linked in (it registers its other sysfs
// drivers too), and initHost calls driverreg.Init. host.Init would also
// register every SoC and board driver periph has (bcm283x, allwinner,
// pine64, rpi, gpioioctl, netlink, ...): 0.46 MB of binary on arm64 and
// armv7, and their probing at start-up, for nothing. See bench/README.md.
import _ "periph.io/x/host/v3/sysfs"
