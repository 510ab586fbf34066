#!/usr/bin/env bash
# Fetch what the QEMU kernel tests need, once:
#   - the host packages qemu-system-x86, busybox-static, cpio, file and the
#     decompressors xz-utils, zstd, lz4 (no Recommends);
#   - the guest kernel: the linux-image package that the series' meta
#     package depends on (DLM_KERNEL=6.1: linux-image-amd64; 6.12:
#     linux-image-6.12-amd64; see ci/lib.sh), downloaded with
#     `apt-get download` (never installed), from which we keep, in
#     ci/out/kernel/<release>/ (e.g. 6.1.0-57-amd64, 6.12.117+deb12-amd64):
#       vmlinux    the ELF kernel, decompressed from the bzImage payload
#                  (zstd, xz, gzip or lz4; QEMU boots it via PVH, which
#                  skips a decompression of seconds per boot under TCG)
#       *.ko       dlm.ko and every module it depends on, decompressed
#       modules    their file names in load order (dependencies first)
#       config     the kernel's config
#       version    the kernel release; package: the package and version
#   and point the link ci/out/kernel/<series> (6.1, 6.12) at that directory,
#   so that the series coexist.
#
#   ci/kernel/fetch.sh [--kernel 6.1|6.12]
#   DLM_KERNEL_PKG=linux-image-<release> pins one kernel package
#
# Idempotent: with everything in place it only checks and returns.
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh
while [ $# -gt 0 ]; do
    case "$1" in
    --kernel) DLM_KERNEL=$2; shift 2 ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (usage: fetch.sh [--kernel SERIES])" 2 ;;
    esac
done
kernel_setup

# Like ci/lib.sh's apt_install, but without Recommends: qemu-system-x86
# recommends the GTK/SDL front ends, OVMF and more (about 160 packages);
# a headless TCG guest needs none of them.
need=()
for p in qemu-system-x86 busybox-static cpio xz-utils zstd lz4 file; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
    echo "fetch.sh: installing ${need[*]}"
    as_root apt-get update -qq || die "apt-get update failed"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
        die "apt-get install ${need[*]} failed"
fi

top=ci/out/kernel
mkdir -p "$top"
# The layout before per-release directories kept one kernel's files here.
rm -f "$top"/vmlinux "$top"/configfs.ko "$top"/dlm.ko "$top"/version "$top"/package "$top"/config

# The kernel package $KERNEL_META depends on ("Depends:
# linux-image-6.1.0-NN-amd64"), or DLM_KERNEL_PKG, and its version.
resolve() {
    pkg="${DLM_KERNEL_PKG:-}"
    if [ -z "$pkg" ]; then
        pkg=$(apt-cache depends "$KERNEL_META" 2>/dev/null |
            awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }' || true)
    fi
    pkgver=""
    if [ -n "$pkg" ]; then
        pkgver=$(apt-cache show --no-all-versions "$pkg" 2>/dev/null |
            awk '$1 == "Version:" { print $2; exit }' || true)
    fi
    [ -n "$pkg" ] && [ -n "$pkgver" ]
}
what=${DLM_KERNEL_PKG:-"$KERNEL_META's dependency"}
if ! resolve; then
    # The package lists may never have been fetched on this machine.
    as_root apt-get update -qq || die "apt-get update failed"
    resolve || die "cannot find the kernel package ($what) in the package lists"
fi

kver=${pkg#linux-image-}
cache="$top/$kver"
cached() {
    [ "$(cat "$cache/package" 2>/dev/null)" = "$pkg $pkgver" ] && [ -s "$cache/vmlinux" ] &&
        [ -s "$cache/modules" ] && [ "$(cat "$cache/version" 2>/dev/null)" = "$kver" ] || return 1
    local m
    while read -r m; do
        [ -s "$cache/$m" ] || return 1
    done <"$cache/modules"
}
# The series' link points at the release directory.
link() {
    ln -sfn "$kver" "$top/$DLM_KERNEL"
    echo "fetch.sh: kernel $pkg $pkgver in $cache (linked as $top/$DLM_KERNEL)"
}
if cached; then
    link
    exit 0
fi

work=$(mktemp -d "$top/.fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT
# The download runs as the calling user (root in CI): apt's _apt sandbox
# user could not write to our private temporary directory.
get() {
    echo "fetch.sh: fetching $pkg $pkgver"
    (cd "$work" && apt-get download -q -o APT::Sandbox::User="$(id -un)" "$pkg=$pkgver" >/dev/null)
}
if ! get; then
    # Stale lists name a version (or an ABI) the mirror no longer has.
    echo "fetch.sh: download failed; updating the package lists and trying again"
    as_root apt-get update -qq || die "apt-get update failed"
    resolve || die "no kernel package ($what) after apt-get update"
    kver=${pkg#linux-image-}
    cache="$top/$kver"
    if cached; then
        link
        exit 0
    fi
    get || die "apt-get download $pkg=$pkgver failed"
fi
debs=("$work"/*.deb)
[ -f "${debs[0]}" ] || die "apt-get download left no .deb in $work"
dpkg-deb -x "${debs[0]}" "$work/root" || die "dpkg-deb -x ${debs[0]} failed"

# --- vmlinux: the bzImage's payload, decompressed ------------------------------
# The x86 boot header (Documentation/arch/x86/boot.rst) says where the
# compressed kernel is: setup_sects (0x1f1) sectors of real-mode setup
# after the boot sector, then the protected-mode part, in which the payload
# starts at payload_offset (0x248) and is payload_length (0x24c) bytes
# long. The build appends the decompressed size (4 bytes, little endian) to
# the compressed stream; we cut it off and check the result against it.
vmlinuz="$work/root/boot/vmlinuz-$kver"
[ -f "$vmlinuz" ] || die "${debs[0]##*/} has no /boot/vmlinuz-$kver"
u8() { od -An -t u1 -j "$(($2))" -N 1 "$1" | tr -d ' '; }
u16() { od -An -t u2 -j "$(($2))" -N 2 "$1" | tr -d ' '; }
u32() { od -An -t u4 -j "$(($2))" -N 4 "$1" | tr -d ' '; }
[ "$(od -An -c -j $((0x202)) -N 4 "$vmlinuz" | tr -d ' ')" = HdrS ] ||
    die "$vmlinuz has no x86 boot header (no 'HdrS' at 0x202)"
proto=$(u16 "$vmlinuz" 0x206)
[ "$proto" -ge $((0x208)) ] ||
    die "$vmlinuz uses boot protocol $(printf '%#x' "$proto"), older than 2.08 (no payload fields)"
setup_sects=$(u8 "$vmlinuz" 0x1f1)
[ "$setup_sects" -ne 0 ] || setup_sects=4
start=$(((setup_sects + 1) * 512 + $(u32 "$vmlinuz" 0x248)))
len=$(u32 "$vmlinuz" 0x24c)
size=$(stat -c %s "$vmlinuz")
if [ "$len" -le 4 ] || [ $((start + len)) -gt "$size" ]; then
    die "$vmlinuz: payload at $start, $len bytes, does not fit in its $size bytes"
fi
dd if="$vmlinuz" of="$work/payload" bs=1M iflag=skip_bytes,count_bytes skip="$start" \
    count=$((len - 4)) status=none || die "cannot copy the payload out of $vmlinuz"
want=$(u32 "$vmlinuz" $((start + len - 4)))
magic=$(od -An -t x1 -N 6 "$work/payload" | tr -d ' \n')
case "$magic" in
28b52ffd*) fmt=zstd; unpack=(zstd -dcq) ;;
fd377a585a00) fmt=xz; unpack=(xz -dc) ;;
1f8b08*) fmt=gzip; unpack=(gzip -dc) ;;
02214c18*) fmt=lz4; unpack=(lz4 -dc) ;;
*) die "$vmlinuz: payload starts with $magic, none of zstd (28b52ffd), xz (fd377a585a00), gzip (1f8b08), lz4 (02214c18)" ;;
esac
"${unpack[@]}" <"$work/payload" >"$work/vmlinux" ||
    die "$vmlinuz: ${unpack[*]} of its $fmt payload failed"
got=$(stat -c %s "$work/vmlinux")
[ "$got" -eq "$want" ] ||
    die "$vmlinuz: the $fmt payload gave $got bytes, the kernel's size field says $want"
[ "$(od -An -t x1 -N 4 "$work/vmlinux" | tr -d ' \n')" = 7f454c46 ] ||
    die "the kernel decompressed from $vmlinuz ($fmt) is not an ELF file"
rm -f "$work/payload"
echo "fetch.sh: vmlinux: $fmt payload, $got bytes"

# --- modules: dlm and what it depends on ---------------------------------------
# The .deb ships no modules.dep; each module's .modinfo section names its
# dependencies ("depends=configfs"). Built-in ones are in modules.builtin.
modroot="$work/root/lib/modules/$kver"
[ -d "$modroot/kernel" ] || die "${debs[0]##*/} has no /lib/modules/$kver/kernel"
mkdir -p "$work/ko"
# The module file of NAME (dashes and underscores are the same in names).
ko_file() {
    find "$modroot/kernel" -name "${1//[-_]/[-_]}.ko*" -print -quit
}
builtin_module() {
    grep -qE "/${1//[-_]/[-_]}\.ko$" "$modroot/modules.builtin" 2>/dev/null
}
order=()
added=" "
# Add NAME after its dependencies (depth first; a cycle cannot occur).
add_module() {
    local name=$1 src dst dep deps
    case "$added" in *" $name "*) return 0 ;; esac
    if builtin_module "$name"; then
        added+="$name "
        return 0
    fi
    src=$(ko_file "$name")
    [ -n "$src" ] || die "$pkg has no module $name (needed for dlm; is it =m in the config?)"
    dst="$work/ko/$name.ko"
    case "$src" in
    *.ko) cp "$src" "$dst" ;;
    *.ko.xz) xz -dc "$src" >"$dst" ;;
    *.ko.zst) zstd -dcq "$src" >"$dst" ;;
    *.ko.gz) gzip -dc "$src" >"$dst" ;;
    *) die "$src: unknown module compression" ;;
    esac || die "cannot decompress $src"
    deps=$(tr '\0' '\n' <"$dst" | sed -n 's/^depends=//p')
    deps=${deps%%$'\n'*}
    added+="$name "
    for dep in ${deps//,/ }; do
        add_module "$dep"
    done
    order+=("$name.ko")
}
add_module dlm
printf '%s\n' "${order[@]}" >"$work/ko/modules"
cp "$work/root/boot/config-$kver" "$work/ko/config" 2>/dev/null ||
    echo "fetch.sh: note: ${debs[0]##*/} has no /boot/config-$kver"

rm -rf "$cache"
mkdir -p "$cache"
mv "$work/vmlinux" "$work"/ko/* "$cache/"
echo "$kver" >"$cache/version"
echo "$pkg $pkgver" >"$cache/package"
link
echo "fetch.sh: modules in load order: ${order[*]} ($(du -sh "$cache" | cut -f1) in all)"
