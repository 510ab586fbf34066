#!/usr/bin/env bash
# Build the cluster guests' root filesystem, once: Debian bookworm
# (debootstrap --variant=minbase) with the cluster stack from Debian's own
# packages, as an ext4 image that every guest boots read-write through a
# QEMU snapshot (its writes go to a throw-away overlay; the image is never
# changed):
#
#   ci/cluster/rootfs.sh [--force]
#
#   ci/out/cluster/rootfs/<key>.ext4   the image
#   ci/out/cluster/rootfs.ext4         a link to the current one
#   ci/out/cluster/rootfs/<key>.txt    what it holds: the packages and versions
#
# The packages: corosync, dlm-controld (with libdlmcontrol3), libdlm3, lvm2,
# lvm2-lockd, udev (libdlm finds its devices under /dev/misc, which only
# udev's rule 51-dlm.rules creates), kmod, iproute2, procps. The key is a
# hash of this script and the candidate version of each of those packages
# in the host's package lists, so a new Debian point release, or a change
# here, builds a new image; an unchanged key only checks the image is there.
# The kernel and its modules are not in the image: they come with the
# guest's initramfs (ci/cluster/initramfs.sh), one per kernel series.
#
# Needs root (debootstrap), about 2 minutes and 700 MB of disk while it
# runs; the image is about 400 MB.
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh

force=0
while [ $# -gt 0 ]; do
    case "$1" in
    --force) force=1; shift ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (usage: rootfs.sh [--force])" 2 ;;
    esac
done

suite=bookworm
mirror=${DLM_CLUSTER_MIRROR:-http://deb.debian.org/debian}
packages=(corosync dlm-controld libdlmcontrol3 libdlm3 lvm2 lvm2-lockd udev kmod iproute2 procps)
apt_install debootstrap e2fsprogs

# The key: this recipe and the versions the host's lists name.
versions() {
    local p v
    for p in "${packages[@]}"; do
        v=$(apt-cache policy "$p" 2>/dev/null | awk '$1 == "Candidate:" { print $2; exit }')
        [ -n "$v" ] && [ "$v" != "(none)" ] || return 1
        printf '%s %s\n' "$p" "$v"
    done
}
if ! list=$(versions); then
    as_root apt-get update -qq || die "apt-get update failed"
    list=$(versions) || die "the package lists name no version of one of: ${packages[*]}"
fi
key=$({ sha256sum <"$0"; printf '%s\n' "$list"; } | sha256sum | cut -c1-16)
top=ci/out/cluster
dir=$top/rootfs
img=$dir/$key.ext4
mkdir -p "$dir"
if [ "$force" = 0 ] && [ -s "$img" ] && [ -s "$dir/$key.txt" ]; then
    ln -sfn "rootfs/$key.ext4" "$top/rootfs.ext4"
    echo "rootfs.sh: $img is current ($(du -h "$img" | cut -f1))"
    exit 0
fi

t0=$(date +%s)
work=$(mktemp -d "$dir/.build.XXXXXX")
trap 'as_root rm -rf "$work"' EXIT
tree=$work/tree
echo "rootfs.sh: debootstrap $suite (minbase) with ${packages[*]}"
include=$(IFS=,; echo "${packages[*]}")
if ! as_root debootstrap --variant=minbase --include="$include" "$suite" "$tree" "$mirror" \
    >"$work/debootstrap.log" 2>&1; then
    tail -n 30 "$work/debootstrap.log" >&2
    die "debootstrap failed (log above)"
fi

# What a guest that boots once never needs: documentation, translations,
# apt's downloads and lists.
as_root rm -rf "$tree"/usr/share/doc/* "$tree"/usr/share/man/* "$tree"/usr/share/info/* \
    "$tree"/usr/share/locale/* "$tree"/var/cache/apt/archives/*.deb "$tree"/var/lib/apt/lists/* \
    "$tree"/var/log/*.log
# The image's record of what it holds, from its own dpkg database.
# shellcheck disable=SC2016 # dpkg-query expands the fields
as_root chroot "$tree" dpkg-query -W -f='${Package} ${Version}\n' >"$work/packages.txt"
for p in "${packages[@]}"; do
    grep -q "^$p " "$work/packages.txt" || die "debootstrap did not install $p"
done
[ -e "$tree/lib/udev/rules.d/51-dlm.rules" ] || [ -e "$tree/usr/lib/udev/rules.d/51-dlm.rules" ] ||
    die "the rootfs has no 51-dlm.rules (libdlm3's udev rule)"

# An ext4 image a quarter larger than the tree, filled from it by mke2fs
# (-d keeps owners, modes and device nodes). No metadata checksums: they
# would need the crc32c module before the root could be mounted.
kib=$(as_root du -sk "$tree" | cut -f1)
size=$(((kib * 5 / 4 + 65536) / 1024))
as_root mke2fs -q -t ext4 -O ^metadata_csum -L dlm-cluster -d "$tree" "$work/rootfs.ext4" "${size}M" ||
    die "mke2fs of the rootfs image failed"
{
    echo "# dlm-rs cluster guest rootfs, key $key, built $(date -u +%FT%TZ)"
    echo "# debootstrap --variant=minbase $suite $mirror; requested (host candidates):"
    printf '%s\n' "$list" | sed 's/^/#   /'
    cat "$work/packages.txt"
} >"$work/rootfs.txt"
mv "$work/rootfs.ext4" "$img"
mv "$work/rootfs.txt" "$dir/$key.txt"
ln -sfn "rootfs/$key.ext4" "$top/rootfs.ext4"
# Older images are not kept.
find "$dir" -maxdepth 1 -name '*.ext4' ! -name "$key.ext4" -delete
find "$dir" -maxdepth 1 -name '*.txt' ! -name "$key.txt" -delete
echo "rootfs.sh: $img (${size} MiB, $(wc -l <"$work/packages.txt") packages) in $(($(date +%s) - t0)) s"
