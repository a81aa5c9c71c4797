#!/bin/sh
# prerm of the tracker package: stop the service when the package is
# removed. On an upgrade it keeps running until postinst restarts it, so no
# reading is missed while dpkg unpacks.
set -e

if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
	deb-systemd-invoke stop tracker.service >/dev/null || true
fi
exit 0
