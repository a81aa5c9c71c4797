#!/usr/bin/env bash
# Operator script for the real Azure side of the reference flow
# (docs/reference-flow.md). It does what needs Azure Resource Manager with
# the Azure CLI (resource group, hub, DPS, linking them, the CA with proof
# of possession, teardown) and hands everything on the data plane
# (enrollments, registration records, identities, twins) to fleetctl, with
# the DPS and hub connection strings it reads from az. Every step is safe to
# run again.
#
# Needs the Azure CLI with the azure-iot extension (`az extension add --name
# azure-iot`) and a logged-in account, OpenSSL and ../certs for the
# proof-of-possession certificate, and fleetctl (`make fleetctl`).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)

usage() {
	cat <<USAGE
usage: fleet.sh [options] COMMAND [ARGS]

options (or environment):
  --rg NAME        resource group          (RG, default rg-trackers)
  --hub NAME       IoT hub name            (HUB, default hub-trackers)
  --dps NAME       DPS instance name       (DPS, default dps-trackers)
  --location LOC   Azure region            (LOCATION, default westeurope)
  --certs DIR      CA directory of ../certs/ca.sh (CERTS, default ./certs)
  --group ID       enrollment group id     (GROUP, default enrollgroup-sensors)
  --ca-name NAME   DPS certificate name    (CA_NAME, default groupCA-sensors)
  --fleetctl PATH  the operator tool       (FLEETCTL, default fleetctl on PATH, else bin/fleetctl)

Azure Resource Manager (az):
  setup                      resource group, hub, DPS, link, CA upload + proof of possession,
                             then the group enrollment (fleetctl) with initial twin telemetryDelay 1
  id-scope                   print the DPS ID scope (the trackers' idScope)
  env                        print export lines with both connection strings, for fleetctl:
                             eval "\$(fleet.sh env)"
  remove-ca                  delete the CA from the DPS (after the group is gone)
  teardown --yes             delete the whole resource group (hub, DPS, everything in it)

data plane (fleetctl with the connection strings from az):
  twin DEVICE JSON           set desired properties, e.g. twin sensor-thl-001 '{"telemetryDelay":3}'
  disenroll DEVICE           block one tracker: disabled individual enrollment + hub identity deleted
  reenroll DEVICE            delete that disabled individual enrollment (the group admits it again)
  bulk-disenroll CSV         a port call: every device of the CSV (container,deviceId rows)
  bulk-reenroll CSV          and back
  disable-group              disable the group and delete every hub identity it provisioned
  enable-group               re-enable the group for the next trip
  deprovision-group          disable the group, delete its identities and registration records, delete it
  fleetctl ARGS...           any fleetctl command, e.g. fleetctl registration list --group enrollgroup-sensors
USAGE
}

RG=${RG:-rg-trackers} HUB=${HUB:-hub-trackers} DPS=${DPS:-dps-trackers}
LOCATION=${LOCATION:-westeurope} CERTS=${CERTS:-./certs}
GROUP=${GROUP:-enrollgroup-sensors} CA_NAME=${CA_NAME:-groupCA-sensors}
FLEETCTL=${FLEETCTL:-}

die() { echo "fleet.sh: $*" >&2; exit 1; }
say() { echo "==> $*" >&2; }

while [ $# -gt 0 ]; do
	case $1 in
	--rg) RG=$2; shift 2 ;;
	--hub) HUB=$2; shift 2 ;;
	--dps) DPS=$2; shift 2 ;;
	--location) LOCATION=$2; shift 2 ;;
	--certs) CERTS=$2; shift 2 ;;
	--group) GROUP=$2; shift 2 ;;
	--ca-name) CA_NAME=$2; shift 2 ;;
	--fleetctl) FLEETCTL=$2; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	-*) usage >&2; die "unknown option $1" ;;
	*) break ;;
	esac
done
[ $# -ge 1 ] || { usage >&2; exit 2; }
cmd=$1; shift

command -v az >/dev/null || die "the Azure CLI (az) is not installed"

# exists runs an az "show" and says whether the resource is there.
exists() { az "$@" --output none >/dev/null 2>&1; }

hub_cs() {
	az iot hub connection-string show --hub-name "$HUB" --resource-group "$RG" --policy-name iothubowner \
		--key-type primary --query connectionString --output tsv
}

dps_cs() {
	az iot dps connection-string show --dps-name "$DPS" --resource-group "$RG" --policy-name provisioningserviceowner \
		--key-type primary --query connectionString --output tsv
}

# fleet runs fleetctl with both connection strings in its environment (not
# on its command line, where ps would show the keys), read from az once per
# run: always this RG's hub and DPS, whatever the caller's environment holds.
fleet() {
	local tool=$FLEETCTL
	if [ -z "$tool" ]; then
		tool=$(command -v fleetctl || true)
		[ -n "$tool" ] || tool=$here/../../bin/fleetctl
	fi
	[ -x "$tool" ] || die "fleetctl not found ($tool): build it with make fleetctl, or pass --fleetctl PATH"
	if [ -z "$dps_conn" ]; then
		dps_conn=$(dps_cs) || die "cannot read the connection string of DPS $DPS in $RG"
		hub_conn=$(hub_cs) || die "cannot read the connection string of hub $HUB in $RG"
	fi
	FLEETCTL_DPS_CONNECTION_STRING=$dps_conn FLEETCTL_HUB_CONNECTION_STRING=$hub_conn \
		FLEETCTL_EMULATOR='' FLEETCTL_SERVICE_URL='' "$tool" "$@"
}
dps_conn='' hub_conn=''


setup() {
	[ -f "$CERTS/root.pem" ] || die "no CA in $CERTS: run deploy/certs/ca.sh --dir $CERTS first"
	say "resource group $RG"
	exists group show --name "$RG" || az group create --name "$RG" --location "$LOCATION" --output none
	say "IoT hub $HUB"
	exists iot hub show --name "$HUB" --resource-group "$RG" ||
		az iot hub create --name "$HUB" --resource-group "$RG" --sku S1 --output none
	say "DPS $DPS"
	exists iot dps show --name "$DPS" --resource-group "$RG" ||
		az iot dps create --name "$DPS" --resource-group "$RG" --output none
	say "link $HUB to $DPS"
	if ! az iot dps linked-hub list --dps-name "$DPS" --resource-group "$RG" --query '[].name' --output tsv | grep -qx "$HUB.azure-devices.net"; then
		az iot dps linked-hub create --dps-name "$DPS" --resource-group "$RG" --connection-string "$(hub_cs)" --output none
	fi
	say "CA $CA_NAME (proof of possession)"
	exists iot dps certificate show --dps-name "$DPS" --resource-group "$RG" --certificate-name "$CA_NAME" ||
		az iot dps certificate create --dps-name "$DPS" --resource-group "$RG" --certificate-name "$CA_NAME" \
			--path "$CERTS/root.pem" --output none
	local verified etag code out
	verified=$(az iot dps certificate show --dps-name "$DPS" --resource-group "$RG" --certificate-name "$CA_NAME" \
		--query properties.isVerified --output tsv)
	if [ "$verified" != "true" ]; then
		etag=$(az iot dps certificate show --dps-name "$DPS" --resource-group "$RG" --certificate-name "$CA_NAME" --query etag --output tsv)
		out=$(az iot dps certificate generate-verification-code --dps-name "$DPS" --resource-group "$RG" \
			--certificate-name "$CA_NAME" --etag "$etag" --query '[properties.verificationCode, etag]' --output tsv)
		code=$(sed -n 1p <<<"$out") etag=$(sed -n 2p <<<"$out")
		if [ -z "$code" ] || [ -z "$etag" ]; then die "no verification code from DPS for $CA_NAME (got: $out)"; fi
		"$here/../certs/verification.sh" --dir "$CERTS" --ca root "$code" >/dev/null
		az iot dps certificate verify --dps-name "$DPS" --resource-group "$RG" --certificate-name "$CA_NAME" \
			--path "$CERTS/verification.pem" --etag "$etag" --output none
	fi
	say "enrollment group $GROUP"
	fleet group show "$GROUP" >/dev/null 2>&1 ||
		fleet group create "$GROUP" --ca-name "$CA_NAME" --iot-hub "$HUB.azure-devices.net" \
			--allocation-policy static --initial-twin '{"telemetryDelay":1}'
	say "done; ID scope: $(id_scope)"
}

id_scope() { az iot dps show --name "$DPS" --resource-group "$RG" --query properties.idScope --output tsv; }

remove_ca() {
	local etag
	if ! etag=$(az iot dps certificate show --dps-name "$DPS" --resource-group "$RG" --certificate-name "$CA_NAME" --query etag --output tsv 2>/dev/null); then
		say "CA $CA_NAME is not on $DPS"
		return
	fi
	az iot dps certificate delete --dps-name "$DPS" --resource-group "$RG" --certificate-name "$CA_NAME" --etag "$etag" --output none
	say "CA $CA_NAME removed from $DPS"
}

case $cmd in
setup) setup ;;
id-scope) id_scope ;;
env)
	printf 'export FLEETCTL_DPS_CONNECTION_STRING=%q\n' "$(dps_cs)"
	printf 'export FLEETCTL_HUB_CONNECTION_STRING=%q\n' "$(hub_cs)" ;;
remove-ca) remove_ca ;;
teardown)
	[ "${1:-}" = "--yes" ] || die "teardown deletes resource group $RG and everything in it; run: fleet.sh teardown --yes"
	if exists group show --name "$RG"; then
		az group delete --name "$RG" --yes --output none
		say "resource group $RG deleted"
	else
		say "resource group $RG does not exist"
	fi ;;
twin)
	[ $# -eq 2 ] || die "usage: twin DEVICE JSON"
	fleet twin update "$1" --desired "$2" ;;
disenroll)
	[ $# -eq 1 ] || die "usage: disenroll DEVICE"
	pem=$CERTS/devices/$1/$1.pem
	# With the leaf certificate an X.509 entry as in the reference flow;
	# without it fleetctl writes a symmetric-key entry under the same id.
	if [ -f "$pem" ]; then fleet enrollment disenroll "$1" --cert "$pem"; else fleet enrollment disenroll "$1"; fi ;;
reenroll)
	[ $# -eq 1 ] || die "usage: reenroll DEVICE"
	fleet enrollment reenroll "$1" ;;
bulk-disenroll | bulk-reenroll)
	[ $# -eq 1 ] || die "usage: $cmd CSV"
	fleet enrollment "$cmd" --csv "$1" ;;
disable-group)
	fleet group disable "$GROUP"
	fleet device delete --group "$GROUP" ;;
enable-group) fleet group enable "$GROUP" ;;
deprovision-group) fleet group deprovision "$GROUP" ;;
fleetctl) fleet "$@" ;;
*) usage >&2; die "unknown command $cmd" ;;
esac
