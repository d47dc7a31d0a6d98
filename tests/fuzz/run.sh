#!/bin/sh
# Run every libFuzzer target of a build over its seed corpus.
#
#   tests/fuzz/run.sh BUILDDIR RUNS [TARGET...]
#
# Each target runs RUNS inputs (-runs), bounded by FUZZ_MAX_TIME seconds
# (default 15) in case it is slow; new inputs go to a scratch directory,
# never into the seed corpus.  Prints one line per target and exits 1 if
# any target crashed, leaked, hung or broke a check; the input that did
# it is kept as BUILDDIR/tests/fuzz/TARGET-crash-* (or -leak-, -timeout-),
# its log as crash-TARGET.log.
# FUZZ_KNOWN skips the checks of known bugs (see README).
set -u

usage() {
	echo "usage: $0 BUILDDIR RUNS [TARGET...]" >&2
	exit 2
}

[ $# -ge 2 ] || usage
builddir=$1
runs=$2
shift 2
case $runs in
''|*[!0-9]*) usage ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
bindir=$builddir/tests/fuzz
maxtime=${FUZZ_MAX_TIME:-15}

targets="$*"
if [ -z "$targets" ]; then
	for exe in "$bindir"/fuzz_*; do
		[ -f "$exe" ] && [ -x "$exe" ] && targets="$targets ${exe##*/fuzz_}"
	done
fi
if [ -z "$targets" ]; then
	echo "$0: no fuzz targets in $bindir (configure with -Dfuzz=true)" >&2
	exit 2
fi

scratch=$(mktemp -d "${TMPDIR:-/tmp}/fdistd-fuzz.XXXXXX") || exit 2
trap 'rm -rf "$scratch"' EXIT
trap 'exit 130' INT TERM

export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"

failed=0
for t in $targets; do
	exe=$bindir/fuzz_$t
	if [ ! -x "$exe" ]; then
		echo "fuzz_$t: FAILED: no executable $exe"
		failed=1
		continue
	fi
	seed=$here/corpus/$t
	mkdir -p "$scratch/$t"
	set -- -runs="$runs" -max_total_time="$maxtime" -timeout=10 \
	    -print_final_stats=1 -artifact_prefix="$bindir/$t-"
	[ -f "$here/$t.dict" ] && set -- "$@" -dict="$here/$t.dict"
	set -- "$@" "$scratch/$t"
	[ -d "$seed" ] && set -- "$@" "$seed"
	log=$scratch/$t.log
	start=$(date +%s.%N)
	"$exe" "$@" >"$log" 2>&1
	rc=$?
	end=$(date +%s.%N)
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
	new=$(sed -n 's/^stat::new_units_added: *//p' "$log")
	secs=$(echo "$start $end" | awk '{ printf "%.1f", $2 - $1 }')
	rate=$(echo "${execs:-0} $start $end" |
	    awk '{ printf "%d", $1 / ($3 - $2) }')
	if [ $rc -eq 0 ]; then
		printf 'fuzz_%s: ok: %s execs in %ss (%s exec/s), %s new inputs\n' \
		    "$t" "${execs:-?}" "$secs" "$rate" "${new:-?}"
		[ "${execs:-0}" -ge "$runs" ] ||
		    printf 'fuzz_%s: note: stopped by the %ss bound\n' \
		    "$t" "$maxtime"
	else
		cp "$log" "$bindir/crash-$t.log"
		printf 'fuzz_%s: FAILED (exit %d) after %s execs; log: %s\n' \
		    "$t" "$rc" "${execs:-?}" "$bindir/crash-$t.log"
		grep -E -A3 '^==FUZZ CHECK FAILED==|^SUMMARY|Test unit written' \
		    "$log" | sed 's/^/    /'
		failed=1
	fi
done
exit $failed
