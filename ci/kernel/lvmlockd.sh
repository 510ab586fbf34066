#!/usr/bin/env bash
# A real libdlm user, unmodified: Debian's lvmlockd (lvm2-lockd 2.03.16)
# with its libdlm_lt.so.3 on the kernel DLM in the QEMU guest, driven by
# dlm-controld --single-node (lvmlockd's one cluster check is reading
# /sys/kernel/config/dlm/cluster/cluster_name; corosync is not needed).
#
#   ci/kernel/lvmlockd.sh             with Debian's libdlm_lt
#   ci/kernel/lvmlockd.sh --lib DIR   with DIR/libdlm_lt.so.3, through LD_LIBRARY_PATH
#
# The guest (ci/kernel/lvmlockd-guest.sh) loads loop.ko and dm-mod.ko from
# the same kernel package (ci/kernel/fetch-modules.sh), puts a loop
# device on a 64 MiB file in its tmpfs and runs lvmlockd -f -g dlm, then
# vgcreate --shared, vgchange --lockstart, lvcreate, lvchange -aey (and
# checks in /sys/kernel/debug/dlm/lvm_vg0 that the LV's lock is granted
# EX), lvchange -an, vgchange --lockstop and lvmlockctl --quit. lvm runs
# without udev (lvm.conf below). Every step is bounded; the serial log is
# kept in ci/out/lvmlockd/serial-<lib>.log. Exits 0 when every step passed.
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh

lib=""
while [ $# -gt 0 ]; do
    case "$1" in
    --lib) lib=$(cd "$2" && pwd); shift 2 ;;
    -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "lvmlockd.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
name=debian
[ -n "$lib" ] && name=ours

install_build_deps
apt_install lvm2 lvm2-lockd file cpio bc
t0=$(date +%s)
out=ci/out/lvmlockd
mkdir -p "$out"

ci/kernel/fetch.sh
# fetch.sh keeps each series' kernel in its own directory.
kd=ci/out/kernel/${DLM_KERNEL:-6.1}
ci/kernel/fetch-modules.sh --kdir "$kd" drivers/block/loop drivers/md/dm-mod
ci/kernel/build.sh >"$out/static-bins.txt"
controller=$(head -n 1 "$out/static-bins.txt")

ci/kernel/initramfs.sh -o "$out/initramfs-base.cpio" --controller "$controller" \
    "$(command -v lvm)" "$(command -v lvmlockd)" "$(command -v lvmlockctl)" \
    ci/kernel/lvmlockd-guest.sh >/dev/null

# The second archive: the modules, lvm.conf, and the replacement library.
stage=$(mktemp -d "${TMPDIR:-/tmp}/dlm-lvmlockd.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/lib/modules/extra" "$stage/etc/lvm"
cp "$kd/extra/order" "$kd"/extra/*.ko "$stage/lib/modules/extra/"
cat >"$stage/etc/lvm/lvm.conf" <<'EOF'
# lvm in the test guest: no udev, only the loop device, locks through
# lvmlockd (dlm), nothing written under /etc.
devices {
    global_filter = [ "a|^/dev/loop0$|", "r|.*|" ]
    obtain_device_list_from_udev = 0
    external_device_info_source = "none"
    use_devicesfile = 0
}
global {
    use_lvmlockd = 1
    locking_dir = "/run/lock/lvm"
    use_lvmpolld = 0
    event_activation = 0
}
activation {
    udev_sync = 0
    udev_rules = 0
    monitoring = 0
}
backup {
    backup = 0
    archive = 0
}
EOF
guest_args=()
if [ -n "$lib" ]; then
    [ -e "$lib/libdlm_lt.so.3" ] || { echo "lvmlockd.sh: $lib/libdlm_lt.so.3 missing" >&2; exit 1; }
    mkdir -p "$stage/opt/dlm-rs/lib"
    cp -L "$lib/libdlm_lt.so.3" "$stage/opt/dlm-rs/lib/"
    for dep in $(ldd "$lib/libdlm_lt.so.3" | awk '/=> \// { print $3 } /^\t\// { print $1 }'); do
        [ -f "$dep" ] || continue
        mkdir -p "$stage$(dirname "$dep")"
        cp -L "$dep" "$stage$dep"
    done
    guest_args=(--libpath /opt/dlm-rs/lib)
fi
cp "$out/initramfs-base.cpio" "$out/initramfs.cpio"
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) \
    >>"$out/initramfs.cpio"

status=0
ci/kernel/run.sh --quiet --initramfs "$out/initramfs.cpio" --timeout "${DLM_LVMLOCKD_TIMEOUT:-900}" \
    -- lvmlockd-guest.sh ${guest_args[@]+"${guest_args[@]}"} || status=$?
log="$out/serial-$name.log"
tr -d '\r' <"ci/out/linux-${DLM_KERNEL:-6.1}/qemu-serial.log" >"$log"
grep -E '^(LVM-STEP|LVM-RESULT|lvmlockd-guest:|    )' "$log" || true
if [ "$status" -ne 0 ] || ! grep -q '^LVM-RESULT pass$' "$log"; then
    echo "lvmlockd.sh: FAILED with $name libdlm_lt (guest status $status; log $log)" >&2
    exit 1
fi
echo "lvmlockd.sh: passed with $name libdlm_lt in $(($(date +%s) - t0)) s (log $log)"
