#!/bin/sh
# postrm of the tracker package. remove: forget the unit (the config,
# identity and queue stay, as for any removed package). purge: delete the
# tracker's state too: the queue and cached hub in /var/lib/tracker and the
# config and device identity in /etc/tracker. The tracker user stays (Debian
# practice: its uid may still own files elsewhere).
set -e

if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || true
fi
if [ "$1" = remove ] && command -v deb-systemd-helper >/dev/null; then
	deb-systemd-helper mask tracker.service >/dev/null || true
fi
if [ "$1" = purge ]; then
	if command -v deb-systemd-helper >/dev/null; then
		deb-systemd-helper purge tracker.service >/dev/null || true
		deb-systemd-helper unmask tracker.service >/dev/null || true
	fi
	rm -rf /var/lib/tracker /etc/tracker
fi
exit 0
