#!/usr/bin/env bash
# Build the cluster guests' initramfs for one kernel series: busybox, the
# modules a guest needs with their dependencies, and /init (init-early.sh),
# which loads them, mounts the rootfs image (ci/cluster/rootfs.sh) from
# /dev/vda and switches to it.
#
#   ci/cluster/initramfs.sh [--kernel 6.1|6.12]
#
#   ci/out/cluster/linux-<series>/initramfs.cpio
#
# The kernel is ci/kernel/fetch.sh's (run here); the modules come from the
# same package and version (its `package` file), downloaded once more with
# `apt-get download` and cached in ci/out/cluster/linux-<series>/modules/
# keyed by that package, its version and the module list:
#   virtio_pci virtio_blk virtio_net   the guest's disks and network
#   crc32c_generic ext4                the rootfs (ext4 loads crc32c)
#   dlm                                (with configfs)
#   dm_mod                             lvm's device mapper
# Each module's dependencies are read from its own modinfo (the .deb ships
# no modules.dep); `depmod` then writes modules.dep for the copy of the
# tree the rootfs gets, so that modprobe works there too.
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh

while [ $# -gt 0 ]; do
    case "$1" in
    --kernel) DLM_KERNEL=$2; shift 2 ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (usage: initramfs.sh [--kernel SERIES])" 2 ;;
    esac
done
kernel_setup
ci/kernel/fetch.sh --kernel "$DLM_KERNEL" >/dev/null
apt_install kmod cpio busybox-static
wanted=(virtio_pci virtio_blk virtio_net crc32c_generic ext4 dlm dm_mod)

out=ci/out/cluster/linux-$DLM_KERNEL
mods=$out/modules
read -r pkg pkgver <"$KERNEL_DIR/package"
kver=$(cat "$KERNEL_DIR/version")
key="$pkg $pkgver ${wanted[*]}"
have_modules() {
    [ "$(cat "$mods/key" 2>/dev/null)" = "$key" ] && [ -s "$mods/load-order" ] &&
        [ -s "$mods/lib/modules/$kver/modules.dep" ] || return 1
    local m
    while read -r m; do
        [ -s "$mods/lib/modules/$kver/$m" ] || return 1
    done <"$mods/load-order"
}

if ! have_modules; then
    mkdir -p "$out"
    work=$(mktemp -d "$out/.modules.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    echo "initramfs.sh: fetching $pkg $pkgver for its modules"
    (cd "$work" && apt-get download -q -o APT::Sandbox::User="$(id -un)" "$pkg=$pkgver" >/dev/null) ||
        die "apt-get download $pkg=$pkgver failed (ci/kernel/fetch.sh --kernel $DLM_KERNEL updates the lists)"
    dpkg-deb -x "$work"/*.deb "$work/deb" || die "dpkg-deb -x of $pkg failed"
    src=$work/deb/lib/modules/$kver
    [ -d "$src/kernel" ] || die "$pkg has no lib/modules/$kver/kernel"
    dst=$work/tree/lib/modules/$kver
    mkdir -p "$dst"
    order=()
    seen=" "
    # Add module NAME (after its dependencies) to the tree, decompressed.
    add() {
        local name=${1//-/_} f rel dep
        case "$seen" in *" $name "*) return 0 ;; esac
        seen+="$name "
        if grep -qE "/${name//_/[-_]}\.ko$" "$src/modules.builtin" 2>/dev/null; then
            return 0
        fi
        f=$(find "$src/kernel" -name "${name//_/[-_]}.ko*" -print -quit)
        [ -n "$f" ] || die "$pkg has no module $name"
        rel=${f#"$src/"}
        rel=${rel%%.ko*}.ko
        mkdir -p "$(dirname "$dst/$rel")"
        case "$f" in
        *.ko) cp "$f" "$dst/$rel" ;;
        *.ko.xz) xz -dc "$f" >"$dst/$rel" ;;
        *.ko.zst) zstd -dcq "$f" >"$dst/$rel" ;;
        *.ko.gz) gzip -dc "$f" >"$dst/$rel" ;;
        *) die "$f: unknown module compression" ;;
        esac || die "cannot decompress $f"
        for dep in $(modinfo -F depends "$dst/$rel" | tr ',' ' '); do
            add "$dep"
        done
        order+=("$rel")
    }
    for m in "${wanted[@]}"; do add "$m"; done
    cp "$src/modules.builtin" "$src/modules.order" "$dst/" 2>/dev/null || true
    [ -f "$src/modules.builtin.modinfo" ] && cp "$src/modules.builtin.modinfo" "$dst/"
    depmod -b "$work/tree" "$kver" || die "depmod for $kver failed"
    printf '%s\n' "${order[@]}" >"$work/tree/load-order"
    echo "$key" >"$work/tree/key"
    rm -rf "$mods"
    mv "$work/tree" "$mods"
    rm -rf "$work"
    trap - EXIT
    echo "initramfs.sh: $(wc -l <"$mods/load-order") modules of $kver in $mods"
fi

stage=$(mktemp -d "${TMPDIR:-/tmp}/dlm-cluster-initramfs.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,dev,proc,sys,newroot,lib/modules}
cp /bin/busybox "$stage/bin/busybox"
file -L "$stage/bin/busybox" | grep -q 'statically linked' || die "/bin/busybox is not static (busybox-static)"
ln -s busybox "$stage/bin/sh"
install -m 0755 ci/cluster/init-early.sh "$stage/init"
cp -a "$mods/lib/modules/$kver" "$stage/lib/modules/"
cp "$mods/load-order" "$stage/lib/modules/load-order"
echo "$kver" >"$stage/lib/modules/version"
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$out/initramfs.cpio.tmp"
mv "$out/initramfs.cpio.tmp" "$out/initramfs.cpio"
echo "initramfs.sh: $out/initramfs.cpio ($(du -h "$out/initramfs.cpio" | cut -f1)): Linux $kver, busybox, $(wc -l <"$mods/load-order") modules"
