#!/usr/bin/env bash
# The kernel as oracle: run every conformance scenario on the real kernel
# DLM in the QEMU guest and compare the traces with the committed golden
# files, then run seeded random sequences on the kernel and on the engine
# (inside the guest) and compare them step by step.
#
#   ci/kernel/conformance.sh                  check (CI)
#   ci/kernel/conformance.sh --regenerate     rewrite dlm-conformance/golden/
#   DLM_RANDOM_SEEDS=N (default 1000), DLM_RANDOM_LEN=L (default 40)
#
# Needs the guest built by ci/kernel.sh (fetch, static binaries,
# initramfs). Traces land in ci/out/kernel-traces/.
set -euo pipefail
cd "$(dirname "$0")/../.."
regen=0
[ "${1:-}" = "--regenerate" ] && regen=1
seeds=${DLM_RANDOM_SEEDS:-1000}
len=${DLM_RANDOM_LEN:-40}
golden=dlm-conformance/golden
out=ci/out/kernel-traces
log=ci/out/conformance-serial.log
rm -rf "$out"
mkdir -p "$out" "$golden"

# Kernel messages stay off the console (dmesg -n 1) so that they cannot
# split trace lines; the traces are printed between markers.
guest_cmd='dmesg -n 1
mkdir -p /tmp
dlm-conformance run --target kernel > /tmp/traces.txt
run=$?
echo "@@TRACES-BEGIN@@"
cat /tmp/traces.txt
echo "@@TRACES-END@@"
dlm-conformance random --target kernel --seeds '"$seeds"' --len '"$len"'
rnd=$?
echo "@@RUN=$run RANDOM=$rnd@@"
[ $run -eq 0 ] && [ $rnd -eq 0 ]'

status=0
ci/kernel/run.sh --quiet --timeout "${DLM_CONFORMANCE_TIMEOUT:-900}" -- sh -c "$guest_cmd" || status=$?
cp ci/out/qemu-serial.log "$log"
tr -d '\r' <"$log" | awk -v dir="$out" '
    /^@@TRACES-BEGIN@@$/ { on = 1; next }
    /^@@TRACES-END@@$/ { on = 0; next }
    on && /^=== trace .* ===$/ { name = $3; file = dir "/" name ".trace"; printf "" > file; next }
    on && /^=== end .* ===$/ { close(file); file = ""; next }
    on && file != "" { print >> file }
'
n=$(find "$out" -name '*.trace' | wc -l)
want=$(find dlm-conformance/scenarios -name '*.txt' | wc -l)
if [ "$n" -ne "$want" ]; then
    echo "conformance: got $n kernel traces for $want scenarios (see $log)" >&2
    exit 1
fi
if [ "$regen" -eq 1 ]; then
    rm -f "$golden"/*.trace
    cp "$out"/*.trace "$golden"/
    echo "conformance: wrote $n golden traces to $golden"
else
    bad=0
    for f in "$out"/*.trace; do
        g="$golden/$(basename "$f")"
        if ! diff -u "$g" "$f" >"$f.diff" 2>&1; then
            echo "conformance: kernel trace differs from $g:" >&2
            head -40 "$f.diff" >&2
            bad=1
        fi
    done
    [ "$bad" -eq 0 ] || exit 1
    echo "conformance: $n kernel traces equal the golden files"
fi
grep -a "random:" <(tr -d '\r' <"$log") || true
if [ "$status" -ne 0 ]; then
    echo "conformance: the guest run failed (exit $status); see $log" >&2
    tr -d '\r' <"$log" | grep -a -A30 "differs\|smallest failing" | head -60 >&2 || true
    exit "$status"
fi
