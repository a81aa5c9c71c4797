#!/usr/bin/env bash
# fuzz.sh runs every Go fuzz target of the module, one after the other.
#
#   FUZZTIME=30s .ci/fuzz.sh           each target for 30 s (the default)
#   FUZZTIME=1000000x .ci/fuzz.sh      each target for a million executions
#   .ci/fuzz.sh ./provisioning/...     only the targets under those packages
#
# Targets are found, not listed: every package whose tests define a
# func Fuzz... is asked for its targets with `go test -list '^Fuzz'`, so a
# new target runs here without editing this file. FUZZPARALLEL (default 1)
# is the number of fuzzing workers per target: the machine is shared.
# A finding is written to the package's testdata/fuzz/FuzzXxx/ by go test;
# the script carries on with the other targets and exits 1 at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

fuzztime=${FUZZTIME:-30s}
parallel=${FUZZPARALLEL:-1}
go=${GO:-go}

# Packages with a fuzz target: grep is a cheap first cut (compiling every
# test binary just to list nothing would take minutes), go test -list the
# authority.
mapfile -t dirs < <(grep -rlE --include='*_test.go' '^func Fuzz[A-Z0-9_]' "${@:-.}" 2>/dev/null |
	xargs -r -n1 dirname | sort -u)
if [ ${#dirs[@]} -eq 0 ]; then
	echo "fuzz.sh: no fuzz targets found" >&2
	exit 1
fi

failed=()
total=0
printf '%-44s %-24s %12s %8s  %s\n' PACKAGE TARGET EXECS SECONDS RESULT
for dir in "${dirs[@]}"; do
	pkg=./${dir#./}
	mapfile -t targets < <($go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true)
	for t in "${targets[@]}"; do
		total=$((total + 1))
		log=$(mktemp)
		start=$(date +%s)
		if $go test -run '^$' -fuzz "^${t}\$" -fuzztime "$fuzztime" -parallel "$parallel" "$pkg" >"$log" 2>&1; then
			result=ok
		else
			result=FAIL
			failed+=("$pkg $t")
		fi
		secs=$(($(date +%s) - start))
		# The last progress line has the execution count.
		execs=$(grep -oE 'execs: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
		printf '%-44s %-24s %12s %8s  %s\n' "$pkg" "$t" "${execs:-?}" "$secs" "$result"
		if [ "$result" = FAIL ]; then
			grep -vE '^fuzz: elapsed' "$log" | tail -20 | sed 's/^/    /'
		fi
		rm -f "$log"
	done
done

if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz.sh: ${#failed[@]} of $total targets failed:" >&2
	printf '  %s\n' "${failed[@]}" >&2
	exit 1
fi
echo "fuzz.sh: $total targets, no findings (FUZZTIME=$fuzztime)"
