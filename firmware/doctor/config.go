package doctor

import (
	"errors"
	"fmt"
	"strings"

	"github.com/reefer/tracker/firmware/config"
)

// CheckConfig reads the config file at path, applies the environment
// (getenv may be nil) and flag overrides, and validates it, as the tracker
// does at start. Every problem is listed with the key it concerns and
// config's own message, which says how to fix it.
//
// The returned config is nil only when the file could not be read or
// parsed; with invalid values it is returned as parsed, so the other
// checks can still run and a technician sees every problem at once.
func CheckConfig(path string, getenv func(string) string, o config.Overrides) (*config.Config, Check) {
	ck := Check{Name: "config"}
	c, err := config.Read(path)
	if err != nil {
		ck.Status = Fail
		if errors.Is(err, config.ErrNoConfig) {
			ck.Detail = "no config file at " + path
			ck.Fix = fmt.Sprintf(`create %s with at least {"version": %d, "idScope": "...", "certFile": "/etc/tracker/device-chain.pem", "keyFile": "/etc/tracker/device.key"}, or pass --config`, path, config.Version)
			return nil, ck
		}
		ck.Detail, ck.Fix = configProblems(path, err)
		return nil, ck
	}
	var errs []error
	if getenv != nil {
		errs = append(errs, c.ApplyEnv(getenv))
	}
	errs = append(errs, c.Apply(o), c.Validate())
	if err := errors.Join(errs...); err != nil {
		ck.Status = Fail
		ck.Detail, ck.Fix = configProblems(path, err)
		return c, ck
	}
	ck.Status = OK
	ck.Detail = path + " is valid"
	return c, ck
}

// configProblems turns config errors (joined *config.Error values) into a
// detail line and one fix line per problem.
func configProblems(path string, err error) (detail, fix string) {
	var list []error
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		list = append(list, e)
	}
	walk(err)
	lines := make([]string, 0, len(list))
	for _, e := range list {
		var ce *config.Error
		if !errors.As(e, &ce) {
			lines = append(lines, e.Error())
			continue
		}
		var l strings.Builder
		if ce.Key != "" {
			fmt.Fprintf(&l, "%q", ce.Key)
		} else {
			l.WriteString("file")
		}
		if ce.Source != "" {
			fmt.Fprintf(&l, " (set by %s)", ce.Source)
		}
		l.WriteString(": " + ce.Msg)
		lines = append(lines, l.String())
	}
	n := "1 problem"
	if len(lines) != 1 {
		n = fmt.Sprintf("%d problems", len(lines))
	}
	return fmt.Sprintf("%s in %s", n, path), strings.Join(lines, "\n")
}
