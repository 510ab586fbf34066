#!/usr/bin/env bash
# The cluster tests, start to end: up.sh, the tests, down.sh (also on any
# failure or interruption: every QEMU is stopped by its PID).
#
#   ci/cluster/test.sh [--short] [--kernel 6.1|6.12] [TEST...]
#
#   full (default)  exclusion handoff pairs failure rejoin leave lvmlockd,
#                   each on Debian's libdlm, and exclusion handoff pairs
#                   failure lvmlockd through ours too: NAME-ours on
#                   dlm-rs's libdlm, NAME-rust on the Rust API (exclusion,
#                   handoff, failure); about 9.5 minutes warm on 2 cores
#   --short         exclusion exclusion-ours exclusion-rust failure: join,
#                   exclusion with its blocking callback (on Debian's
#                   libdlm, ours and the Rust API), one node killed with
#                   the survivors' grants and recovery callbacks (what
#                   .ci/run runs; about 4 minutes warm, 223 s in CI)
#   TEST...         just these (ci/cluster/run.sh --list)
#
# Prints each step's time, the figures (ci/out/cluster/run/figures.txt)
# and the host memory the QEMUs used (their summed RSS, sampled after
# every test), and a closing "cluster: N passed, M failed" line.
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh
. ci/cluster/lib.sh
tests=(exclusion exclusion-ours exclusion-rust handoff handoff-ours handoff-rust
    pairs pairs-ours failure failure-ours failure-rust rejoin leave lvmlockd lvmlockd-ours)
up_args=()
picked=()
while [ $# -gt 0 ]; do
    case "$1" in
    --short) tests=(exclusion exclusion-ours exclusion-rust failure); shift ;;
    --kernel) up_args+=(--kernel "$2"); shift 2 ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    -*) die "unknown option $1 (see --help)" 2 ;;
    *) picked+=("$1"); shift ;;
    esac
done
[ ${#picked[@]} -gt 0 ] && tests=("${picked[@]}")

t0=$(cl_now)
down() {
    if [ -f "$CL_STATE/config" ]; then ci/cluster/down.sh || true; fi
}
trap down EXIT
# A cluster left running by hand in this state directory is stopped first.
down
ci/cluster/up.sh ${up_args[@]+"${up_args[@]}"} --lifetime 3600
t_up=$(cl_since "$t0")
cl_load_config
# The QEMUs' resident memory, summed (kB).
rss() {
    local f pid sum=0 kb
    for f in "$CL_STATE"/node*.pid "$CL_STATE/hub.pid"; do
        pid=$(cl_pid_of "$f") || continue
        kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
        sum=$((sum + ${kb:-0}))
    done
    echo "$sum"
}
peak=$(rss)
echo "cluster: QEMUs' RSS after up: $((peak / 1024)) MiB"
pass=0
fail=0
times=()
for t in "${tests[@]}"; do
    s=$(cl_now)
    if ci/cluster/run.sh "$t"; then pass=$((pass + 1)); else fail=$((fail + 1)); fi
    times+=("$t $(cl_since "$s") s")
    r=$(rss)
    [ "$r" -gt "$peak" ] && peak=$r
done
echo
echo "cluster: up (build + boot + membership) $t_up s; ready $(cat "$CL_STATE/ready-seconds") s after the first QEMU"
for x in "${times[@]}"; do echo "cluster: $x"; done
echo "cluster: peak RSS of the QEMUs $((peak / 1024)) MiB"
echo "cluster: figures:"
sed 's/^/    /' "$CL_STATE/figures.txt" 2>/dev/null || true
echo "cluster: total $(cl_since "$t0") s"
echo "cluster: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
