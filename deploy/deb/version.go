package main

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// describeRE splits `git describe --tags --always --dirty`: a tag with the
// commits since it, or only an abbreviated hash when there is no tag.
var describeRE = regexp.MustCompile(`^(?:v?(\d+\.[0-9A-Za-z.+-]*?)-(\d+)-g([0-9a-f]+)|v?(\d+\.[0-9A-Za-z.+-]*?)|([0-9a-f]{7,40}))(-dirty)?$`)

// debianVersion maps a git description to a Debian version (a native
// package: no Debian revision, so no '-') that sorts the way the commits do:
//
//	v1.2.0                 1.2.0
//	v1.2.0-rc1             1.2.0~rc1            (before 1.2.0)
//	v1.2.0-3-g2feb77c      1.2.0+git3.2feb77c   (after 1.2.0, before 1.2.1)
//	2feb77c (no tag)       0~git20261203171310.2feb77c (commit time orders untagged builds)
//
// A dirty tree adds "+dirty".
func debianVersion(describe string, commitTime time.Time) (string, error) {
	m := describeRE.FindStringSubmatch(strings.TrimSpace(describe))
	if m == nil {
		return "", fmt.Errorf("git describe %q: want vX.Y.Z[-N-gHASH][-dirty] or a commit hash", describe)
	}
	var v string
	switch {
	case m[1] != "":
		v = upstream(m[1]) + "+git" + m[2] + "." + m[3]
	case m[4] != "":
		v = upstream(m[4])
	default:
		if commitTime.IsZero() {
			return "", fmt.Errorf("git describe %q has no tag: the commit time is needed to order the version", describe)
		}
		v = "0~git" + commitTime.UTC().Format("20060102150405") + "." + m[5]
	}
	if m[6] != "" {
		v += "+dirty"
	}
	return v, nil
}

// upstream turns a tag into a Debian upstream version: a '-' (pre-release,
// as in 1.2.0-rc1) becomes '~' so that it sorts before the release.
func upstream(tag string) string { return strings.ReplaceAll(tag, "-", "~") }

// debianArch maps GOARCH (and GOARM) to the Debian architecture.
func debianArch(goarch, goarm string) (string, error) {
	switch goarch {
	case "amd64", "arm64", "riscv64":
		return goarch, nil
	case "386":
		return "i386", nil
	case "arm":
		switch goarm {
		case "7", "6":
			return "armhf", nil // Raspberry Pi OS 32-bit
		case "5":
			return "armel", nil
		}
		return "", fmt.Errorf("GOARM=%q: want 5, 6 or 7", goarm)
	}
	return "", fmt.Errorf("GOARCH=%q: no Debian architecture known for it", goarch)
}
