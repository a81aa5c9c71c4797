package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
)

const (
	name       = "tracker"
	maintainer = "Container tracker maintainers <tracker@reefer.invalid>"
	homepage   = "https://github.com/reefer/tracker"
)

type options struct {
	root, binary, helpBinary, goarch, goarm, describe, version, out string
}

// build writes dist/tracker_<version>_<arch>.deb and returns its path.
func build(o options) (string, error) {
	arch, err := debianArch(o.goarch, o.goarm)
	if err != nil {
		return "", err
	}
	when := commitTime(o.root)
	if when.IsZero() {
		when = time.Now().UTC()
	}
	version := o.version
	if version == "" {
		if version, err = debianVersion(o.describe, commitTime(o.root)); err != nil {
			return "", err
		}
	}
	if o.helpBinary == "" {
		o.helpBinary = o.binary
	}

	// Generated files: the man page and the changelog, gzipped as policy
	// wants, in a temp dir that nfpm reads from.
	tmp, err := os.MkdirTemp("", "tracker-deb-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	man, err := manPage(execHelp(o.helpBinary), version, when)
	if err != nil {
		return "", fmt.Errorf("man page: %w", err)
	}
	manGz, changelogGz := filepath.Join(tmp, "tracker.1.gz"), filepath.Join(tmp, "changelog.gz")
	if err := writeGzip(manGz, man); err != nil {
		return "", err
	}
	if err := writeGzip(changelogGz, changelog(version, o.describe, when)); err != nil {
		return "", err
	}

	src := func(p string) string { return filepath.Join(o.root, p) }
	file := func(from, to string, mode os.FileMode) *files.Content {
		return &files.Content{Source: from, Destination: to, FileInfo: &files.ContentFileInfo{Mode: mode, MTime: when}}
	}
	contents := files.Contents{
		file(o.binary, "/usr/bin/tracker", 0o755),
		file(src("systemd/tracker.service"), "/lib/systemd/system/tracker.service", 0o644),
		file(src("systemd/tracker.sysusers"), "/usr/lib/sysusers.d/tracker.conf", 0o644),
		file(manGz, "/usr/share/man/man1/tracker.1.gz", 0o644),
		file(src("firmware/config/example.json"), "/usr/share/doc/tracker/examples/tracker.json", 0o644),
		file(src("README.md"), "/usr/share/doc/tracker/README.md", 0o644),
		file(src("deploy/deb/copyright"), "/usr/share/doc/tracker/copyright", 0o644),
		file(changelogGz, "/usr/share/doc/tracker/changelog.gz", 0o644),
		file(src("deploy/deb/lintian-overrides"), "/usr/share/lintian/overrides/tracker", 0o644),
	}
	defaults := file(src("systemd/tracker.defaults"), "/etc/default/tracker", 0o644)
	defaults.Type = files.TypeConfigNoReplace // a conffile: dpkg keeps local edits
	contents = append(contents, defaults)

	info := nfpm.WithDefaults(&nfpm.Info{
		Name:          name,
		Arch:          arch,
		Platform:      "linux",
		Version:       version,
		VersionSchema: "none",
		Section:       "misc",
		Priority:      "optional",
		Maintainer:    maintainer,
		Homepage:      homepage,
		License:       "Apache-2.0",
		MTime:         when,
		Description: `container tracker firmware: BME280 and GPS telemetry to Azure IoT Hub
 The firmware of a refrigerated shipping-container tracker on a Raspberry
 Pi-class board. It reads a BME280 (temperature, pressure, humidity) over
 I2C and a GPS over serial, provisions itself through the Azure IoT Hub
 Device Provisioning Service with an X.509 certificate, and streams
 telemetry to IoT Hub over MQTT, keeping unsent readings in an on-disk
 queue. It runs as the systemd service tracker.service once
 /etc/tracker/tracker.json and the device identity are in place.`,
		Overridables: nfpm.Overridables{
			// systemd-sysusers, deb-systemd-helper and deb-systemd-invoke
			// in the maintainer scripts.
			Depends:  []string{"systemd | systemd-standalone-sysusers", "init-system-helpers (>= 1.54~)"},
			Contents: contents,
			Scripts: nfpm.Scripts{
				PostInstall: src("deploy/deb/postinst.sh"),
				PreRemove:   src("deploy/deb/prerm.sh"),
				PostRemove:  src("deploy/deb/postrm.sh"),
			},
			Deb: nfpm.Deb{Arch: arch, Compression: "xz"},
		},
	})
	if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
		return "", fmt.Errorf("nfpm: %w", err)
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(o.out, fmt.Sprintf("%s_%s_%s.deb", name, version, arch))
	var buf bytes.Buffer
	if err := deb.Default.Package(info, &buf); err != nil {
		return "", fmt.Errorf("nfpm deb: %w", err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return "", err
	}
	return path, nil
}

// changelog is the one-entry Debian changelog of a native package built
// from a git checkout.
func changelog(version, describe string, when time.Time) []byte {
	what := "Build of " + describe + "."
	if describe == "" {
		what = "Build " + version + "."
	}
	return fmt.Appendf(nil, "%s (%s) unstable; urgency=medium\n\n  * %s\n\n -- %s  %s\n",
		name, version, what, maintainer, when.Format("Mon, 02 Jan 2006 15:04:05 -0700"))
}

// writeGzip writes data gzipped at the best level without a name or time
// in the header (gzip -9n, as policy asks), so the same input gives the
// same bytes.
func writeGzip(path string, data []byte) error {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return err
	}
	if _, err := zw.Write(data); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}
