#!/usr/bin/env bash
# Operator script for the real Azure side of the reference flow
# (docs/reference-flow.md): create the hub and DPS, upload and prove the CA,
# enroll the fleet, change a twin, disenroll and re-enroll trackers.
#
# Needs the Azure CLI with the azure-iot extension (`az extension add --name
# azure-iot`) and a logged-in account, plus OpenSSL and ../certs for the
# proof-of-possession certificate. Every step is safe to run again.
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

commands:
  setup                      hub, DPS, link, CA upload + proof of possession, group enrollment
  id-scope                   print the DPS ID scope (the trackers' idScope)
  twin DEVICE JSON           set desired properties, e.g. twin sensor-thl-001 '{"telemetryDelay":3}'
  disenroll DEVICE           block one tracker: disabled individual enrollment + delete hub identity
  reenroll DEVICE            delete that disabled individual enrollment (the group admits it again)
  disable-group              disable the group and delete every hub identity it provisioned
  enable-group               re-enable the group for the next trip
USAGE
}

RG=${RG:-rg-trackers} HUB=${HUB:-hub-trackers} DPS=${DPS:-dps-trackers}
LOCATION=${LOCATION:-westeurope} CERTS=${CERTS:-./certs}
GROUP=${GROUP:-enrollgroup-sensors} CA_NAME=${CA_NAME:-groupCA-sensors}

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
	local hubcs
	hubcs=$(az iot hub connection-string show --hub-name "$HUB" --key-type primary --query connectionString --output tsv)
	if ! az iot dps linked-hub list --dps-name "$DPS" --resource-group "$RG" --query '[].name' --output tsv | grep -qx "$HUB.azure-devices.net"; then
		az iot dps linked-hub create --dps-name "$DPS" --resource-group "$RG" --connection-string "$hubcs" --output none
	fi
	say "CA $CA_NAME (proof of possession)"
	exists iot dps certificate show --dps-name "$DPS" --resource-group "$RG" --certificate-name "$CA_NAME" ||
		az iot dps certificate create --dps-name "$DPS" --resource-group "$RG" --certificate-name "$CA_NAME" \
			--path "$CERTS/root.pem" --output none
	local verified etag code
	verified=$(az iot dps certificate show --dps-name "$DPS" --resource-group "$RG" --certificate-name "$CA_NAME" \
		--query properties.isVerified --output tsv)
	if [ "$verified" != "true" ]; then
		etag=$(az iot dps certificate show --dps-name "$DPS" --resource-group "$RG" --certificate-name "$CA_NAME" --query etag --output tsv)
		local out
		out=$(az iot dps certificate generate-verification-code --dps-name "$DPS" --resource-group "$RG" \
			--certificate-name "$CA_NAME" --etag "$etag" --query '[properties.verificationCode, etag]' --output tsv)
		code=$(sed -n 1p <<<"$out") etag=$(sed -n 2p <<<"$out")
		if [ -z "$code" ] || [ -z "$etag" ]; then die "no verification code from DPS for $CA_NAME (got: $out)"; fi
		"$here/../certs/verification.sh" --dir "$CERTS" --ca root "$code" >/dev/null
		az iot dps certificate verify --dps-name "$DPS" --resource-group "$RG" --certificate-name "$CA_NAME" \
			--path "$CERTS/verification.pem" --etag "$etag" --output none
	fi
	say "enrollment group $GROUP"
	exists iot dps enrollment-group show --dps-name "$DPS" --resource-group "$RG" --enrollment-id "$GROUP" ||
		az iot dps enrollment-group create --dps-name "$DPS" --resource-group "$RG" --enrollment-id "$GROUP" \
			--root-ca-name "$CA_NAME" --iot-hubs "$HUB.azure-devices.net" --allocation-policy static \
			--initial-twin-properties '{"telemetryDelay":1}' --output none
	say "done; ID scope: $(id_scope)"
}

id_scope() { az iot dps show --name "$DPS" --resource-group "$RG" --query properties.idScope --output tsv; }

case $cmd in
setup) setup ;;
id-scope) id_scope ;;
twin)
	[ $# -eq 2 ] || die "usage: twin DEVICE JSON"
	az iot hub device-twin update --hub-name "$HUB" --device-id "$1" --desired "$2" --output none
	say "desired properties of $1 set to $2" ;;
disenroll)
	[ $# -eq 1 ] || die "usage: disenroll DEVICE"
	pem=$CERTS/devices/$1/$1.pem
	[ -f "$pem" ] || die "no certificate $pem: the individual enrollment needs the device's leaf certificate"
	# An individual enrollment overrides the group (spec C "Precedence"); keep
	# it: deleting it re-admits the device.
	if exists iot dps enrollment show --dps-name "$DPS" --resource-group "$RG" --enrollment-id "$1"; then
		az iot dps enrollment update --dps-name "$DPS" --resource-group "$RG" --enrollment-id "$1" \
			--provisioning-status disabled --output none
	else
		az iot dps enrollment create --dps-name "$DPS" --resource-group "$RG" --enrollment-id "$1" \
			--attestation-type x509 --certificate-path "$pem" --provisioning-status disabled --output none
	fi
	# Disenrolling does not remove the hub identity (spec C): delete it too.
	exists iot hub device-identity show --hub-name "$HUB" --device-id "$1" &&
		az iot hub device-identity delete --hub-name "$HUB" --device-id "$1" --output none
	say "$1 disenrolled and removed from $HUB" ;;
reenroll)
	[ $# -eq 1 ] || die "usage: reenroll DEVICE"
	exists iot dps enrollment show --dps-name "$DPS" --resource-group "$RG" --enrollment-id "$1" &&
		az iot dps enrollment delete --dps-name "$DPS" --resource-group "$RG" --enrollment-id "$1" --output none
	say "$1 re-admitted by group $GROUP" ;;
disable-group)
	az iot dps enrollment-group update --dps-name "$DPS" --resource-group "$RG" --enrollment-id "$GROUP" \
		--provisioning-status disabled --output none
	for id in $(az iot dps enrollment-group registration list --dps-name "$DPS" --resource-group "$RG" \
		--group-id "$GROUP" --query '[].deviceId' --output tsv); do
		exists iot hub device-identity show --hub-name "$HUB" --device-id "$id" &&
			az iot hub device-identity delete --hub-name "$HUB" --device-id "$id" --output none
	done
	say "group $GROUP disabled and its devices removed from $HUB" ;;
enable-group)
	az iot dps enrollment-group update --dps-name "$DPS" --resource-group "$RG" --enrollment-id "$GROUP" \
		--provisioning-status enabled --output none
	say "group $GROUP enabled" ;;
*) usage >&2; die "unknown command $cmd" ;;
esac
