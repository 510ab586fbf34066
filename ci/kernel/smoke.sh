#!/usr/bin/env bash
# The first kernel DLM test, end to end: fetch the Debian kernel, build the
# static binaries, build the initramfs, boot it in QEMU and run
# dlm-guest-smoke there (after /init has started dlm-controld).
#
#   ci/kernel/smoke.sh [--timeout SECS]
#
# Exits with the guest test's status; the console is in
# ci/out/qemu-serial.log.
set -euo pipefail
cd "$(dirname "$0")/../.."
timeout_s=120
[ "${1:-}" = --timeout ] && timeout_s=$2

ci/kernel/fetch.sh
mkdir -p ci/out
ci/kernel/build.sh >ci/out/static-bins.txt
mapfile -t bins <ci/out/static-bins.txt
ci/kernel/initramfs.sh --controller "${bins[0]}" "${bins[@]:1}"
ci/kernel/run.sh --timeout "$timeout_s" -- dlm-guest-smoke
