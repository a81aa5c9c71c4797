// Package systemd holds the tracker's systemd unit (tracker.service), its
// EnvironmentFile (tracker.defaults, installed as /etc/default/tracker) and
// its sysusers.d entry (tracker.sysusers). It has no Go API: its tests check
// the unit with systemd-analyze and against the firmware's contract (exit
// code 78 for a bad config, sd_notify readiness and watchdog).
package systemd
