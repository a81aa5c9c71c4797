package azure

import (
	"fmt"
	"strings"
)

// azCommand is what `az` documents for one command: every parameter it
// takes (long names and their aliases, one slice per parameter) and which
// are required. fleet.sh's calls are checked against this table, the one
// place the az CLI's parameters are written down here.
type azCommand struct {
	required [][]string // each entry: a parameter's names; one of them must be given
	optional [][]string
}

// azGlobal are the arguments every az command takes (az --help: "Global
// Arguments").
var azGlobal = [][]string{{"--output", "-o"}, {"--query"}, {"--only-show-errors"}, {"--subscription"}, {"--debug"}, {"--verbose"}, {"--help", "-h"}}

// azCommands lists the commands fleet.sh uses, with their parameters as
// documented. Sources (one per command group):
//
//   - az group: https://learn.microsoft.com/cli/azure/group (create: --location,
//     --name required; show/delete: --name required; delete --yes, --no-wait)
//   - az iot hub create/show (core): https://learn.microsoft.com/cli/azure/iot/hub
//     and Azure/azure-cli src/azure-cli/azure/cli/command_modules/iot/_params.py
//     (argument_context 'iot hub': --name/-n, --sku, --unit, --partition-count,
//     --retention-day ...)
//   - az iot dps create/show (core): https://learn.microsoft.com/cli/azure/iot/dps
//     and the same _params.py (argument_context 'iot dps' and 'iot dps create':
//     --name/-n, --location, --sku, --unit)
//   - az iot dps linked-hub (core): https://learn.microsoft.com/cli/azure/iot/dps/linked-hub
//     (create --dps-name required; --connection-string, --allocation-weight,
//     --apply-allocation-policy, --hub-name/--hn, --hub-resource-group/--hrg,
//     --no-wait, --resource-group optional)
//   - az iot dps certificate (core): https://learn.microsoft.com/cli/azure/iot/dps/certificate
//     and _params.py (argument_context 'iot dps certificate': --path/-p,
//     --certificate-name/--name/-n, --etag/-e); the etag is required where ARM
//     wants If-Match (generate-verification-code, verify, delete:
//     https://learn.microsoft.com/rest/api/iot-dps/dps-certificate/generate-verification-code)
//   - az iot hub connection-string show, az iot dps connection-string show
//     (azure-iot extension): https://learn.microsoft.com/cli/azure/iot/hub/connection-string,
//     https://learn.microsoft.com/cli/azure/iot/dps/connection-string (every
//     parameter optional: --hub-name/--dps-name/-n, --resource-group/-g,
//     --policy-name/--pn, --key-type/--kt, --all/--show-all, hub also
//     --default-eventhub/--eh)
var azCommands = map[string]azCommand{
	"group create": {required: [][]string{{"--name", "-n", "--resource-group", "-g"}, {"--location", "-l"}},
		optional: [][]string{{"--managed-by"}, {"--tags"}}},
	"group show":   {required: [][]string{{"--name", "-n", "--resource-group", "-g"}}},
	"group delete": {required: [][]string{{"--name", "-n", "--resource-group", "-g"}}, optional: [][]string{{"--yes", "-y"}, {"--no-wait"}, {"--force-deletion-types", "-f"}}},

	"iot hub create": {required: [][]string{{"--name", "-n"}, {"--resource-group", "-g"}},
		optional: [][]string{{"--sku"}, {"--unit"}, {"--location", "-l"}, {"--partition-count"}, {"--retention-day", "--rd"}, {"--tags"},
			{"--c2d-ttl", "--ct"}, {"--c2d-max-delivery-count", "--cdd"}, {"--feedback-ttl", "--ft"}, {"--min-tls-version", "--mintls"}}},
	"iot hub show": {optional: [][]string{{"--name", "-n"}, {"--resource-group", "-g"}, {"--ids"}}},
	"iot hub connection-string show": {optional: [][]string{{"--hub-name", "-n"}, {"--resource-group", "-g"}, {"--policy-name", "--pn"},
		{"--key-type", "--kt"}, {"--all", "--show-all"}, {"--default-eventhub", "--eh"}}},

	"iot dps create": {required: [][]string{{"--name", "-n"}, {"--resource-group", "-g"}},
		optional: [][]string{{"--location", "-l"}, {"--sku"}, {"--unit"}, {"--tags"}}},
	"iot dps show": {optional: [][]string{{"--name", "-n"}, {"--resource-group", "-g"}, {"--ids"}}},
	"iot dps connection-string show": {optional: [][]string{{"--dps-name", "-n"}, {"--resource-group", "-g"}, {"--policy-name", "--pn"},
		{"--key-type", "--kt"}, {"--all", "--show-all"}}},
	"iot dps linked-hub list": {required: [][]string{{"--dps-name"}}, optional: [][]string{{"--resource-group", "-g"}}},
	"iot dps linked-hub create": {required: [][]string{{"--dps-name"}},
		optional: [][]string{{"--resource-group", "-g"}, {"--connection-string"}, {"--allocation-weight"}, {"--apply-allocation-policy"},
			{"--hub-name", "--hn"}, {"--hub-resource-group", "--hrg"}, {"--no-wait"}, {"--location", "-l"}}},

	"iot dps certificate show": {required: [][]string{{"--dps-name"}, {"--certificate-name", "--name", "-n"}},
		optional: [][]string{{"--resource-group", "-g"}}},
	"iot dps certificate create": {required: [][]string{{"--dps-name"}, {"--certificate-name", "--name", "-n"}, {"--path", "-p"}},
		optional: [][]string{{"--resource-group", "-g"}, {"--verified"}}},
	"iot dps certificate generate-verification-code": {required: [][]string{{"--dps-name"}, {"--certificate-name", "--name", "-n"}, {"--etag", "-e"}},
		optional: [][]string{{"--resource-group", "-g"}}},
	"iot dps certificate verify": {required: [][]string{{"--dps-name"}, {"--certificate-name", "--name", "-n"}, {"--etag", "-e"}, {"--path", "-p"}},
		optional: [][]string{{"--resource-group", "-g"}}},
	"iot dps certificate delete": {required: [][]string{{"--dps-name"}, {"--certificate-name", "--name", "-n"}, {"--etag", "-e"}},
		optional: [][]string{{"--resource-group", "-g"}}},
}

// checkAzCall checks one az invocation (its arguments, one per element)
// against azCommands: a known command, only documented parameters, every
// required one present, none twice.
func checkAzCall(args []string) error {
	var words []string
	for _, a := range args {
		if strings.HasPrefix(a, "-") {
			break
		}
		words = append(words, a)
	}
	name := ""
	var cmd azCommand
	for n := len(words); n > 0; n-- {
		if c, ok := azCommands[strings.Join(words[:n], " ")]; ok {
			name, cmd = strings.Join(words[:n], " "), c
			break
		}
	}
	if name == "" {
		return fmt.Errorf("az %s: not a command in the table", strings.Join(words, " "))
	}
	param := func(flag string) (int, bool) { // index into required, or -1 for optional/global
		for i, names := range cmd.required {
			for _, n := range names {
				if n == flag {
					return i, true
				}
			}
		}
		for _, set := range [][][]string{cmd.optional, azGlobal} {
			for _, names := range set {
				for _, n := range names {
					if n == flag {
						return -1, true
					}
				}
			}
		}
		return 0, false
	}
	seen := map[string]bool{}
	have := make([]bool, len(cmd.required))
	for _, a := range args[len(strings.Fields(name)):] {
		if !strings.HasPrefix(a, "-") || isNumber(a) {
			continue // a value
		}
		flag, _, _ := strings.Cut(a, "=")
		i, ok := param(flag)
		if !ok {
			return fmt.Errorf("az %s: %s is not a documented parameter", name, flag)
		}
		if seen[flag] {
			return fmt.Errorf("az %s: %s given twice", name, flag)
		}
		seen[flag] = true
		if i >= 0 {
			have[i] = true
		}
	}
	for i, ok := range have {
		if !ok {
			return fmt.Errorf("az %s: required %s missing", name, cmd.required[i][0])
		}
	}
	return nil
}

func isNumber(s string) bool {
	_, err := fmt.Sscanf(s, "%g", new(float64))
	return err == nil
}
