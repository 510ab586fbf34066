#!/usr/bin/env bash
# Where the user-space instructions of the C ABI's lite `_wait` pair go,
# function by function: valgrind's callgrind in the guest, on the kernel
# DLM, for the same C binary (bench-libdlm.c, or bench-flood.c, built against Debian's
# libdlm-dev) on Debian's libdlm_lt and on dlm-rs's.
#
#   ci/kernel/callgrind.sh [--kernel 6.1|6.12] [--lib DIR] [--threaded] [--flood]
#   --flood: the flood row's program (bench-flood.c, per request) instead
#            of the _wait pair's
#   DLM_CALLGRIND_PAIRS=N ci/kernel/callgrind.sh    pairs a run (default 20,000)
#   DLM_CALLGRIND_ARGS="--dump-instr=yes" ci/kernel/callgrind.sh   more callgrind options
#
# Prints callgrind_annotate's inclusive table for each library, with the
# counts divided into instructions a pair, and keeps the raw outputs in
# ci/out/linux-<series>/callgrind/. icount.sh gives the totals that the
# README quotes; this script says where they come from.
#
# The guest has no shared file system: each callgrind output goes back
# over the serial console, gzipped and base64-encoded between markers.
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh
lib=""
variant=lt
prog=bench-libdlm
while [ $# -gt 0 ]; do
    case "$1" in
    --kernel) DLM_KERNEL=$2; shift 2 ;;
    --lib) lib=$(cd "$2" && pwd); shift 2 ;;
    --threaded) variant=thr; shift ;;
    --flood) prog=bench-flood; shift ;;
    *) die "unknown argument '$1' (usage: callgrind.sh [--kernel SERIES] [--lib DIR] [--threaded] [--flood])" 2 ;;
    esac
done
kernel_setup
install_build_deps
apt_install libdlm-dev valgrind file cpio busybox-static

pairs=${DLM_CALLGRIND_PAIRS:-20000}
case "$pairs" in '' | *[!0-9]*) die "DLM_CALLGRIND_PAIRS must be a number" 2 ;; esac
[ -n "$lib" ] || lib=$(capi/build-libs.sh -o target/capi) || die "capi/build-libs.sh failed"
out=$GUEST_OUT/callgrind
mkdir -p "$out"
ci/kernel/fetch.sh >&2
bins=$(ci/kernel/build.sh) || die "building the static controller failed"
controller=${bins%%$'\n'*}

if [ "$variant" = thr ]; then
    gcc -O2 -g -Wall -Wextra -Werror -DBENCH_THREADED -D_REENTRANT -o "$out/$prog" \
        "ci/kernel/$prog.c" -ldlm -lpthread
else
    gcc -O2 -g -Wall -Wextra -Werror -o "$out/$prog" "ci/kernel/$prog.c" -ldlm_lt
fi
init=$out/initramfs.cpio
ci/kernel/initramfs.sh -o "$init" --controller "$controller" "$out/$prog" >&2
ci/kernel/add-lib.sh "$init" "$lib"

# valgrind and the callgrind tool, at their host paths, as one more cpio.
stage=$(mktemp -d "${TMPDIR:-/tmp}/dlm-callgrind.XXXXXX")
trap 'rm -rf "$stage"' EXIT
for f in /usr/bin/valgrind.bin /usr/libexec/valgrind/callgrind-amd64-linux \
    /usr/libexec/valgrind/vgpreload_core-amd64-linux.so /usr/libexec/valgrind/default.supp \
    $(ldd /usr/bin/valgrind.bin | awk '/=> \// { print $3 } /^\t\// { print $1 }'); do
    mkdir -p "$stage$(dirname "$f")"
    cp -L "$f" "$stage$f"
done
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >>"$init"

# The guest expands its own variables: the single quotes are meant.
# shellcheck disable=SC2016
guest_cmd='dmesg -n 1
fail=0
for who in debian ours; do
    lp=""
    [ "$who" = ours ] && lp=/opt/dlm-rs/lib
    for n in 1000 '"$((pairs + 1000))"'; do
        LD_LIBRARY_PATH=$lp /usr/bin/valgrind.bin -q --tool=callgrind '"${DLM_CALLGRIND_ARGS:-}"' --callgrind-out-file=/tmp/cg.$who.$n \
            '"$prog"' $who cg-$who-$n $n || fail=1
        echo "CGBEGIN $who $n"
        gzip -c /tmp/cg.$who.$n | base64
        echo "CGEND $who $n"
    done
done
exit $fail'

status=0
ci/kernel/run.sh --quiet --initramfs "$init" --timeout "${DLM_CALLGRIND_TIMEOUT:-1800}" \
    -- sh -c "$guest_cmd" || status=$?
log=$out/serial.log
tr -d '\r' <"$GUEST_OUT/qemu-serial.log" >"$log"
[ "$status" = 0 ] || { tail -30 "$log"; die "the guest run failed (status $status)"; }
for who in debian ours; do
    for n in 1000 $((pairs + 1000)); do
        awk -v b="CGBEGIN $who $n" -v e="CGEND $who $n" '$0 == e { p = 0 } p { print } $0 == b { p = 1 }' \
            "$log" | base64 -d | gunzip >"$out/callgrind.$who.$n" ||
            die "no callgrind output for $who ($n pairs) in $log"
    done
done

# Inclusive counts of each function, the difference of the two runs
# divided into instructions a pair (start-up and tear-down cancel out).
for who in debian ours; do
    echo "== $who: user instructions a $([ "$prog" = bench-flood ] && echo request || echo pair) (inclusive, callgrind, $pairs of them; ${variant})"
    for n in 1000 $((pairs + 1000)); do
        callgrind_annotate --inclusive=yes --threshold=100 "$out/callgrind.$who.$n" 2>/dev/null |
            awk '/^ *[0-9,]+ .*[^ ]:/ { c = $1; gsub(/,/, "", c); $1 = ""; sub(/^ /, ""); sub(/ \[[^]]*\]$/, ""); print c "\t" $0 }' \
                >"$out/fn.$who.$n"
    done
    # bench-libdlm runs 1% more pairs as its warm-up.
    extra=$(( (pairs + 1000 + (pairs + 1000) / 100) - (1000 + 1000 / 100) ))
    awk -F'\t' -v pairs="$extra" 'NR == FNR { base[$2] = $1; next }
        { d = ($1 - base[$2]) / pairs; if (d >= 1) printf "%8.1f  %s\n", d, $2 }' \
        "$out/fn.$who.1000" "$out/fn.$who.$((pairs + 1000))" | sort -rn | awk 'NR <= 40'
done
echo "callgrind.sh: outputs in $out"
