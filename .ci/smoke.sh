#!/usr/bin/env bash
# Smoke test for cross-built binaries: each must be a static ELF for its
# machine, and must run under qemu-user and print a reading.
set -euo pipefail

check() {
	local bin=$1 machine=$2 qemu=$3
	[ -x "$bin" ] || { echo "smoke: $bin missing (run make cross)"; exit 1; }
	local hdr
	hdr=$(readelf -h "$bin")
	grep -q "Machine: *$machine" <<<"$hdr" || { echo "smoke: $bin is not a $machine ELF"; exit 1; }
	# A static binary has no program interpreter.
	if readelf -l "$bin" | grep -q 'Requesting program interpreter'; then
		echo "smoke: $bin is dynamically linked"; exit 1
	fi
	command -v "$qemu" >/dev/null || { echo "smoke: $qemu not found (apt-get install qemu-user-static)"; exit 1; }
	"$qemu" "$bin" version
	local out
	out=$("$qemu" "$bin" sensors --simulated --json)
	echo "$out"
	grep -q '"source": *"simulated"' <<<"$out" || { echo "smoke: $bin printed no simulated reading"; exit 1; }
	echo "smoke: $bin ok"
}

check "${1:-bin/tracker-linux-arm64}" AArch64 qemu-aarch64-static
check "${2:-bin/tracker-linux-armv7}" ARM qemu-arm-static
