#!/usr/bin/env bash
# The benchmark table, all rows measured in one guest boot (TCG figures
# are only comparable within a boot): lock+unlock pairs of EX on one
# resource, one thread, SMP=1. Every row runs five times, in five
# interleaved rounds, and the best run counts (TCG figures wander by tens
# of percent between runs).
#
#   ci/kernel/bench.sh [--kernel 6.1|6.12]  100,000 pairs a row (kernel
#                                           series: DLM_KERNEL's, default 6.1)
#   DLM_BENCH_ITERATIONS=N ci/kernel/bench.sh
#   DLM_BENCH_ICOUNT=0 ci/kernel/bench.sh   without the instruction counts
#
# Rows:
#   raw device        write()+read() per operation, std::fs::File + dlm_proto::records (the floor)
#   Rust API          Lockspace::lock + Lock::unlock, Backend::Kernel
#   Rust API, release the same, built with the release profile instead of dist
#   libdlm_lt         Debian's lite libdlm, dlm_ls_lock_wait + dlm_ls_unlock_wait
#   libdlm            Debian's threaded libdlm (dlm_ls_pthread_init), same calls
#   Rust API/dlmd     Lockspace::lock + Lock::unlock, Backend::Fallback, dlmd in the guest
#
# and the C ABI's rows: the same C binaries, built once against Debian's
# libdlm-dev, run with Debian's libraries and with dlm-rs's (LD_LIBRARY_PATH
# at /opt/dlm-rs/lib, where DIR's libdlm.so.3 and libdlm_lt.so.3 go):
#   ours lt / thr     bench-libdlm.c (_wait pairs) on dlm-rs's libdlm_lt / libdlm
#   flood lt / thr    bench-flood.c: DLM_BENCH_FLOOD (default 10,000) async EX
#                     requests on as many resources, unlocked from their ASTs,
#                     Debian's and ours (lite: poll + dlm_dispatch; threaded:
#                     the AST thread)
# with ratios ours/Debian's and the issue-11 targets.
#
#   ci/kernel/bench.sh --lib DIR            dlm-rs's libraries from DIR (default:
#                                           capi/build-libs.sh, into target/capi)
#
# Builds the static Rust binaries (ci/kernel/build.sh --bench: the bench
# rows and dlmd with the `dist` profile, release + LTO, as shipped), compiles
# ci/kernel/bench-libdlm.c against Debian's libdlm-dev (installed if
# missing), puts both into ci/out/linux-<series>/initramfs-bench.cpio with the libraries
# they need, boots once and prints the table. Then ci/kernel/icount.sh
# counts the same rows' guest instructions per pair with a TCG plugin,
# figures that do not wander with the host's load (DLM_ICOUNT_PAIRS sets
# its pairs a row, DLM_BENCH_ITERATIONS by default). The targets are
# printed, never asserted. Takes about eight minutes under TCG.
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh
lib=""
while [ $# -gt 0 ]; do
    case "$1" in
    --kernel) DLM_KERNEL=$2; shift 2 ;;
    --lib) lib=$(cd "$2" && pwd); shift 2 ;;
    *) die "unknown argument '$1' (usage: bench.sh [--kernel SERIES] [--lib DIR])" 2 ;;
    esac
done
kernel_setup
install_build_deps
apt_install libdlm-dev file cpio bc

iters=${DLM_BENCH_ITERATIONS:-100000}
flood=${DLM_BENCH_FLOOD:-10000}
[ -n "$lib" ] || lib=$(capi/build-libs.sh -o target/capi) || die "capi/build-libs.sh failed"
out=$GUEST_OUT
mkdir -p "$out/bench"

ci/kernel/fetch.sh
ci/kernel/build.sh --bench >"$out/bench/static-bins.txt" || die "building the static bench binaries failed"
mapfile -t bins <"$out/bench/static-bins.txt"

# Debian's libdlm, both variants, as dynamic programs: initramfs.sh copies
# the libraries ldd lists (libdlm.so.3 / libdlm_lt.so.3, libc, the loader)
# and libgcc_s.so.1.
cflags=(-O2 -Wall -Wextra -Werror)
gcc "${cflags[@]}" -DBENCH_THREADED -D_REENTRANT -o "$out/bench/bench-libdlm" \
    ci/kernel/bench-libdlm.c -ldlm -lpthread
gcc "${cflags[@]}" -o "$out/bench/bench-libdlm-lt" ci/kernel/bench-libdlm.c -ldlm_lt
gcc "${cflags[@]}" -DBENCH_THREADED -D_REENTRANT -o "$out/bench/bench-flood" \
    ci/kernel/bench-flood.c -ldlm -lpthread
gcc "${cflags[@]}" -o "$out/bench/bench-flood-lt" ci/kernel/bench-flood.c -ldlm_lt

ci/kernel/initramfs.sh -o "$out/initramfs-bench.cpio" --controller "${bins[0]}" \
    "${bins[@]:1}" "$out/bench/bench-libdlm" "$out/bench/bench-libdlm-lt" \
    "$out/bench/bench-flood" "$out/bench/bench-flood-lt"
ci/kernel/add-lib.sh "$out/initramfs-bench.cpio" "$lib"

# Each row prints "BENCH <label> <iterations> <seconds>". Kernel messages
# stay off the console so they cannot split those lines. The guest expands
# its own variables, so the single quotes are meant.
# dlmd's socket gets a directory of its own: /tmp itself is shared (mode
# 1777), and dlmd and its clients refuse a directory others can write to.
# shellcheck disable=SC2016
guest_cmd='dmesg -n 1
n='"$iters"'
fail=0
dlmd --socket /tmp/dlm/dlmd.sock --log-level warn &
dlmd_pid=$!
i=0
while [ ! -S /tmp/dlm/dlmd.sock ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
ours=/opt/dlm-rs/lib
for p in bench-libdlm-lt bench-libdlm bench-flood-lt bench-flood; do
    echo "LIBS $p $(LD_LIBRARY_PATH=$ours LD_TRACE_LOADED_OBJECTS=1 $(command -v $p) | grep -o "libdlm[^ ]* => [^ ]*" | tr "\n" " ")"
done
for round in 1 2 3 4 5; do
    dlm-guest-bench raw $n || fail=1
    dlm-guest-bench api $n || fail=1
    dlm-guest-bench-release api $n rust-api-release || fail=1
    bench-libdlm-lt libdlm_lt bench-lt $n || fail=1
    bench-libdlm libdlm bench-thr $n || fail=1
    LD_LIBRARY_PATH=$ours bench-libdlm-lt ours-lt bench-olt $n || fail=1
    LD_LIBRARY_PATH=$ours bench-libdlm ours-thr bench-othr $n || fail=1
    bench-flood-lt flood-lt flood-lt '"$flood"' || fail=1
    bench-flood flood-thr flood-thr '"$flood"' || fail=1
    LD_LIBRARY_PATH=$ours bench-flood-lt flood-ours-lt flood-olt '"$flood"' || fail=1
    LD_LIBRARY_PATH=$ours bench-flood flood-ours-thr flood-othr '"$flood"' || fail=1
    dlm-guest-bench fallback $n /tmp/dlm/dlmd.sock || fail=1
done
kill $dlmd_pid
wait $dlmd_pid
exit $fail'

status=0
ci/kernel/run.sh --quiet --initramfs "$out/initramfs-bench.cpio" \
    --timeout "${DLM_BENCH_TIMEOUT:-900}" -- sh -c "$guest_cmd" || status=$?
cp "$out/qemu-serial.log" "$out/bench/serial.log"
tr -d '\r' <"$out/bench/serial.log" | grep -E '^BENCH ' >"$out/bench/results.txt" || true
tr -d '\r' <"$out/bench/serial.log" | grep -E 'FAIL|bench-libdlm:|bench-flood:' || true
# Which libdlm each C program loaded with LD_LIBRARY_PATH at ours.
tr -d '\r' <"$out/bench/serial.log" | grep -E '^LIBS ' | sed 's/^LIBS /bench.sh: with ours: /'
if tr -d '\r' <"$out/bench/serial.log" | grep -E '^LIBS ' | grep -qv '=> /opt/dlm-rs/lib/'; then
    echo "bench.sh: a C program did not load dlm-rs's libdlm from /opt/dlm-rs/lib" >&2
    status=1
fi

# --- the table ---------------------------------------------------------------
awk -v iters="$iters" -v flood="$flood" '
function row(key, what,    r) {
    if (!(key in rate)) { printf "| %-62s | %9s | %6s |\n", what, "(failed)", "-"; return }
    r = (floor > 0) ? sprintf("%.2fx", rate[key] / floor) : "-"
    printf "| %-62s | %9.0f | %6s |\n", what, rate[key], r
}
{ r = $3 / $4; if (!($2 in rate) || r > rate[$2]) rate[$2] = r }
END {
    floor = ("raw" in rate) ? rate["raw"] : 0
    printf "\nLock+unlock pairs/s in one guest boot (TCG, SMP=1, one resource, %d pairs a run, best of 5 interleaved rounds)\n\n", iters
    printf "| %-62s | %9s | %6s |\n", "path", "pairs/s", "x raw"
    printf "|%s|%s|%s|\n", "----------------------------------------------------------------", "-----------", "--------"
    row("raw", "raw device: write()+read() a call, Rust std::fs::File (floor)")
    row("rust-api", "dlm-rs API, kernel: Lockspace::lock + Lock::unlock")
    row("rust-api-release", "  the same, release profile (no LTO)")
    row("libdlm_lt", "Debian libdlm_lt: dlm_ls_lock_wait + dlm_ls_unlock_wait")
    row("libdlm", "Debian libdlm (threaded): dlm_ls_lock_wait + _unlock_wait")
    row("rust-api-fallback", "dlm-rs API, fallback: dlmd in the same guest")
    printf "\nTargets (printed, not asserted):\n"
    if (("rust-api" in rate) && floor > 0)
        printf "  Rust API >= 0.9x the raw floor:        %.2fx  %s\n", rate["rust-api"] / floor, (rate["rust-api"] >= 0.9 * floor) ? "met" : "NOT met"
    if (("rust-api" in rate) && ("libdlm" in rate))
        printf "  Rust API >= 4x threaded libdlm:        %.2fx  %s\n", rate["rust-api"] / rate["libdlm"], (rate["rust-api"] >= 4 * rate["libdlm"]) ? "met" : "NOT met"
    printf "\nThe C ABI: the same C binaries on Debian'"'"'s libdlm and on dlm-rs'"'"'s (LD_LIBRARY_PATH), same boot, best of 5\n\n"
    printf "| %-58s | %9s | %9s | %11s |\n", "row (operations a second)", "Debian", "dlm-rs", "dlm-rs/Deb."
    printf "|%s|%s|%s|%s|\n", "------------------------------------------------------------", "-----------", "-----------", "-------------"
    crow("libdlm_lt", "ours-lt", "lite: dlm_ls_lock_wait + dlm_ls_unlock_wait pairs/s")
    crow("libdlm", "ours-thr", "threaded (dlm_ls_pthread_init): the same pairs/s")
    crow("flood-lt", "flood-ours-lt", sprintf("lite flood: %d requests, unlock from AST, req/s", flood))
    crow("flood-thr", "flood-ours-thr", sprintf("threaded flood: %d requests, the AST thread, req/s", flood))
    printf "\nTargets of the C ABI (issue 11 §4; printed, not asserted):\n"
    target("ours-lt", "libdlm_lt", 1, "lite _wait >= 1.0x Debian libdlm_lt:    ")
    target("ours-thr", "libdlm", 3, "threaded _wait >= 3x Debian libdlm:     ")
    target("flood-ours-lt", "flood-lt", 1, "lite flood >= 1.0x Debian libdlm_lt:    ")
    target("flood-ours-thr", "flood-thr", 1, "threaded flood >= 1.0x Debian libdlm:   ")
}
function crow(deb, ours, what,    r) {
    r = ((deb in rate) && (ours in rate)) ? sprintf("%.2fx", rate[ours] / rate[deb]) : "-"
    printf "| %-58s | %9s | %9s | %11s |\n", what, (deb in rate) ? sprintf("%.0f", rate[deb]) : "(failed)",
        (ours in rate) ? sprintf("%.0f", rate[ours]) : "(failed)", r
}
function target(ours, deb, want, what) {
    if ((ours in rate) && (deb in rate))
        printf "  %s %.2fx  %s\n", what, rate[ours] / rate[deb], (rate[ours] >= want * rate[deb]) ? "met" : "NOT met"
    else
        printf "  %s (a row failed)  NOT met\n", what
}' "$out/bench/results.txt"
echo
echo "bench.sh: serial log in $out/bench/serial.log"
if [ "${DLM_BENCH_ICOUNT:-1}" != 0 ]; then
    DLM_ICOUNT_PAIRS=${DLM_ICOUNT_PAIRS:-$iters} ci/kernel/icount.sh || status=1
fi
exit "$status"
