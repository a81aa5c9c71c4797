# shellcheck shell=bash
# Helpers shared by ca.sh, device.sh and verification.sh. Sourced, not run.
#
# Layout of the certificate directory (--dir, default ./certs):
#   root.key, root.pem                  test root CA (uploaded to DPS)
#   intermediate.key, intermediate.pem  intermediate CA, signed by the root
#   devices/ID/ID.key, ID.pem           device key (0600) and leaf certificate
#   devices/ID/ID-chain.pem             leaf + intermediate: what the device presents
#   verification.pem                    proof-of-possession certificate

# Byte-wise character classes for the [a-z] tests below, whatever the
# operator's locale.
export LC_ALL=C

PROG=$(basename "$0")

die() {
	printf '%s: error: %s\n' "$PROG" "$*" >&2
	exit 1
}

# usage_error prints a message and the usage text to stderr, exit 2.
usage_error() {
	printf '%s: %s\n' "$PROG" "$*" >&2
	usage >&2
	exit 2
}

say() {
	printf '%s: %s\n' "$PROG" "$*"
}

need_openssl() {
	command -v openssl >/dev/null 2>&1 || die "openssl not found in PATH (Debian: apt-get install openssl)"
}

# take_value FLAG NARGS VALUE: sets the variable the flag names (--key-type
# sets key_type) to VALUE; the flag must be followed by a value. The caller
# shifts 2.
take_value() {
	[ "$2" -ge 2 ] || usage_error "$1 needs a value"
	local var=${1#--}
	printf -v "${var//-/_}" '%s' "$3"
}

check_key_type() {
	case "$1" in
	ec | rsa) ;;
	*) usage_error "--key-type must be ec or rsa, not '$1'" ;;
	esac
}

check_days() {
	[[ $1 =~ ^[1-9][0-9]{0,4}$ ]] || usage_error "--days must be a whole number of days between 1 and 99999, not '$1'"
}

# new_key TYPE FILE: writes a fresh private key (PKCS#8 PEM) readable only by
# its owner. The umask makes the file 0600 from its first byte, so the key is
# never briefly world-readable.
new_key() {
	local type=$1 file=$2
	(
		umask 077
		case "$type" in
		ec) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
			-pkeyopt ec_param_enc:named_curve -out "$file" 2>/dev/null ;;
		rsa) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$file" 2>/dev/null ;;
		esac
	) || die "could not generate a $type key in $file"
	chmod 600 "$file"
}

# key_type_of FILE: prints ec or rsa for a private key file.
key_type_of() {
	local text
	text=$(openssl pkey -in "$1" -noout -text 2>/dev/null) || return 1
	case "$text" in
	*modulus:*) echo rsa ;;
	*"ASN1 OID:"*) echo ec ;;
	*) echo unknown ;;
	esac
}

# serial prints a random positive 128-bit serial number, as RFC 5280 asks
# (at most 20 octets, unpredictable).
serial() {
	local hex
	hex=$(openssl rand -hex 16)
	# Clear the top bit so the DER INTEGER stays 16 bytes and positive.
	printf '0x%x%s\n' "$((0x${hex:0:1} & 7))" "${hex:1}"
}

# write_extensions FILE: the X.509 v3 profiles used by the scripts.
write_extensions() {
	cat >"$1" <<'EOF'
[ req ]
distinguished_name = dn
prompt = no
[ dn ]

[ v3_root ]
basicConstraints = critical, CA:TRUE, pathlen:1
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[ v3_intermediate ]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

# docs/protocol.md C: the device presents this leaf in mutual TLS to DPS and IoT Hub.
[ v3_device ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

# docs/protocol.md C: proof of possession only needs CN = code, signed by the CA key.
[ v3_verification ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF
}

# sign_csr CSR CA_PEM CA_KEY DAYS PROFILE EXTFILE OUT
sign_csr() {
	openssl x509 -req -in "$1" -CA "$2" -CAkey "$3" -set_serial "$(serial)" \
		-days "$4" -sha256 -extfile "$6" -extensions "$5" -out "$7" 2>"$TMP/openssl.err" ||
		die "openssl could not sign $7: $(cat "$TMP/openssl.err")"
}

# make_tmp DIR creates $TMP inside DIR, removed when the script exits. Files
# are made there and renamed into place: same file system, so the rename is
# atomic and keys never pass through a shared /tmp.
make_tmp() {
	TMP=$(mktemp -d "$1/.tmp.XXXXXX") || die "cannot create a temporary directory in $1"
	trap 'rm -rf "$TMP"' EXIT
}

# require_ca DIR: root and intermediate must exist before issuing anything.
require_ca() {
	local f
	for f in root.pem root.key intermediate.pem intermediate.key; do
		[ -f "$1/$f" ] || die "no CA in $1 ($f is missing); run $(dirname "$0")/ca.sh --dir $1 first"
	done
}
