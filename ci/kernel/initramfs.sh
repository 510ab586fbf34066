#!/usr/bin/env bash
# Build the guest's initramfs (cpio newc, uncompressed: under TCG unpacking
# is cheaper than decompressing):
#
#   ci/kernel/initramfs.sh [-o OUT] [--controller BIN] [BIN...]
#
#   /bin/busybox (+ /bin/sh)       busybox-static; /init installs the applets
#   /init                          ci/kernel/init.sh
#   /lib/modules/{configfs,dlm}.ko from ci/kernel/fetch.sh
#   /bin/dlm-controld              --controller BIN (default: none)
#   /bin/<name>                    each BIN given
#
# OUT defaults to ci/out/initramfs.cpio. Static binaries are copied as
# they are; for a dynamic one, the libraries `ldd` lists and libgcc_s.so.1
# (glibc dlopens it for thread cancellation) are copied too.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root_dir=$(cd "$here/../.." && pwd)
kdir="$root_dir/ci/out/kernel"

out="$root_dir/ci/out/initramfs.cpio"
controller=""
bins=()
while [ $# -gt 0 ]; do
    case "$1" in
    -o) out=$2; shift 2 ;;
    --controller) controller=$2; shift 2 ;;
    -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; bins+=("$@"); break ;;
    -*) echo "initramfs.sh: unknown option $1" >&2; exit 2 ;;
    *) bins+=("$1"); shift ;;
    esac
done

for f in "$kdir/configfs.ko" "$kdir/dlm.ko"; do
    [ -s "$f" ] || { echo "initramfs.sh: $f missing; run ci/kernel/fetch.sh" >&2; exit 1; }
done
busybox=$(command -v busybox || true)
if [ -z "$busybox" ] || ! file -L "$busybox" | grep -q 'statically linked'; then
    busybox=/bin/busybox
fi
file -L "$busybox" | grep -q 'statically linked' ||
    { echo "initramfs.sh: no static busybox (apt-get install busybox-static)" >&2; exit 1; }

stage=$(mktemp -d "${TMPDIR:-/tmp}/dlm-initramfs.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,sbin,lib/modules,lib64,proc,sys,dev,tmp,run,ci,etc}
cp "$busybox" "$stage/bin/busybox"
ln -s busybox "$stage/bin/sh"
install -m 0755 "$here/init.sh" "$stage/init"
cp "$kdir/configfs.ko" "$kdir/dlm.ko" "$stage/lib/modules/"
echo "root:x:0:0:root:/root:/bin/sh" >"$stage/etc/passwd"
echo "root:x:0:" >"$stage/etc/group"

# Copy a binary, and for a dynamic one its libraries at their host paths.
add_bin() {
    local src=$1 dst=$2
    [ -x "$src" ] || { echo "initramfs.sh: $src is not an executable" >&2; exit 1; }
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
echo "initramfs.sh: $out ($(du -h "$out" | cut -f1)): busybox, configfs.ko, dlm.ko${controller:+, dlm-controld}${bins[*]:+, ${bins[*]##*/}}"
