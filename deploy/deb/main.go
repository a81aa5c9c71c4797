// Command deb builds the tracker's Debian package with nfpm (used as a
// library, so no packaging tool is downloaded): `make deb` runs it for the
// host, `make deb GOARCH=arm64` and `make deb GOARCH=arm GOARM=7` (armhf).
//
// It lives in its own module so that nfpm and its dependencies stay out of
// the tracker's go.mod: the firmware's module graph is unchanged by it.
//
// The package follows Debian policy: /usr/bin/tracker, the unit in
// /lib/systemd/system, /etc/default/tracker as a conffile, the sysusers.d
// entry, the example config under /usr/share/doc (not a live config, so a
// fresh install does not start), the man page tracker(1) made from the
// binary's own -h text, the README, copyright and changelog, and the
// maintainer scripts (postinst.sh, prerm.sh, postrm.sh).
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "deb: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("deb", flag.ContinueOnError)
	var o options
	fs.StringVar(&o.root, "root", ".", "the repository's top directory")
	fs.StringVar(&o.binary, "binary", "", "the tracker binary to package (built for --goarch)")
	fs.StringVar(&o.helpBinary, "help-from", "", "a tracker binary this machine can run, for the man page (default --binary)")
	fs.StringVar(&o.goarch, "goarch", "", "GOARCH of --binary")
	fs.StringVar(&o.goarm, "goarm", "", "GOARM of --binary when --goarch=arm")
	fs.StringVar(&o.describe, "describe", "", "git describe --tags --always --dirty (mapped to the Debian version)")
	fs.StringVar(&o.version, "version", "", "the Debian version, overriding the one mapped from --describe")
	fs.StringVar(&o.out, "out", "dist", "output directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.binary == "" || o.goarch == "" || (o.describe == "" && o.version == "") {
		return errors.New("--binary, --goarch and --describe (or --version) are required; `make deb` passes them")
	}
	path, err := build(o)
	if err != nil {
		return err
	}
	fmt.Println(path)
	return nil
}

// commitTime is the time of HEAD in dir, zero outside a git checkout.
func commitTime(dir string) time.Time {
	out, err := exec.Command("git", "-C", dir, "log", "-1", "--format=%ct").Output()
	if err != nil {
		return time.Time{}
	}
	sec, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		return time.Time{}
	}
	return time.Unix(sec, 0).UTC()
}

// execHelp runs bin with args and returns its stdout; help must exit 0
// and print nothing on stderr.
func execHelp(bin string) helpFunc {
	return func(args ...string) (string, error) {
		var out, errb bytes.Buffer
		cmd := exec.Command(bin, args...)
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("%s %s: %w\n%s", bin, strings.Join(args, " "), err, errb.String())
		}
		if errb.Len() > 0 {
			return "", fmt.Errorf("%s %s wrote to stderr: %s", bin, strings.Join(args, " "), errb.String())
		}
		return out.String(), nil
	}
}
