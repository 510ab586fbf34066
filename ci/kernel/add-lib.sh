#!/usr/bin/env bash
# Append dlm-rs's libdlm.so.3 and libdlm_lt.so.3 to a guest initramfs, as
# a second cpio archive (the kernel unpacks concatenated archives in
# order), under /opt/dlm-rs/lib, with the libraries they link:
#
#   ci/kernel/add-lib.sh INITRAMFS DIR
#
# DIR is what capi/build-libs.sh lays out (e.g. target/capi). A program
# then loads ours with LD_LIBRARY_PATH=/opt/dlm-rs/lib.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: add-lib.sh INITRAMFS DIR" >&2; exit 2; }
init=$1
lib=$2
stage=$(mktemp -d "${TMPDIR:-/tmp}/dlm-addlib.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/opt/dlm-rs/lib"
for so in libdlm.so.3 libdlm_lt.so.3; do
    [ -e "$lib/$so" ] || { echo "add-lib.sh: $lib/$so missing" >&2; exit 1; }
    cp -L "$lib/$so" "$stage/opt/dlm-rs/lib/$so"
    for dep in $(ldd "$lib/$so" | awk '/=> \// { print $3 } /^\t\// { print $1 }'); do
        [ -f "$dep" ] || continue
        mkdir -p "$stage$(dirname "$dep")"
        cp -L "$dep" "$stage$dep"
    done
done
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >>"$init"
