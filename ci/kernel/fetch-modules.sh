#!/usr/bin/env bash
# Extra kernel modules for a guest test, from the same kernel package as
# ci/kernel/fetch.sh's (run that first), with what they depend on:
#
#   ci/kernel/fetch-modules.sh [--kdir DIR] MODULE...
#
#   MODULE    a module's path under lib/modules/<kver>/kernel without .ko,
#             e.g. drivers/block/loop drivers/md/dm-mod
#   --kdir    fetch.sh's output directory (default ci/out/kernel)
#
# Writes DIR/extra/<name>.ko (decompressed) and DIR/extra/order: the
# modules' names, one a line, dependencies first: the order to insmod
# them in. Cached: with every module already there for the same kernel
# package, it only checks. Dependencies come from each module's own
# modinfo (the .deb ships no modules.dep).
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh

kdir=ci/out/kernel
mods=()
while [ $# -gt 0 ]; do
    case "$1" in
    --kdir) kdir=$2; shift 2 ;;
    -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) mods+=("$1"); shift ;;
    esac
done
[ ${#mods[@]} -gt 0 ] || { echo "usage: fetch-modules.sh [--kdir DIR] MODULE..." >&2; exit 2; }
[ -s "$kdir/package" ] || { echo "fetch-modules.sh: $kdir/package missing; run ci/kernel/fetch.sh" >&2; exit 1; }
apt_install kmod xz-utils

extra="$kdir/extra"
read -r pkg pkgver <"$kdir/package"
key="$pkg $pkgver ${mods[*]}"
if [ -f "$extra/key" ] && [ "$(cat "$extra/key")" = "$key" ] && [ -s "$extra/order" ]; then
    ok=1
    while read -r m; do [ -s "$extra/$m.ko" ] || ok=0; done <"$extra/order"
    if [ "$ok" = 1 ]; then
        echo "fetch-modules.sh: $(tr '\n' ' ' <"$extra/order")already in $extra"
        exit 0
    fi
fi

work=$(mktemp -d "$kdir/.modules.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "fetch-modules.sh: fetching $pkg $pkgver for ${mods[*]}"
(cd "$work" && apt-get download -q -o APT::Sandbox::User="$(id -un)" "$pkg=$pkgver" >/dev/null)
dpkg-deb -x "$work"/*.deb "$work/root"
kver=${pkg#linux-image-}
moddir="$work/root/lib/modules/$kver/kernel"

# Decompress a module by path under $moddir; print its name.
take() {
    local rel=$1 base
    base=$(basename "$rel")
    if [ -f "$moddir/$rel.ko.xz" ]; then
        xz -dc "$moddir/$rel.ko.xz" >"$work/$base.ko"
    elif [ -f "$moddir/$rel.ko" ]; then
        cp "$moddir/$rel.ko" "$work/$base.ko"
    else
        echo "fetch-modules.sh: $pkg has no $rel.ko" >&2
        exit 1
    fi
}
# The path of a module by name (modinfo names use _ where files may use -).
find_mod() {
    local n=$1 f
    f=$(find "$moddir" \( -name "$n.ko*" -o -name "${n//_/-}.ko*" \) | head -n 1)
    [ -n "$f" ] || { echo "fetch-modules.sh: dependency $n not in $pkg" >&2; exit 1; }
    f=${f#"$moddir/"}
    echo "${f%%.ko*}"
}

order=()
seen=" "
visit() {
    local rel=$1 base dep
    base=$(basename "$rel")
    case "$seen" in *" $base "*) return ;; esac
    seen+="$base "
    take "$rel"
    for dep in $(modinfo -F depends "$work/$base.ko" | tr ',' ' '); do
        visit "$(find_mod "$dep")"
    done
    order+=("$base")
}
for m in "${mods[@]}"; do visit "$m"; done

rm -rf "$extra"
mkdir -p "$extra"
for b in "${order[@]}"; do mv "$work/$b.ko" "$extra/$b.ko"; done
printf '%s\n' "${order[@]}" >"$extra/order"
echo "$key" >"$extra/key"
echo "fetch-modules.sh: ${order[*]} ready in $extra"
