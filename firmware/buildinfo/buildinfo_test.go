package buildinfo

import (
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

func TestFromBuildInfo(t *testing.T) {
	t.Parallel()
	vcs := []debug.BuildSetting{
		{Key: "GOARCH", Value: "arm"}, {Key: "GOARM", Value: "7"},
		{Key: "vcs.revision", Value: "2feb77c1a2b3c4d5e6f708192a3b4c5d6e7f8091"},
		{Key: "vcs.time", Value: "2026-12-03T17:13:10Z"},
		{Key: "vcs.modified", Value: "true"},
	}
	tests := []struct {
		name    string
		stamped string
		bi      *debug.BuildInfo
		want    Info
		line    string
	}{
		{
			name: "plain go build in a checkout", bi: &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261203171310-2feb77c1a2b3+dirty"}, Settings: vcs},
			want: Info{Version: "v0.0.0-20261203171310-2feb77c1a2b3+dirty", Revision: vcs[2].Value, Time: time.Date(2026, 12, 3, 17, 13, 10, 0, time.UTC), Modified: true, GoVersion: "go1.26.8"},
			line: "v0.0.0-20261203171310-2feb77c1a2b3+dirty (revision 2feb77c1a2b3, modified, 2026-12-03T17:13:10Z, go1.26.8 ",
		},
		{
			name: "stamped by the Makefile", stamped: "v1.2.0-3-g2feb77c", bi: &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: vcs[:3]},
			want: Info{Version: "v1.2.0-3-g2feb77c", Revision: vcs[2].Value, GoVersion: "go1.26.8"},
			line: "v1.2.0-3-g2feb77c (revision 2feb77c1a2b3, go1.26.8 ",
		},
		{
			name: "outside a checkout", bi: &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}},
			want: Info{Version: "devel", GoVersion: "go1.26.8"},
			line: "devel (no VCS revision, go1.26.8 ",
		},
		{name: "no build info", want: Info{Version: "devel"}, line: "devel (no VCS revision, go"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := FromBuildInfo(tt.stamped, tt.bi)
			if got.Version != tt.want.Version || got.Revision != tt.want.Revision || !got.Time.Equal(tt.want.Time) || got.Modified != tt.want.Modified {
				t.Errorf("FromBuildInfo = %+v; want %+v", got, tt.want)
			}
			if tt.want.GoVersion != "" && got.GoVersion != tt.want.GoVersion {
				t.Errorf("GoVersion = %q; want %q", got.GoVersion, tt.want.GoVersion)
			}
			if !strings.HasPrefix(got.String(), tt.line) {
				t.Errorf("String() = %q; want prefix %q", got.String(), tt.line)
			}
		})
	}
	if got := FromBuildInfo("", &debug.BuildInfo{Settings: vcs}).Platform; !strings.HasSuffix(got, "/v7") {
		t.Errorf("Platform with GOARM=7 = %q; want a /v7 suffix", got)
	}
}
