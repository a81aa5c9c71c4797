package cli

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/reefer/tracker/deploy/fleetctl/azrest"
	"github.com/reefer/tracker/deploy/fleetctl/fleet"
)

// stringList is a repeatable (or comma-separated) string flag.
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*s = append(*s, p)
		}
	}
	return nil
}

// idsFrom returns the device ids of a command: its arguments, or those of
// --csv FILE ("-" is stdin).
func idsFrom(e *env, csvPath string) ([]string, error) {
	if csvPath == "" {
		if len(e.args) == 0 {
			return nil, usagef("name the devices, or give --csv FILE")
		}
		for _, id := range e.args {
			if !fleet.ValidID(id) {
				return nil, usagef("%q is not a valid device id", id)
			}
		}
		return e.args, nil
	}
	if len(e.args) > 0 {
		return nil, usagef("give device ids or --csv, not both")
	}
	var r io.Reader = os.Stdin
	if csvPath != "-" {
		f, err := os.Open(csvPath)
		if err != nil {
			return nil, fmt.Errorf("--csv: %w", err)
		}
		defer f.Close()
		r = f
	}
	return fleet.ReadIDs(r)
}

// summaries is the output of a bulk command.
type summaries []fleet.Summary

func (s summaries) err() error {
	for _, x := range s {
		if err := x.Err(); err != nil {
			return err
		}
	}
	return nil
}

func summaryTable(w io.Writer, v any) {
	fmt.Fprintln(w, "STEP\tDONE\tFAILED\tTOTAL")
	for _, s := range v.(summaries) {
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\n", s.Step, s.Done, len(s.Failed), s.Total)
	}
	for _, s := range v.(summaries) {
		for _, f := range s.Failed {
			fmt.Fprintf(w, "  failed %s: %s\n", f.ID, f.Err)
		}
	}
}

func groupTable(w io.Writer, v any) {
	gs, ok := v.([]azrest.EnrollmentGroup)
	if !ok {
		gs = []azrest.EnrollmentGroup{v.(azrest.EnrollmentGroup)}
	}
	fmt.Fprintln(w, "GROUP\tSTATUS\tATTESTATION\tHUBS\tALLOCATION\tCREDENTIAL POLICY\tINITIAL DESIRED")
	for _, g := range gs {
		att := g.Attestation.Type
		if x := g.Attestation.X509; x != nil && x.CAReferences != nil {
			att = "x509 CA " + x.CAReferences.Primary
		} else if x != nil && x.SigningCertificates != nil {
			att = "x509 signing certificate"
		}
		desired := "-"
		if g.InitialTwin != nil && len(g.InitialTwin.Properties.Desired) > 0 {
			b, _ := json.Marshal(g.InitialTwin.Properties.Desired)
			desired = string(b)
		}
		hubs := strings.Join(g.IoTHubs, ",")
		if hubs == "" {
			hubs = g.IoTHubHostName
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", g.EnrollmentGroupID, g.ProvisioningStatus, att, dash(hubs), dash(g.AllocationPolicy), dash(g.CredentialPolicyName), desired)
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func registrationTable(w io.Writer, v any) {
	rs, ok := v.([]azrest.RegistrationState)
	if !ok {
		rs = []azrest.RegistrationState{v.(azrest.RegistrationState)}
	}
	fmt.Fprintln(w, "REGISTRATION\tDEVICE\tSTATUS\tSUBSTATUS\tHUB\tUPDATED")
	for _, r := range rs {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", r.RegistrationID, dash(r.DeviceID), r.Status, dash(r.Substatus), dash(r.AssignedHub), dash(r.LastUpdatedDateTimeUTC))
	}
}

func twinTable(w io.Writer, v any) {
	ts, ok := v.([]azrest.Twin)
	if !ok {
		ts = []azrest.Twin{v.(azrest.Twin)}
	}
	fmt.Fprintln(w, "DEVICE\tSTATUS\tCONNECTION\tDESIRED\tREPORTED")
	for _, t := range ts {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", t.DeviceID, t.Status, t.ConnectionState, props(t.Properties.Desired), props(t.Properties.Reported))
	}
}

// props prints twin properties without the service's $ entries.
func props(m map[string]any) string {
	c := map[string]any{}
	for k, v := range m {
		if !strings.HasPrefix(k, "$") {
			c[k] = v
		}
	}
	b, _ := json.Marshal(c)
	return string(b)
}

func deviceTable(w io.Writer, v any) {
	d := v.(azrest.Device)
	fmt.Fprintln(w, "DEVICE\tSTATUS\tCONNECTION\tLAST ACTIVITY\tGENERATION")
	fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", d.DeviceID, d.Status, dash(d.ConnectionState), dash(d.LastActivityTime), dash(d.GenerationID))
}

func enrollmentTable(w io.Writer, v any) {
	e := v.(azrest.IndividualEnrollment)
	fmt.Fprintln(w, "REGISTRATION\tSTATUS\tATTESTATION\tCREDENTIAL POLICY\tUPDATED")
	fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", e.RegistrationID, e.ProvisioningStatus, e.Attestation.Type, dash(e.CredentialPolicyName), dash(e.LastUpdatedDateTimeUTC))
}

func policyTable(w io.Writer, v any) {
	ps, ok := v.([]azrest.CredentialPolicy)
	if !ok {
		ps = []azrest.CredentialPolicy{v.(azrest.CredentialPolicy)}
	}
	fmt.Fprintln(w, "POLICY\tVALIDITY\tISSUING CA\tCA NOT AFTER\tCREATED")
	for _, p := range ps {
		subject, notAfter := "-", "-"
		if c, err := parsePEMCert(p.IssuingCertificate); err == nil {
			subject, notAfter = c.Subject.String(), c.NotAfter.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", p.Name, time.Duration(p.ValiditySeconds)*time.Second, subject, notAfter, dash(p.CreatedDateTimeUTC))
	}
}

// parsePEMCert reads the first certificate of a PEM text.
func parsePEMCert(s string) (*x509.Certificate, error) {
	b, _ := pem.Decode([]byte(s))
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(b.Bytes)
}

// messageTable prints a one-line result.
func messageTable(w io.Writer, v any) {
	if m, ok := v.(map[string]any); ok && m["message"] != nil {
		fmt.Fprintln(w, m["message"])
		return
	}
	b, _ := json.MarshalIndent(v, "", "  ")
	fmt.Fprintln(w, string(b))
}

func done(format string, args ...any) map[string]any {
	return map[string]any{"message": fmt.Sprintf(format, args...)}
}

var commands = []command{
	{path: "group create", args: "GROUP (--ca-name NAME | --signing-cert FILE)", summary: "create an X.509 enrollment group, with an initial twin and a credential policy", dps: true, nargs: [2]int{1, 1},
		flags: func(fs *flag.FlagSet, run *runFunc) func() error {
			caName := fs.String("ca-name", "", "a verified CA uploaded to the DPS (caReferences)")
			cert := fs.String("signing-cert", "", "PEM of the root or intermediate CA (signingCertificates)")
			common := commonFlags(fs, "its devices'")
			*run = func(e *env) (any, error) {
				c, err := common()
				if err != nil {
					return nil, err
				}
				s := fleet.GroupSpec{ID: e.args[0], CAName: *caName, Common: c}
				if *cert != "" {
					if s.SigningCertPEM, err = readFile("signing-cert", *cert); err != nil {
						return nil, err
					}
				}
				return e.f.CreateGroup(e.ctx, s)
			}
			return func() error {
				if (*caName == "") == (*cert == "") {
					return usagef("give exactly one of --ca-name or --signing-cert")
				}
				return nil
			}
		},
		table: groupTable},
	{path: "group set-credential-policy", args: "GROUP (NAME | --none)", summary: "name the credential policy that issues the group's devices their certificates (or none)", dps: true, nargs: [2]int{1, 2},
		flags: func(fs *flag.FlagSet, run *runFunc) func() error {
			none := fs.Bool("none", false, "remove the group's credential policy: its devices' CSRs are refused")
			*run = func(e *env) (any, error) {
				name := ""
				if len(e.args) == 2 {
					name = e.args[1]
				}
				if (name == "") == !*none {
					return nil, usagef("give a policy NAME or --none")
				}
				return e.f.SetGroupCredentialPolicy(e.ctx, e.args[0], name)
			}
			return nil
		},
		table: groupTable},
	{path: "group show", args: "GROUP", summary: "show an enrollment group", dps: true, nargs: [2]int{1, 1},
		run: func(e *env) (any, error) { return e.f.DPS.GetGroup(e.ctx, e.args[0]) }, table: groupTable},
	{path: "group list", summary: "list the enrollment groups", dps: true,
		run: func(e *env) (any, error) { return e.f.DPS.ListGroups(e.ctx) }, table: groupTable},
	{path: "group disable", args: "GROUP", summary: "disable a group: DPS refuses its devices (status disabled)", dps: true, nargs: [2]int{1, 1},
		run: func(e *env) (any, error) {
			ctx := e.ctx
			return e.f.SetGroupStatus(ctx, e.args[0], azrest.StatusDisabled)
		}, table: groupTable},
	{path: "group enable", args: "GROUP", summary: "enable a group again", dps: true, nargs: [2]int{1, 1},
		run: func(e *env) (any, error) {
			ctx := e.ctx
			return e.f.SetGroupStatus(ctx, e.args[0], azrest.StatusEnabled)
		}, table: groupTable},
	{path: "group delete", args: "GROUP", summary: "delete a group (its registration records stay: registration delete --group)", dps: true, nargs: [2]int{1, 1},
		run: func(e *env) (any, error) {
			ctx := e.ctx
			return done("enrollment group %s deleted", e.args[0]), e.f.DPS.DeleteGroup(ctx, e.args[0], "")
		}, table: messageTable},
	{path: "group deprovision", args: "GROUP", summary: "end of life: disable the group, delete its devices' hub identities and registration records, delete the group", dps: true, hub: true, nargs: [2]int{1, 1},
		run: func(e *env) (any, error) {
			ctx := e.ctx
			id := e.args[0]
			if _, err := e.f.SetGroupStatus(ctx, id, azrest.StatusDisabled); err != nil {
				return nil, err
			}
			_, ids, err := e.f.GroupDevices(ctx, id)
			if err != nil {
				return nil, err
			}
			hub, err := e.f.DeleteIdentities(ctx, ids)
			if err != nil {
				return nil, err
			}
			regs, err := e.f.DeleteRegistrations(ctx, ids)
			if err != nil {
				return nil, err
			}
			out := summaries{hub, regs}
			if err := out.err(); err != nil {
				return out, fmt.Errorf("group %s kept: %w", id, err)
			}
			if err := e.f.DPS.DeleteGroup(ctx, id, ""); err != nil {
				return out, err
			}
			return append(out, fleet.Summary{Step: "delete enrollment group", Total: 1, Done: 1}), nil
		}, table: summaryTable},

	{path: "enrollment create", args: "DEVICE --cert FILE", summary: "enroll one device on its own: an X.509 individual enrollment, with a credential policy", dps: true, nargs: [2]int{1, 1},
		flags: func(fs *flag.FlagSet, run *runFunc) func() error {
			cert := fs.String("cert", "", "the device's leaf certificate, PEM (CN = DEVICE)")
			common := commonFlags(fs, "the device's")
			*run = func(e *env) (any, error) {
				c, err := common()
				if err != nil {
					return nil, err
				}
				pem, err := readFile("cert", *cert)
				if err != nil {
					return nil, err
				}
				return e.f.Enroll(e.ctx, fleet.DeviceSpec{ID: e.args[0], LeafPEM: pem, Common: c})
			}
			return func() error {
				if *cert == "" {
					return usagef("--cert is required")
				}
				return nil
			}
		},
		table: enrollmentTable},
	{path: "enrollment show", args: "DEVICE", summary: "show a device's individual enrollment", dps: true, nargs: [2]int{1, 1},
		run: func(e *env) (any, error) { return e.f.DPS.GetEnrollment(e.ctx, e.args[0]) }, table: enrollmentTable},
	{path: "enrollment disenroll", args: "DEVICE", summary: "block one device: disabled individual enrollment + hub identity deleted", dps: true, nargs: [2]int{1, 1},
		flags: func(fs *flag.FlagSet, run *runFunc) func() error {
			cert := fs.String("cert", "", "the device's leaf certificate (PEM): an X.509 entry; without it a symmetric-key entry under the same id")
			keep := fs.Bool("keep-identity", false, "leave the hub identity (the device stays connected to the hub)")
			*run = func(e *env) (any, error) {
				pem := ""
				if *cert != "" {
					var err error
					if pem, err = readFile("cert", *cert); err != nil {
						return nil, err
					}
				}
				if *keep {
					e.f.Hub = nil
				} else if e.f.Hub == nil {
					return nil, fmt.Errorf("%w for IoT Hub: disenrolling also deletes the hub identity; give the hub connection string or --keep-identity", errNoConnection)
				}
				return e.f.Disenroll(e.ctx, e.args[0], pem)
			}
			return nil
		},
		table: func(w io.Writer, v any) {
			r := v.(fleet.DisenrollResult)
			hub := "hub identity deleted"
			switch {
			case r.IdentityNotFound:
				hub = "no hub identity to delete"
			case !r.IdentityDeleted:
				hub = "hub identity kept"
			}
			fmt.Fprintf(w, "%s disenrolled: disabled %s individual enrollment %s; %s\n", r.ID, r.Attestation, r.Enrollment, hub)
		}},
	{path: "enrollment reenroll", args: "DEVICE", summary: "delete the device's individual enrollment: its group admits it again", dps: true, nargs: [2]int{1, 1},
		run: func(e *env) (any, error) {
			ctx := e.ctx
			deleted, err := e.f.Reenroll(ctx, e.args[0])
			if err != nil {
				return nil, err
			}
			if !deleted {
				return done("%s had no individual enrollment: its group already admits it", e.args[0]), nil
			}
			return done("%s re-enrolled: its individual enrollment is deleted, its group admits it at its next registration", e.args[0]), nil
		}, table: messageTable},
	{path: "enrollment bulk-disenroll", args: "[DEVICE...]", summary: "disenroll a port call's devices (--csv) with DPS bulk operations, then delete their hub identities", dps: true, hub: true, nargs: [2]int{0, -1},
		flags: csvFlag(func(e *env, ids []string) (any, error) {
			d, h, err := e.f.BulkDisenroll(e.ctx, ids)
			out := summaries{d}
			if h.Step != "" {
				out = append(out, h)
			}
			if err == nil {
				err = out.err()
			}
			return out, err
		}),
		table: summaryTable},
	{path: "enrollment bulk-reenroll", args: "[DEVICE...]", summary: "re-enroll a port call's devices (--csv) with DPS bulk operations", dps: true, nargs: [2]int{0, -1},
		flags: csvFlag(func(e *env, ids []string) (any, error) {
			s, err := e.f.BulkReenroll(e.ctx, ids)
			out := summaries{s}
			if err == nil {
				err = out.err()
			}
			return out, err
		}),
		table: summaryTable},

	{path: "registration list", args: "--group GROUP", summary: "list the registration records of a group's devices", dps: true,
		flags: func(fs *flag.FlagSet, run *runFunc) func() error {
			group := fs.String("group", "", "enrollment group")
			*run = func(e *env) (any, error) { recs, _, err := e.f.GroupDevices(e.ctx, *group); return recs, err }
			return func() error {
				if *group == "" {
					return usagef("--group is required")
				}
				return nil
			}
		},
		table: registrationTable},
	{path: "registration show", args: "DEVICE", summary: "show a device's registration record", dps: true, nargs: [2]int{1, 1},
		run: func(e *env) (any, error) { return e.f.DPS.GetRegistration(e.ctx, e.args[0]) }, table: registrationTable},
	{path: "registration delete", args: "DEVICE... | --group GROUP | --csv FILE", summary: "delete registration records (the cleanup after a trip)", dps: true, nargs: [2]int{0, -1},
		flags: groupOrCSV(func(e *env, ids []string) (any, error) {
			s, err := e.f.DeleteRegistrations(e.ctx, ids)
			out := summaries{s}
			if err == nil {
				err = out.err()
			}
			return out, err
		}),
		table: summaryTable},

	{path: "device list", args: "[--where CONDITION]", summary: "list hub devices (twin query SELECT * FROM devices WHERE ...)", hub: true,
		flags: func(fs *flag.FlagSet, run *runFunc) func() error {
			where := fs.String("where", "", "query condition, e.g. \"tags.trip = 'T42'\" or \"status = 'enabled'\"")
			*run = func(e *env) (any, error) { return e.f.Hub.Query(e.ctx, *where) }
			return nil
		},
		table: twinTable},
	{path: "device show", args: "DEVICE", summary: "show a hub device identity", hub: true, nargs: [2]int{1, 1},
		run: func(e *env) (any, error) { return e.f.Hub.GetDevice(e.ctx, e.args[0]) }, table: deviceTable},
	{path: "device delete", args: "DEVICE... | --group GROUP | --csv FILE", summary: "delete hub device identities", hub: true, nargs: [2]int{0, -1},
		flags: groupOrCSV(func(e *env, ids []string) (any, error) {
			s, err := e.f.DeleteIdentities(e.ctx, ids)
			out := summaries{s}
			if err == nil {
				err = out.err()
			}
			return out, err
		}),
		table: summaryTable},

	{path: "twin show", args: "DEVICE", summary: "show a device twin", hub: true, nargs: [2]int{1, 1},
		run: func(e *env) (any, error) { return e.f.Hub.GetTwin(e.ctx, e.args[0]) }, table: twinTable},
	{path: "twin update", args: "(DEVICE | --where CONDITION | --all) --desired JSON", summary: "merge desired properties into one twin or every twin of a query", hub: true, nargs: [2]int{0, 1},
		flags: func(fs *flag.FlagSet, run *runFunc) func() error {
			desired := fs.String("desired", "", "desired properties to merge, JSON (null removes one)")
			where := fs.String("where", "", "every device of this query condition")
			all := fs.Bool("all", false, "every device of the hub")
			*run = func(e *env) (any, error) {
				d, err := jsonObject("desired", *desired)
				if err != nil {
					return nil, err
				}
				if len(e.args) == 1 {
					if *where != "" || *all {
						return nil, usagef("give a device, --where or --all, not several")
					}
					return e.f.Hub.UpdateDesired(e.ctx, e.args[0], d)
				}
				if *where == "" && !*all {
					return nil, usagef("give a device, --where CONDITION or --all")
				}
				s, err := e.f.UpdateDesired(e.ctx, *where, d)
				out := summaries{s}
				if err == nil {
					err = out.err()
				}
				return out, err
			}
			return func() error {
				if *desired == "" {
					return usagef("--desired is required")
				}
				return nil
			}
		},
		table: func(w io.Writer, v any) {
			if s, ok := v.(summaries); ok {
				summaryTable(w, s)
				return
			}
			twinTable(w, v)
		}},

	{path: "method invoke", args: "DEVICE METHOD", summary: "invoke a direct method and print the device's answer", hub: true, nargs: [2]int{2, 2},
		flags: func(fs *flag.FlagSet, run *runFunc) func() error {
			payload := fs.String("payload", "", "method payload, JSON")
			timeout := fs.Duration("response-timeout", 30*time.Second, "how long the device has to answer (5s-300s)")
			connect := fs.Duration("connect-timeout", 0, "how long to wait for the device to connect (0: it must be online)")
			*run = func(e *env) (any, error) {
				if *payload != "" && !json.Valid([]byte(*payload)) {
					return nil, usagef("--payload must be JSON, got %q", *payload)
				}
				return e.f.Hub.InvokeMethod(e.ctx, e.args[0], e.args[1], json.RawMessage(*payload), *timeout, *connect)
			}
			return func() error {
				if *timeout < 5*time.Second || *timeout > 300*time.Second {
					return usagef("--response-timeout must be between 5s and 300s")
				}
				return nil
			}
		},
	},

	{path: "monitor", args: "[--device DEVICE] [--count N] [--duration D]", summary: "watch telemetry as it arrives (emulator only; on Azure: az iot hub monitor-events)", hub: true,
		flags: func(fs *flag.FlagSet, run *runFunc) func() error {
			device := fs.String("device", "", "only this device")
			count := fs.Int("count", 0, "stop after N messages (0: until interrupted)")
			dur := fs.Duration("duration", 0, "stop after this long (0: until interrupted)")
			*run = func(e *env) (any, error) {
				ctx := e.ctx
				if *dur > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, *dur)
					defer cancel()
				}
				n := 0
				err := e.f.Hub.Monitor(ctx, *device, func(ev azrest.Event) bool {
					n++
					if e.g.output == "json" {
						b, _ := json.Marshal(ev)
						fmt.Fprintln(e.stdout, string(b))
					} else {
						fmt.Fprintf(e.stdout, "%s  %s  %s  %s\n", ev.EnqueuedTime.UTC().Format(time.RFC3339Nano), ev.DeviceID, ev.Payload, appProps(ev.Properties))
					}
					return *count == 0 || n < *count
				})
				if errors.Is(err, context.DeadlineExceeded) {
					err = nil
				}
				return nil, err
			}
			return nil
		},
	},

	{path: "credential-policy create", args: "NAME [--validity D]", summary: "create a credential policy: an issuing CA for DPS-issued certificates (emulator only; on Azure an Azure Device Registry resource)", dps: true, nargs: [2]int{1, 1},
		flags: func(fs *flag.FlagSet, run *runFunc) func() error {
			validity := fs.Duration("validity", 0, "how long the certificates it issues are valid, whole seconds, e.g. 2m or 720h (default: the emulator's --issued-cert-validity)")
			*run = func(e *env) (any, error) {
				if _, err := e.f.DPS.GetCredentialPolicy(e.ctx, e.args[0]); err == nil {
					return nil, fmt.Errorf("credential policy %q: %w (credential-policy delete removes it)", e.args[0], azrest.ErrConflict)
				} else if !errors.Is(err, azrest.ErrNotFound) {
					return nil, err
				}
				return e.f.DPS.PutCredentialPolicy(e.ctx, e.args[0], int64(*validity/time.Second), "")
			}
			return func() error {
				if *validity < 0 || *validity%time.Second != 0 {
					return usagef("--validity must be a whole number of seconds, e.g. 2m or 720h, not %s", *validity)
				}
				return nil
			}
		},
		table: policyTable},
	{path: "credential-policy show", args: "NAME", summary: "show a credential policy and its issuing CA (emulator only)", dps: true, nargs: [2]int{1, 1},
		run: func(e *env) (any, error) { return e.f.DPS.GetCredentialPolicy(e.ctx, e.args[0]) }, table: policyTable},
	{path: "credential-policy list", summary: "list the credential policies (emulator only)", dps: true,
		run: func(e *env) (any, error) { return e.f.DPS.ListCredentialPolicies(e.ctx) }, table: policyTable},
	{path: "credential-policy delete", args: "NAME", summary: "delete a credential policy (emulator only): enrollments naming it get CSRs refused", dps: true, nargs: [2]int{1, 1},
		run: func(e *env) (any, error) {
			ctx := e.ctx
			return done("credential policy %s deleted", e.args[0]), e.f.DPS.DeleteCredentialPolicy(ctx, e.args[0])
		}, table: messageTable},

	{path: "ca upload", args: "NAME --cert FILE", summary: "upload a CA certificate to the DPS (emulator; on Azure: fleet.sh / az iot dps certificate)", dps: true, nargs: [2]int{1, 1},
		flags: caCert(func(e *env, pem string, verified bool) (any, error) {
			return e.f.DPS.UploadCA(e.ctx, e.args[0], pem, verified)
		}, true),
	},
	{path: "ca code", args: "NAME", summary: "get a proof-of-possession verification code for a CA (emulator)", dps: true, nargs: [2]int{1, 1},
		run: func(e *env) (any, error) { return e.f.DPS.VerificationCode(e.ctx, e.args[0]) }},
	{path: "ca verify", args: "NAME --cert FILE", summary: "prove possession with a certificate whose CN is the code (emulator)", dps: true, nargs: [2]int{1, 1},
		flags: caCert(func(e *env, pem string, _ bool) (any, error) {
			return e.f.DPS.VerifyCA(e.ctx, e.args[0], pem)
		}, false),
	},
	{path: "ca show", args: "NAME", summary: "show a DPS CA certificate (emulator)", dps: true, nargs: [2]int{1, 1},
		run: func(e *env) (any, error) { return e.f.DPS.GetCA(e.ctx, e.args[0]) }},
	{path: "ca delete", args: "NAME", summary: "remove a DPS CA certificate (emulator)", dps: true, nargs: [2]int{1, 1},
		run: func(e *env) (any, error) {
			ctx := e.ctx
			return done("CA certificate %s removed", e.args[0]), e.f.DPS.DeleteCA(ctx, e.args[0])
		}, table: messageTable},
}

func csvFlag(fn func(e *env, ids []string) (any, error)) func(fs *flag.FlagSet, run *runFunc) func() error {
	return func(fs *flag.FlagSet, run *runFunc) func() error {
		path := fs.String("csv", "", "CSV of the port call: container,deviceId rows (header optional; - is stdin)")
		*run = func(e *env) (any, error) {
			ids, err := idsFrom(e, *path)
			if err != nil {
				return nil, err
			}
			return fn(e, ids)
		}
		return nil
	}
}

func groupOrCSV(fn func(e *env, ids []string) (any, error)) func(fs *flag.FlagSet, run *runFunc) func() error {
	return func(fs *flag.FlagSet, run *runFunc) func() error {
		path := fs.String("csv", "", "CSV of device ids (container,deviceId rows; - is stdin)")
		group := fs.String("group", "", "every device with a registration record of this enrollment group")
		*run = func(e *env) (any, error) {
			if *group != "" {
				if *path != "" || len(e.args) > 0 {
					return nil, usagef("give devices, --csv or --group, not several")
				}
				if e.f.DPS == nil {
					return nil, fmt.Errorf("%w for DPS: --group reads the group's registration records", errNoConnection)
				}
				_, ids, err := e.f.GroupDevices(e.ctx, *group)
				if err != nil {
					return nil, err
				}
				return fn(e, ids)
			}
			ids, err := idsFrom(e, *path)
			if err != nil {
				return nil, err
			}
			return fn(e, ids)
		}
		return nil
	}
}

func caCert(fn func(e *env, pem string, verified bool) (any, error), withVerified bool) func(fs *flag.FlagSet, run *runFunc) func() error {
	return func(fs *flag.FlagSet, run *runFunc) func() error {
		cert := fs.String("cert", "", "PEM certificate")
		verified := new(bool)
		if withVerified {
			verified = fs.Bool("verified", false, "mark it verified on upload (skips proof of possession)")
		}
		*run = func(e *env) (any, error) {
			pem, err := readFile("cert", *cert)
			if err != nil {
				return nil, err
			}
			return fn(e, pem, *verified)
		}
		return func() error {
			if *cert == "" {
				return usagef("--cert is required")
			}
			return nil
		}
	}
}

// commonFlags registers the flags every new enrollment takes (who is
// named in the help, possessive: "its devices'", "the device's") and returns what reads
// them once parsed.
func commonFlags(fs *flag.FlagSet, who string) func() (fleet.Common, error) {
	var hubs stringList
	fs.Var(&hubs, "iot-hub", "linked hub host name (repeat, or comma-separated); default every linked hub")
	alloc := fs.String("allocation-policy", "", "static, hashed or geoLatency (default static with one hub, else hashed)")
	desired := fs.String("initial-twin", "", "initial desired properties, JSON, e.g. '{\"telemetryDelay\":1}'")
	tags := fs.String("initial-tags", "", "initial twin tags, JSON")
	disabled := fs.Bool("disabled", false, "create it disabled")
	policy := fs.String("credential-policy", "", "credential policy that issues "+who+" operational certificates when registering with a CSR "+
		"(Azure Device Registry policy on Azure; fleetctl credential-policy on the emulator)")
	return func() (fleet.Common, error) {
		c := fleet.Common{Hubs: hubs, AllocationPolicy: *alloc, Disabled: *disabled, CredentialPolicy: *policy}
		var err error
		if c.InitialDesired, err = jsonObject("initial-twin", *desired); err != nil {
			return c, err
		}
		c.InitialTags, err = jsonObject("initial-tags", *tags)
		return c, err
	}
}

func appProps(p map[string]string) string {
	if len(p) == 0 {
		return ""
	}
	b, _ := json.Marshal(p)
	return string(b)
}
