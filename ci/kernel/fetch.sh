#!/usr/bin/env bash
# Fetch what the QEMU kernel tests need, once:
#   - the host packages qemu-system-x86, busybox-static, cpio, xz-utils;
#   - the guest kernel: the linux-image package that linux-image-amd64
#     currently depends on, downloaded with `apt-get download` (never
#     installed), from which we keep
#       ci/out/kernel/vmlinux      the ELF kernel (QEMU boots it via PVH;
#                                  skips the ~3 s XZ decompression per boot)
#       ci/out/kernel/configfs.ko  \ decompressed modules; dlm.ko needs
#       ci/out/kernel/dlm.ko       / only configfs.ko
#       ci/out/kernel/version      the kernel release, e.g. 6.1.0-56-amd64
#
# Idempotent: with everything in place it only checks and returns. Set
# DLM_KERNEL_PKG=linux-image-<release> to pin another kernel package.
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh

# Like ci/lib.sh's apt_install, but without Recommends: qemu-system-x86
# recommends the GTK/SDL front ends, OVMF and more (about 160 packages);
# a headless TCG guest needs none of them.
need=()
for p in qemu-system-x86 busybox-static cpio xz-utils file; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
    echo "fetch.sh: installing ${need[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

out=ci/out/kernel
mkdir -p "$out"

# The kernel package linux-image-amd64 depends on ("Depends:
# linux-image-6.1.0-NN-amd64"), or DLM_KERNEL_PKG, and its version.
resolve() {
    pkg="${DLM_KERNEL_PKG:-}"
    if [ -z "$pkg" ]; then
        pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
            awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
    fi
    pkgver=""
    [ -n "$pkg" ] && pkgver=$(apt-cache show --no-all-versions "$pkg" 2>/dev/null |
        awk '$1 == "Version:" { print $2; exit }')
    [ -n "$pkg" ] && [ -n "$pkgver" ]
}
if ! resolve; then
    # The package lists may never have been fetched on this machine.
    as_root apt-get update -qq
    resolve || { echo "fetch.sh: cannot tell which kernel package to use (linux-image-amd64's dependency)" >&2; exit 1; }
fi

cached() {
    [ -f "$out/version" ] && [ "$(cat "$out/version")" = "${pkg#linux-image-}" ] &&
        [ "$(cat "$out/package" 2>/dev/null)" = "$pkg $pkgver" ] &&
        [ -s "$out/vmlinux" ] && [ -s "$out/dlm.ko" ] && [ -s "$out/configfs.ko" ]
}
if cached; then
    echo "fetch.sh: kernel $pkg $pkgver already in $out"
    exit 0
fi

work=$(mktemp -d "$out/.fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT
# The download runs as the calling user (root in CI): apt's _apt sandbox
# user could not write to our private temporary directory.
get() {
    echo "fetch.sh: fetching $pkg $pkgver"
    (cd "$work" && apt-get download -q -o APT::Sandbox::User="$(id -un)" "$pkg=$pkgver" >/dev/null)
}
if ! get; then
    # Stale lists name a version (or an ABI) the mirror no longer has.
    as_root apt-get update -qq
    resolve || { echo "fetch.sh: no kernel package after apt-get update" >&2; exit 1; }
    cached && { echo "fetch.sh: kernel $pkg $pkgver already in $out"; exit 0; }
    get
fi
kver=${pkg#linux-image-}
deb=$(ls "$work"/*.deb)
dpkg-deb -x "$deb" "$work/root"

vmlinuz="$work/root/boot/vmlinuz-$kver"
[ -f "$vmlinuz" ] || { echo "fetch.sh: $deb has no /boot/vmlinuz-$kver" >&2; exit 1; }
# Debian's bzImage carries an XZ-compressed ELF kernel: find the XZ magic
# and decompress from there. xz stops at the end of its stream and
# complains about the trailing bytes, hence the tolerant status check.
off=$(grep -abo $'\xfd7zXZ' "$vmlinuz" | head -1 | cut -d: -f1)
[ -n "$off" ] || { echo "fetch.sh: no XZ stream in $vmlinuz" >&2; exit 1; }
tail -c +$((off + 1)) "$vmlinuz" | xz -dc >"$work/vmlinux" 2>/dev/null || true
if ! head -c 4 "$work/vmlinux" | grep -q $'\x7fELF'; then
    echo "fetch.sh: the kernel extracted from $vmlinuz is not an ELF file" >&2
    exit 1
fi

moddir="$work/root/lib/modules/$kver/kernel"
for m in fs/configfs/configfs fs/dlm/dlm; do
    base=$(basename "$m")
    if [ -f "$moddir/$m.ko.xz" ]; then
        xz -dc "$moddir/$m.ko.xz" >"$work/$base.ko"
    elif [ -f "$moddir/$m.ko" ]; then
        cp "$moddir/$m.ko" "$work/$base.ko"
    else
        echo "fetch.sh: $pkg has no $m.ko (is CONFIG_${base^^}=m?)" >&2
        exit 1
    fi
done
cp "$work/root/boot/config-$kver" "$out/config" 2>/dev/null || true

mv "$work/vmlinux" "$out/vmlinux"
mv "$work/configfs.ko" "$out/configfs.ko"
mv "$work/dlm.ko" "$out/dlm.ko"
echo "$kver" >"$out/version"
echo "$pkg $pkgver" >"$out/package"
rm -rf "$work"
echo "fetch.sh: kernel $kver ready in $out ($(du -sh "$out" | cut -f1))"
