#!/usr/bin/env bash
# fuzz.sh runs every Go fuzz target of the module, one after the other.
#
#   FUZZTIME=30s .ci/fuzz.sh           each target for 30 s (the default)
#   FUZZTIME=1000000x .ci/fuzz.sh      each target for a million executions
#   .ci/fuzz.sh ./provisioning/...     only the targets under those packages
#   FUZZTARGETS='^FuzzLoadIdentity$' .ci/fuzz.sh ./provisioning/certs
#                                      only the targets matching the regexp
#
# Targets are found, not listed: every package whose tests define a
# func Fuzz... is asked for its targets with `go test -list '^Fuzz'`, so a
# new target runs here without editing this file. FUZZPARALLEL (default 1)
# is the number of fuzzing workers per target: the machine is shared.
#
# A failed target is one of two things, told apart by running the input
# go test blames once more on its own (go test -run 'FuzzX/<name>'):
#   FINDING  the input fails again. go test wrote it to the package's
#            testdata/fuzz/FuzzX/<hash> (or it is a seed already there);
#            its path and contents are printed with the whole log. Fix the
#            code and commit the file as a regression seed.
#   INFRA    no input was written, or the one written passes on its own:
#            the fuzzing process itself hung or died ("fuzzing process hung
#            or terminated unexpectedly", e.g. a worker starved for 10 s
#            under load, golang/go#56238). The target is run once more,
#            loudly; a second failure fails the script. An input that did
#            not reproduce is printed, then removed from testdata so it is
#            not committed by mistake.
# Either way the script carries on with the other targets and exits 1 at
# the end.
set -euo pipefail
cd "$(dirname "$0")/.."

fuzztime=${FUZZTIME:-30s}
parallel=${FUZZPARALLEL:-1}
only=${FUZZTARGETS:-.}
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

log=$(mktemp)
rerun_log=$(mktemp)
trap 'rm -f "$log" "$rerun_log"' EXIT

# show_log prints a failed run's log, indented, without the progress lines
# but the last one (a long campaign prints one every 3 s).
show_log() {
	local last
	last=$(grep -E '^fuzz: elapsed' "$log" | tail -1 || true)
	[ -n "$last" ] && printf '    %s\n' "$last"
	grep -vE '^fuzz: elapsed' "$log" | sed 's/^/    /'
}

# classify sets kind (finding or infra) and why for the failed run in $log
# of target $t in package $pkg, printing the blamed input and the rerun.
classify() {
	local input name file
	# go test prints "Failing input written to testdata/fuzz/FuzzX/<hash>"
	# (relative to the package) for a new input, or names the seed with
	# "failure while testing seed corpus entry: FuzzX/<name>".
	input=$(sed -n 's/^.*Failing input written to \(.*\)$/\1/p' "$log" | tail -1)
	name=$(sed -n 's/^.*failure while testing seed corpus entry: \(.*\)$/\1/p' "$log" | tail -1)
	if [ -n "$input" ]; then
		file=$pkg/$input
		name=$t/$(basename "$input")
		echo "    input: $file"
		if [ -f "$file" ]; then
			sed 's/^/    | /' "$file"
		else
			echo "    (go test named it, but $file does not exist)"
		fi
	elif [ -n "$name" ]; then
		echo "    seed: $name"
	else
		kind=infra why="no input was written"
		return
	fi
	echo "    rerun: $go test -run '^${name}\$' $pkg"
	if $go test -count=1 -v -run "^${name}\$" "$pkg" >"$rerun_log" 2>&1; then
		if ! grep -qF -- "--- PASS: $name " "$rerun_log"; then
			kind=finding why="the input could not be run alone (see the rerun's output)"
			sed 's/^/    rerun| /' "$rerun_log"
			return
		fi
		kind=infra why="the input passes when run alone"
		if [ -n "$input" ] && [ -f "$file" ]; then
			rm -f "$file"
			echo "    removed $file (it does not reproduce; its contents are above)"
		fi
	else
		kind=finding why="the input fails when run alone"
		sed 's/^/    rerun| /' "$rerun_log"
	fi
}

# fuzz_once runs target $t of $pkg once into $log; sets result, execs, secs.
fuzz_once() {
	local start
	start=$(date +%s)
	if $go test -run '^$' -fuzz "^${t}\$" -fuzztime "$fuzztime" -parallel "$parallel" "$pkg" >"$log" 2>&1; then
		result=ok
	else
		result=FAIL
	fi
	secs=$(($(date +%s) - start))
	# The last progress line has the execution count.
	execs=$(grep -oE 'execs: [0-9]+' "$log" | tail -1 | cut -d' ' -f2 || true)
}

row() {
	printf '%-44s %-24s %12s %8s  %s\n' "$pkg" "$t" "${execs:-?}" "$secs" "$1"
}

failed=()
total=0
printf '%-44s %-24s %12s %8s  %s\n' PACKAGE TARGET EXECS SECONDS RESULT
for dir in "${dirs[@]}"; do
	pkg=./${dir#./}
	mapfile -t targets < <($go test -list '^Fuzz' "$pkg" | grep '^Fuzz' | grep -E -- "$only" || true)
	for t in "${targets[@]}"; do
		total=$((total + 1))
		fuzz_once
		if [ "$result" = ok ]; then
			row ok
			continue
		fi
		row FAIL
		show_log
		classify
		if [ "$kind" = finding ]; then
			echo "    FINDING: $why; fix the code and commit the input as a regression seed"
			failed+=("$pkg $t (finding)")
			continue
		fi
		echo "    !!!! INFRASTRUCTURE FAILURE, not a finding ($why): running $t once more !!!!"
		fuzz_once
		if [ "$result" = ok ]; then
			row "ok (retry after an infrastructure failure)"
			continue
		fi
		row "FAIL (retry)"
		show_log
		classify
		if [ "$kind" = finding ]; then
			echo "    FINDING: $why; fix the code and commit the input as a regression seed"
			failed+=("$pkg $t (finding on retry)")
		else
			echo "    !!!! INFRASTRUCTURE FAILURE again ($why): giving up on $t !!!!"
			failed+=("$pkg $t (infrastructure failure twice)")
		fi
	done
done

if [ "$total" -eq 0 ]; then
	echo "fuzz.sh: no fuzz target matches FUZZTARGETS=$only" >&2
	exit 1
fi
if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz.sh: ${#failed[@]} of $total targets failed:" >&2
	printf '  %s\n' "${failed[@]}" >&2
	exit 1
fi
echo "fuzz.sh: $total targets, no findings (FUZZTIME=$fuzztime)"
