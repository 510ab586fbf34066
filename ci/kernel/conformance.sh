#!/usr/bin/env bash
# The kernel as oracle: run every conformance scenario on the real kernel
# DLM in the QEMU guest and compare the traces with that kernel's committed
# golden files, then run seeded random sequences on the kernel and on the
# engine (inside the guest) and compare them step by step.
#
#   ci/kernel/conformance.sh [--kernel 6.1|6.12]                check
#   ci/kernel/conformance.sh [--kernel 6.1|6.12] --regenerate   rewrite
#                                         dlm-conformance/golden/<series>/
#
#   DLM_KERNEL=6.1|6.12        the same as --kernel (default 6.1; ci/lib.sh)
#   DLM_RANDOM_SEEDS=N         random sequences; 0 runs none. Default 1000
#                              (the engine models 6.1 and 6.12; the guest's
#                              engine runs with --model <series>)
#   DLM_RANDOM_START=S         the first seed (default 1)
#   DLM_RANDOM_LEN=L           operations a sequence (default 40)
#   DLM_RANDOM_MAX_FAILURES=F  go on after a failing seed until F have
#                              failed, each shrunk to its smallest script
#                              (default 1)
#
# Needs the guest built by ci/kernel.sh for the same series (fetch, static
# binaries, initramfs). Traces land in ci/out/linux-<series>/kernel-traces/,
# the console in ci/out/linux-<series>/conformance-serial.log.
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh
regen=0
while [ $# -gt 0 ]; do
    case "$1" in
    --kernel) DLM_KERNEL=$2; shift 2 ;;
    --regenerate) regen=1; shift ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (usage: conformance.sh [--kernel SERIES] [--regenerate])" 2 ;;
    esac
done
kernel_setup
# The kernel series the engine models (dlm_engine::KernelModel).
case "$DLM_KERNEL" in
6.1 | 6.12) model=$DLM_KERNEL ;;
*) die "the engine models Linux 6.1 and 6.12, not $DLM_KERNEL" 2 ;;
esac
seeds=${DLM_RANDOM_SEEDS:-1000}
start=${DLM_RANDOM_START:-1}
len=${DLM_RANDOM_LEN:-40}
maxfail=${DLM_RANDOM_MAX_FAILURES:-1}
for v in seeds start len maxfail; do
    case "${!v}" in '' | *[!0-9]*) die "$v must be a number, not '${!v}'" 2 ;; esac
done
golden=dlm-conformance/golden/$DLM_KERNEL
out=$GUEST_OUT/kernel-traces
log=$GUEST_OUT/conformance-serial.log
if [ "$regen" -eq 0 ] && [ ! -d "$golden" ]; then
    die "no golden traces for Linux $DLM_KERNEL in $golden; make them with: ci/kernel/conformance.sh --kernel $DLM_KERNEL --regenerate"
fi
rm -rf "$out"
mkdir -p "$out"

# Kernel messages stay off the console (dmesg -n 1) so that they cannot
# split trace lines; the traces are printed between markers. The guest
# expands its own variables, so the single quotes are meant.
random_cmd=true
if [ "$seeds" -gt 0 ]; then
    random_cmd="dlm-conformance random --target kernel --model $model --seeds $seeds --start $start --len $len --max-failures $maxfail"
fi
# shellcheck disable=SC2016
guest_cmd='dmesg -n 1
mkdir -p /tmp
dlm-conformance run --target kernel > /tmp/traces.txt
run=$?
echo "@@TRACES-BEGIN@@"
cat /tmp/traces.txt
echo "@@TRACES-END@@"
'"$random_cmd"'
rnd=$?
echo "@@RUN=$run RANDOM=$rnd@@"
[ $run -eq 0 ] && [ $rnd -eq 0 ]'

what="the scenarios"
[ "$seeds" -eq 0 ] || what+=", random seeds $start..$((start + seeds - 1)) of $len operations against the engine's $model model"
echo "conformance: Linux $DLM_KERNEL: $what"
status=0
ci/kernel/run.sh --quiet --timeout "${DLM_CONFORMANCE_TIMEOUT:-900}" -- sh -c "$guest_cmd" || status=$?
cp "$GUEST_OUT/qemu-serial.log" "$log"
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
    echo "conformance: got $n kernel traces for $want scenarios (guest status $status; see $log)" >&2
    tr -d '\r' <"$log" | tail -n 30 >&2
    exit 1
fi
if [ "$regen" -eq 1 ]; then
    mkdir -p "$golden"
    rm -f "$golden"/*.trace
    cp "$out"/*.trace "$golden"/
    echo "conformance: wrote $n golden traces of Linux $(cat "$KERNEL_DIR/version") to $golden"
else
    bad=0
    for f in "$out"/*.trace; do
        g="$golden/$(basename "$f")"
        if [ ! -f "$g" ]; then
            echo "conformance: no golden trace $g (regenerate with --kernel $DLM_KERNEL --regenerate)" >&2
            bad=1
        elif ! diff -u "$g" "$f" >"$f.diff" 2>&1; then
            echo "conformance: the kernel's trace differs from $g:" >&2
            head -40 "$f.diff" >&2
            bad=1
        fi
    done
    [ "$bad" -eq 0 ] || die "Linux $DLM_KERNEL does not give its golden traces (traces in $out)"
    echo "conformance: $n traces of Linux $(cat "$KERNEL_DIR/version") equal the golden files in $golden"
fi
tr -d '\r' <"$log" | grep -a "^random:" || true
if [ "$status" -ne 0 ]; then
    echo "conformance: the guest run failed (exit $status); see $log" >&2
    tr -d '\r' <"$log" | awk '/^random: seed .* differs/ { p = 1 } p' | grep -av '^@@\|DLM_CI_RESULT' | head -n 200 >&2 || true
    exit "$status"
fi
