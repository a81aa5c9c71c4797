// Package buildinfo says which firmware a binary is: the version the
// Makefile stamps in, or else what the Go toolchain records in every build
// (module version, VCS revision and time, dirty tree), plus the Go version
// and platform. A plain `go build` is therefore identifiable in a log line
// or a twin, never just "dev".
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"time"
)

// Info describes one build.
type Info struct {
	// Version is the stamped version, else the module version the
	// toolchain derived from VCS, else "devel".
	Version string
	// Revision is the VCS commit, empty when built outside a checkout.
	Revision string
	// Time is the commit time (vcs.time), zero when unknown.
	Time time.Time
	// Modified is true when the working tree had uncommitted changes.
	Modified bool
	// GoVersion is the toolchain, e.g. go1.26.8.
	GoVersion string
	// Platform is GOOS/GOARCH (with GOARM on arm), e.g. linux/arm64.
	Platform string
}

// Read returns the running binary's build info; stamped is the version
// given with -ldflags -X (empty when none was).
func Read(stamped string) Info {
	bi, _ := debug.ReadBuildInfo()
	return FromBuildInfo(stamped, bi)
}

// FromBuildInfo is Read for a given debug.BuildInfo (nil when the binary
// carries none).
func FromBuildInfo(stamped string, bi *debug.BuildInfo) Info {
	i := Info{Version: stamped, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi == nil {
		if i.Version == "" {
			i.Version = "devel"
		}
		return i
	}
	if bi.GoVersion != "" {
		i.GoVersion = bi.GoVersion
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			i.Revision = s.Value
		case "vcs.time":
			if t, err := time.Parse(time.RFC3339, s.Value); err == nil {
				i.Time = t
			}
		case "vcs.modified":
			i.Modified = s.Value == "true"
		case "GOARM":
			i.Platform += "/v" + s.Value
		}
	}
	if i.Version == "" {
		i.Version = bi.Main.Version
	}
	if i.Version == "" || i.Version == "(devel)" {
		i.Version = "devel"
	}
	return i
}

// ShortRevision is the first 12 hex digits of the revision.
func (i Info) ShortRevision() string {
	if len(i.Revision) > 12 {
		return i.Revision[:12]
	}
	return i.Revision
}

// String is one line: "v1.2.0 (revision 2feb77c1a2b3, modified, 2026-12-03T17:13:10Z, go1.26.8 linux/arm64)".
func (i Info) String() string {
	var parts []string
	if i.Revision != "" {
		parts = append(parts, "revision "+i.ShortRevision())
	} else {
		parts = append(parts, "no VCS revision")
	}
	if i.Modified {
		parts = append(parts, "modified")
	}
	if !i.Time.IsZero() {
		parts = append(parts, i.Time.UTC().Format(time.RFC3339))
	}
	parts = append(parts, i.GoVersion+" "+i.Platform)
	return fmt.Sprintf("%s (%s)", i.Version, strings.Join(parts, ", "))
}
