#!/usr/bin/env bash
# verification.sh makes the proof-of-possession certificate for a CA uploaded
# to DPS: CN = the verification code, signed with the CA's private key
# (reference flow step 2, docs/protocol.md C "group enrollment from a CA").
set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
	cat <<EOF
Usage: $PROG [--dir DIR] [--ca root|intermediate] CODE

Write DIR/verification.pem: a certificate with CN = CODE (from
az iot dps certificate generate-verification-code) signed by the key of the
CA uploaded to DPS. Upload it with az iot dps certificate verify.

  --dir DIR                certificate directory (default ./certs)
  --ca root|intermediate   which CA was uploaded (default root)
  -h, --help               this text
EOF
}

dir=./certs
ca=root

while [ $# -gt 0 ]; do
	case "$1" in
	-h | --help)
		usage
		exit 0
		;;
	--dir | --ca)
		take_value "$1" $# "${2-}"
		shift 2
		;;
	--)
		shift
		break
		;;
	-*) usage_error "unknown option '$1'" ;;
	*) break ;;
	esac
done
[ $# -eq 1 ] || usage_error "expected exactly one verification CODE, got $#"
code=$1

case "$ca" in
root | intermediate) ;;
*) usage_error "--ca must be root or intermediate, not '$ca'" ;;
esac
# DPS codes are hex strings; anything else would need escaping in -subj.
[[ $code =~ ^[A-Za-z0-9._-]{1,64}$ ]] ||
	die "invalid verification code '$code': expected 1-64 letters, digits, '.', '_' or '-' as printed by az iot dps certificate generate-verification-code"

need_openssl
require_ca "$dir"

make_tmp "$dir"
write_extensions "$TMP/ext.cnf"
# The certificate's own key proves nothing and is thrown away; what DPS
# checks is the CA signature on it.
new_key ec "$TMP/verification.key"
openssl req -new -config "$TMP/ext.cnf" -key "$TMP/verification.key" -subj "/CN=$code" \
	-out "$TMP/verification.csr" 2>"$TMP/openssl.err" ||
	die "openssl could not create the request: $(cat "$TMP/openssl.err")"
sign_csr "$TMP/verification.csr" "$dir/$ca.pem" "$dir/$ca.key" 2 \
	v3_verification "$TMP/ext.cnf" "$TMP/verification.pem"
mv "$TMP/verification.pem" "$dir/verification.pem"
chmod 644 "$dir/verification.pem"
say "created $dir/verification.pem (CN=$code, signed by $dir/$ca.pem)"
say "next: az iot dps certificate verify ... --path $dir/verification.pem"
