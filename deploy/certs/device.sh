#!/usr/bin/env bash
# device.sh issues one tracker's certificate from the intermediate CA:
# reference flow step 4. CN = device id = DPS registration id (docs/protocol.md C).
set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
	cat <<EOF
Usage: $PROG [--dir DIR] [--key-type ec|rsa] [--days N] [--force] DEVICE_ID

Issue a device certificate with CN = DEVICE_ID, signed by the intermediate CA
in DIR (run ca.sh first). Writes DIR/devices/DEVICE_ID/:
  DEVICE_ID.key        private key (mode 0600); copy it to the device only
  DEVICE_ID.pem        leaf certificate (for an individual enrollment)
  DEVICE_ID-chain.pem  leaf + intermediate: the certificate file for the device

  --dir DIR          certificate directory (default ./certs)
  --key-type ec|rsa  ECDSA P-256 (default) or RSA-2048 device key
  --days N           validity in days (default 30)
  --force            replace an existing certificate and key
  -h, --help         this text

DEVICE_ID: lowercase letters, digits and - . _ : only, at most 64
characters, ending in a letter, digit or '-' (docs/protocol.md C, identity rules).
An existing valid certificate is kept unless --force is given.
EOF
}

dir=./certs
key_type=ec
days=30
force=false
id=

while [ $# -gt 0 ]; do
	case "$1" in
	-h | --help)
		usage
		exit 0
		;;
	--dir | --key-type | --days)
		take_value "$1" $# "${2-}"
		shift 2
		;;
	--force)
		force=true
		shift
		;;
	--)
		shift
		break
		;;
	-*) usage_error "unknown option '$1'" ;;
	*) break ;;
	esac
done
[ $# -eq 1 ] || usage_error "expected exactly one DEVICE_ID, got $#"
id=$1

check_key_type "$key_type"
check_days "$days"

# docs/protocol.md C, identity rules: the registration id is the leaf CN; alphanumeric
# plus - . _ :, last character alphanumeric or '-', at most 64 with X.509.
# Lowercase because the IoT Hub device id taken from it is case-sensitive
# (docs/reference-flow.md, step 4).
valid_id() {
	[[ $1 =~ ^[a-z0-9._:-]{0,63}[a-z0-9-]$ ]]
}
if ! valid_id "$id"; then
	why="use lowercase letters, digits and - . _ : only"
	if [ ${#id} -gt 64 ]; then
		why="it is ${#id} characters long; the X.509 limit is 64"
	elif [ -z "$id" ]; then
		why="it is empty"
	elif [[ $id =~ [A-Z] ]]; then
		why="it has uppercase letters; use lowercase ($(tr '[:upper:]' '[:lower:]' <<<"$id"))"
	elif [[ $id =~ ^[a-z0-9._:-]+$ ]]; then
		why="the last character must be a letter, a digit or '-'"
	fi
	die "invalid device id '$id': $why"
fi

need_openssl
require_ca "$dir"

out="$dir/devices/$id"
key="$out/$id.key"
pem="$out/$id.pem"
chain="$out/$id-chain.pem"

# problem_with_existing prints why the existing certificate can't be kept,
# or nothing if it is valid.
problem_with_existing() {
	if [ ! -f "$key" ] || [ ! -f "$pem" ]; then
		echo "only one of $key and $pem exists"
		return
	fi
	if ! openssl verify -CAfile "$dir/root.pem" -untrusted "$dir/intermediate.pem" \
		-purpose sslclient "$pem" >/dev/null 2>&1; then
		echo "$pem does not verify against the CA in $dir (expired, or issued by another CA)"
		return
	fi
	if [ "$(openssl x509 -in "$pem" -noout -subject -nameopt multiline | sed -n 's/^ *commonName *= *//p')" != "$id" ]; then
		echo "$pem has a different CN"
		return
	fi
	if [ "$(openssl pkey -in "$key" -pubout 2>/dev/null)" != "$(openssl x509 -in "$pem" -noout -pubkey)" ]; then
		echo "$key does not match $pem"
		return
	fi
}

if [ -e "$key" ] || [ -e "$pem" ]; then
	problem=$(problem_with_existing)
	if [ "$force" = false ]; then
		[ -z "$problem" ] ||
			die "cannot keep the existing certificate: $problem; re-run with --force to issue a new key and certificate"
		if [ ! -f "$chain" ]; then
			cat "$pem" "$dir/intermediate.pem" >"$chain"
			say "restored $chain"
		fi
		have=$(key_type_of "$key")
		[ "$have" = "$key_type" ] || say "note: the existing key is $have; --force to replace it with $key_type"
		say "keeping existing certificate $pem (valid until $(openssl x509 -in "$pem" -noout -enddate | cut -d= -f2)); --force to replace it"
		exit 0
	fi
	say "--force: replacing the certificate and key in $out${problem:+ ($problem)}"
fi

if ! openssl x509 -in "$dir/intermediate.pem" -noout -checkend $((days * 86400)) >/dev/null; then
	say "warning: the certificate will outlive the intermediate CA ($(openssl x509 -in "$dir/intermediate.pem" -noout -enddate | cut -d= -f2)); the chain stops verifying then" >&2
fi

make_tmp "$dir"
write_extensions "$TMP/ext.cnf"
new_key "$key_type" "$TMP/device.key"
openssl req -new -config "$TMP/ext.cnf" -key "$TMP/device.key" -subj "/CN=$id" \
	-out "$TMP/device.csr" 2>"$TMP/openssl.err" ||
	die "openssl could not create the request for $id: $(cat "$TMP/openssl.err")"
sign_csr "$TMP/device.csr" "$dir/intermediate.pem" "$dir/intermediate.key" "$days" \
	v3_device "$TMP/ext.cnf" "$TMP/device.pem"
# docs/protocol.md C: the device presents leaf + intermediate; the root stays in DPS.
cat "$TMP/device.pem" "$dir/intermediate.pem" >"$TMP/device-chain.pem"
openssl verify -CAfile "$dir/root.pem" -untrusted "$dir/intermediate.pem" -purpose sslclient \
	"$TMP/device.pem" >/dev/null 2>"$TMP/openssl.err" ||
	die "the new certificate does not verify: $(cat "$TMP/openssl.err")"

mkdir -p "$out"
mv "$TMP/device.key" "$key"
mv "$TMP/device.pem" "$pem"
mv "$TMP/device-chain.pem" "$chain"
chmod 644 "$pem" "$chain"
say "created $pem ($key_type, $days days), $chain and $key"
