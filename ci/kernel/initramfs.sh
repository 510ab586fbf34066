#!/usr/bin/env bash
# Build the guest's initramfs (cpio newc, uncompressed: under TCG unpacking
# is cheaper than decompressing):
#
#   ci/kernel/initramfs.sh [--kernel 6.1|6.12] [-o OUT] [--controller BIN] [BIN...]
#
#   /bin/busybox (+ /bin/sh)       busybox-static; /init installs the applets
#   /init                          ci/kernel/init.sh
#   /lib/modules/*.ko              dlm.ko and its dependencies, from
#                                  ci/kernel/fetch.sh for the kernel series
#   /lib/modules/load-order        their names, dependencies first
#   /bin/dlm-controld              --controller BIN (default: none)
#   /bin/<name>                    each BIN given
#
# The kernel series is DLM_KERNEL's (default 6.1; see ci/lib.sh). OUT
# defaults to ci/out/linux-<series>/initramfs.cpio. Static binaries are copied as
# they are; for a dynamic one, the libraries `ldd` lists and libgcc_s.so.1
# (glibc dlopens it for thread cancellation) are copied too.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=ci/lib.sh
. "$here/../lib.sh"

out=""
controller=""
bins=()
while [ $# -gt 0 ]; do
    case "$1" in
    --kernel) DLM_KERNEL=$2; shift 2 ;;
    -o) out=$2; shift 2 ;;
    --controller) controller=$2; shift 2 ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    --) shift; bins+=("$@"); break ;;
    -*) die "unknown option $1" 2 ;;
    *) bins+=("$1"); shift ;;
    esac
done

kernel_setup
out=${out:-$GUEST_OUT/initramfs.cpio}
[ -s "$KERNEL_DIR/modules" ] || die "$KERNEL_DIR/modules missing; run ci/kernel/fetch.sh --kernel $DLM_KERNEL"
mapfile -t modules <"$KERNEL_DIR/modules"
for m in "${modules[@]}"; do
    [ -s "$KERNEL_DIR/$m" ] || die "$KERNEL_DIR/$m missing; run ci/kernel/fetch.sh --kernel $DLM_KERNEL"
done
busybox=$(command -v busybox || true)
if [ -z "$busybox" ] || ! file -L "$busybox" | grep -q 'statically linked'; then
    busybox=/bin/busybox
fi
file -L "$busybox" | grep -q 'statically linked' ||
    die "no static busybox (apt-get install busybox-static)"

stage=$(mktemp -d "${TMPDIR:-/tmp}/dlm-initramfs.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,sbin,lib/modules,lib64,proc,sys,dev,tmp,run,ci,etc}
cp "$busybox" "$stage/bin/busybox"
ln -s busybox "$stage/bin/sh"
install -m 0755 "$here/init.sh" "$stage/init"
for m in "${modules[@]}"; do
    cp "$KERNEL_DIR/$m" "$stage/lib/modules/"
done
printf '%s\n' "${modules[@]}" >"$stage/lib/modules/load-order"
echo "root:x:0:0:root:/root:/bin/sh" >"$stage/etc/passwd"
echo "root:x:0:" >"$stage/etc/group"

# Copy a binary, and for a dynamic one its libraries at their host paths.
add_bin() {
    local src=$1 dst=$2
    [ -x "$src" ] || die "$src is not an executable"
    install -m 0755 "$src" "$stage/bin/$dst"
    if file -L "$src" | grep -q 'dynamically linked'; then
        local lib
        for lib in $(ldd "$src" | awk '/=> \// { print $3 } /^\t\// { print $1 }') \
            "$(gcc -print-file-name=libgcc_s.so.1 2>/dev/null || true)"; do
            [ -f "$lib" ] || continue
            mkdir -p "$stage$(dirname "$lib")"
            cp -L "$lib" "$stage$lib"
        done
        # glibc's dlopen of libgcc_s looks in the default library path.
        mkdir -p "$stage/lib/x86_64-linux-gnu"
        cp -L "$(gcc -print-file-name=libgcc_s.so.1)" "$stage/lib/x86_64-linux-gnu/" 2>/dev/null || true
    fi
}

[ -n "$controller" ] && add_bin "$controller" dlm-controld
for b in ${bins[@]+"${bins[@]}"}; do
    add_bin "$b" "$(basename "$b")"
done

mkdir -p "$(dirname "$out")"
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort |
    cpio -o -H newc -R 0:0 --quiet) >"$out.tmp"
mv "$out.tmp" "$out"
echo "initramfs.sh: $out ($(du -h "$out" | cut -f1)): Linux $(cat "$KERNEL_DIR/version"), busybox, ${modules[*]}${controller:+, dlm-controld}${bins[*]:+, ${bins[*]##*/}}"
