#!/usr/bin/env bash
# The first kernel DLM test, end to end: fetch the Debian kernel, build the
# static binaries, build the initramfs, boot it in QEMU and run
# dlm-guest-smoke there (after /init has started dlm-controld).
#
#   ci/kernel/smoke.sh [--kernel 6.1|6.12] [--timeout SECS]
#
# The kernel series is DLM_KERNEL's (default 6.1; see ci/lib.sh). Exits
# with the guest test's status; the console is in
# ci/out/linux-<series>/qemu-serial.log.
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh
timeout_s=120
while [ $# -gt 0 ]; do
    case "$1" in
    --kernel) DLM_KERNEL=$2; shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    *) die "unknown argument '$1' (usage: smoke.sh [--kernel SERIES] [--timeout SECS])" 2 ;;
    esac
done
kernel_setup

ci/kernel/fetch.sh
ci/kernel/build.sh >ci/out/static-bins.txt
mapfile -t bins <ci/out/static-bins.txt
ci/kernel/initramfs.sh --controller "${bins[0]}" "${bins[@]:1}"
ci/kernel/run.sh --timeout "$timeout_s" -- dlm-guest-smoke
