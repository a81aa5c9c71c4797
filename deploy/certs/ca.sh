#!/usr/bin/env bash
# ca.sh creates a test root CA and an intermediate CA signed by it:
# reference flow step 2. Existing CA material is kept, never overwritten, so re-running is
# safe and device certificates already issued stay valid.
set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
	cat <<EOF
Usage: $PROG [--dir DIR] [--key-type ec|rsa] [--days N] [--name PREFIX]

Create a TEST root CA and an intermediate CA in DIR (default ./certs):
  root.key, root.pem                  upload root.pem to DPS (reference flow step 2)
  intermediate.key, intermediate.pem  signs the device certificates

  --dir DIR          certificate directory (default ./certs)
  --key-type ec|rsa  ECDSA P-256 (default) or RSA-2048 CA keys
  --days N           validity in days (default 90: test CAs are short-lived)
  --name PREFIX      subject prefix: "PREFIX Root CA", "PREFIX Intermediate CA"
                     (default "Reefer Tracker Test")
  -h, --help         this text

Existing CA files are kept. To start over, move DIR away.
EOF
}

dir=./certs
key_type=ec
days=90
name="Reefer Tracker Test"

while [ $# -gt 0 ]; do
	case "$1" in
	-h | --help)
		usage
		exit 0
		;;
	--dir | --key-type | --days | --name)
		take_value "$1" $# "${2-}"
		shift 2
		;;
	*) usage_error "unexpected argument '$1'" ;;
	esac
done

check_key_type "$key_type"
check_days "$days"
# The name goes into openssl -subj, where / = + , and \ have meaning.
[[ $name =~ ^[A-Za-z0-9][A-Za-z0-9\ ._-]{0,39}$ ]] ||
	usage_error "--name must be 1-40 letters, digits, spaces, '.', '_' or '-', not '$name'"
need_openssl

mkdir -p "$dir"
make_tmp "$dir"
write_extensions "$TMP/ext.cnf"

# have_pair BASE: 0 if BASE.pem and BASE.key both exist, 1 if neither does;
# a half pair is an operator mistake we must not paper over.
have_pair() {
	local pem="$dir/$1.pem" key="$dir/$1.key"
	if [ -f "$pem" ] && [ -f "$key" ]; then
		return 0
	fi
	if [ -f "$pem" ] || [ -f "$key" ]; then
		die "$dir has only one of $1.pem and $1.key; restore the other or move both away"
	fi
	return 1
}

if have_pair root; then
	openssl x509 -in "$dir/root.pem" -noout -checkend 0 >/dev/null ||
		die "$dir/root.pem has expired; move $dir away and run $PROG again"
	say "keeping existing root CA $dir/root.pem ($(openssl x509 -in "$dir/root.pem" -noout -subject))"
else
	new_key "$key_type" "$TMP/root.key"
	openssl req -new -x509 -config "$TMP/ext.cnf" -extensions v3_root \
		-key "$TMP/root.key" -subj "/CN=$name Root CA" -set_serial "$(serial)" \
		-days "$days" -sha256 -out "$TMP/root.pem" 2>"$TMP/openssl.err" ||
		die "openssl could not create the root CA: $(cat "$TMP/openssl.err")"
	# Key first, then certificate: an interrupted run leaves a half pair,
	# which have_pair reports instead of silently reusing.
	mv "$TMP/root.key" "$dir/root.key"
	mv "$TMP/root.pem" "$dir/root.pem"
	say "created root CA $dir/root.pem ($key_type, $days days)"
fi

if have_pair intermediate; then
	openssl verify -CAfile "$dir/root.pem" "$dir/intermediate.pem" >/dev/null 2>&1 ||
		die "$dir/intermediate.pem is not signed by $dir/root.pem (or has expired); move both intermediate files away and run $PROG again"
	say "keeping existing intermediate CA $dir/intermediate.pem"
else
	new_key "$key_type" "$TMP/intermediate.key"
	openssl req -new -config "$TMP/ext.cnf" -key "$TMP/intermediate.key" \
		-subj "/CN=$name Intermediate CA" -out "$TMP/intermediate.csr" 2>"$TMP/openssl.err" ||
		die "openssl could not create the intermediate request: $(cat "$TMP/openssl.err")"
	sign_csr "$TMP/intermediate.csr" "$dir/root.pem" "$dir/root.key" "$days" \
		v3_intermediate "$TMP/ext.cnf" "$TMP/intermediate.pem"
	mv "$TMP/intermediate.key" "$dir/intermediate.key"
	mv "$TMP/intermediate.pem" "$dir/intermediate.pem"
	say "created intermediate CA $dir/intermediate.pem ($key_type, $days days)"
fi

cat <<EOF
Next (reference flow step 2), upload the root and prove possession:
  az iot dps certificate create --dps-name DPS --resource-group RG --certificate-name groupCA-sensors --path $dir/root.pem
  az iot dps certificate generate-verification-code --dps-name DPS --resource-group RG --certificate-name groupCA-sensors --etag ETAG
  $(dirname "$0")/verification.sh --dir $dir CODE
  az iot dps certificate verify --dps-name DPS --resource-group RG --certificate-name groupCA-sensors --etag ETAG --path $dir/verification.pem
Then issue device certificates with $(dirname "$0")/device.sh --dir $dir DEVICE_ID
EOF
