#!/usr/bin/env bash
# The kernel DLM job: the real Linux DLM (Debian's kernel, dlm.ko) in a
# QEMU guest, driven by dlm-controld --single-node. Runnable by hand;
# CI runs it from ci/test.sh. Needs no KVM (TCG on 2 cores: about half a
# minute from a cold cache, a few seconds warm) and no root beyond the
# apt-get installs.
#
#   ci/kernel.sh [--kernel 6.1|6.12]
#                              fetch, build static binaries, initramfs, smoke,
#                              the client API on the kernel backend
#   DLM_KERNEL=6.1|6.12        the same as --kernel (default 6.1; ci/lib.sh)
#   DLM_KERNEL_TIMEOUT=SECS    guest time limit (default 120)
#
# Artifacts stay in ci/out/: the kernel cache in kernel/, the static
# binaries in target-static/, the series' initramfs and serial log in
# linux-<series>/.
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/lib.sh
while [ $# -gt 0 ]; do
    case "$1" in
    --kernel) DLM_KERNEL=$2; shift 2 ;;
    *) die "unknown argument '$1' (usage: kernel.sh [--kernel SERIES])" 2 ;;
    esac
done
kernel_setup
install_build_deps

t0=$(date +%s)
timed() {
    local name=$1 s
    shift
    s=$(date +%s)
    echo
    echo "=== kernel $DLM_KERNEL: $name ==="
    "$@" || die "kernel $DLM_KERNEL: $name: failed (exit status $?)"
    echo "=== kernel $DLM_KERNEL: $name: $(($(date +%s) - s)) s ==="
}

timed "fetch the Debian kernel and QEMU" ci/kernel/fetch.sh
mkdir -p ci/out
timed "build static guest binaries" sh -c 'ci/kernel/build.sh >ci/out/static-bins.txt'
mapfile -t bins <ci/out/static-bins.txt
timed "initramfs" ci/kernel/initramfs.sh --controller "${bins[0]}" "${bins[@]:1}"
timed "boot and run dlm-guest-smoke" \
    ci/kernel/run.sh --timeout "${DLM_KERNEL_TIMEOUT:-120}" -- dlm-guest-smoke
timed "boot and run dlm-guest-client" \
    ci/kernel/run.sh --timeout "${DLM_KERNEL_TIMEOUT:-120}" -- dlm-guest-client
echo
echo "=== kernel $DLM_KERNEL: all passed in $(($(date +%s) - t0)) s ==="
