#!/bin/sh
# /init of a cluster guest's initramfs (busybox sh): load the modules
# (lib/modules/load-order, dependencies first), mount the rootfs image on
# /dev/vda read-write (QEMU keeps the guest's writes in a throw-away
# snapshot), give it the modules and the run's own files (/overlay, an
# archive the harness appends: everything under usr/local), and switch to
# it, running /usr/local/sbin/dlm-cluster-init. Whatever fails powers
# the guest off, saying why on the console first.
/bin/busybox mkdir -p /proc /sys /dev /newroot
/bin/busybox --install -s /bin
export PATH=/bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

fail() {
    echo "dlmci-early: $*"
    dmesg | tail -n 20
    echo "DLMCI-FAILED early"
    poweroff -f
    exit 1
}

kver=$(cat /lib/modules/version)
while read -r m; do
    insmod "/lib/modules/$kver/$m" || fail "insmod $m failed"
done </lib/modules/load-order

# The root disk: virtio's probe may finish after insmod returns.
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ -b /dev/vda ] || fail "no /dev/vda after 10 s"
mount -t ext4 -o rw /dev/vda /newroot || fail "cannot mount /dev/vda"
[ -x /newroot/usr/local/sbin/dlm-cluster-init ] || [ -x /overlay/usr/local/sbin/dlm-cluster-init ] ||
    fail "no /usr/local/sbin/dlm-cluster-init (the harness's overlay is missing)"
mkdir -p "/newroot/usr/lib/modules"
cp -a "/lib/modules/$kver" /newroot/usr/lib/modules/ || fail "cannot copy the modules to the rootfs"
if [ -d /overlay/usr/local ]; then
    cp -a /overlay/usr/local/. /newroot/usr/local/ || fail "cannot copy the overlay to the rootfs"
fi
mount --move /dev /newroot/dev || fail "cannot move /dev"
mount --move /sys /newroot/sys || fail "cannot move /sys"
mount --move /proc /newroot/proc || fail "cannot move /proc"
exec switch_root /newroot /usr/local/sbin/dlm-cluster-init
