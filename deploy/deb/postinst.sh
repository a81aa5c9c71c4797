#!/bin/sh
# postinst of the tracker package (installed by dpkg as DEBIAN/postinst).
# Creates the tracker user and the directories tracker.service expects,
# enables the unit and (re)starts it. On a fresh install with no config the
# unit's ConditionPathExists= skips the start, so nothing crash-loops;
# `tracker doctor` says what is missing.
set -e

case "$1" in
configure | abort-upgrade | abort-deconfigure | abort-remove)
	# The user and its groups (i2c, dialout) from /usr/lib/sysusers.d.
	systemd-sysusers ${DPKG_ROOT:+--root="$DPKG_ROOT"} tracker.conf
	# The modes the unit expects: ConfigurationDirectoryMode=0750 (the key
	# inside is read by the tracker group only), StateDirectoryMode=0700.
	install -d -m 0750 -o root -g tracker /etc/tracker
	install -d -m 0700 -o tracker -g tracker /var/lib/tracker

	# Removes only a mask set by postrm on removal.
	deb-systemd-helper unmask tracker.service >/dev/null || true
	if deb-systemd-helper --quiet was-enabled tracker.service; then
		deb-systemd-helper enable tracker.service >/dev/null || true
	else
		# The admin disabled it: keep it so, but track its symlinks.
		deb-systemd-helper update-state tracker.service >/dev/null || true
	fi
	if [ -d /run/systemd/system ]; then
		systemctl --system daemon-reload >/dev/null || true
		# An upgrade ($2 is the old version) restarts the running tracker
		# with the new binary; config, cached hub and queue stay put.
		if [ -n "$2" ]; then action=restart; else action=start; fi
		deb-systemd-invoke "$action" tracker.service >/dev/null || true
	fi
	;;
esac
exit 0
