#!/bin/sh
# /init of the QEMU test guest (busybox sh). It brings up the kernel DLM the
# way a real single-node host does:
#   proc, sysfs, devtmpfs; lo up; the modules of /lib/modules/load-order
#   (configfs.ko, dlm.ko), configfs mounted as soon as it exists;
#   dlm-controld --single-node (returns once the controller is ready);
# then runs /ci/cmd (the command given to ci/kernel/run.sh), prints
#   DLM_CI_RESULT=<exit status>
# on the console, stops the controller and powers off. run.sh parses that
# line. The guest never reboots and never waits for input: whatever fails,
# the last step is `poweroff -f`.

/bin/busybox mkdir -p /proc /sys /dev /tmp /run /usr/bin /usr/sbin /sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run

# What failed before the command could run: reported as the result, so
# the host sees a status instead of waiting for its timeout.
die() {
    echo "ci-init: $*"
    dmesg | tail -n 30
    echo "DLM_CI_RESULT=97"
    poweroff -f
    exit 97
}

ip link set lo up || die "cannot bring lo up"
# dlm.ko and the modules it needs, dependencies first (the list comes from
# fetch.sh, which read each module's depends=); configfs is mounted as
# soon as the kernel has it, before dlm.ko registers its subsystem.
[ -s /lib/modules/load-order ] || die "no /lib/modules/load-order in the initramfs"
mount_configfs() {
    grep -q /sys/kernel/config /proc/mounts && return 0
    grep -qw configfs /proc/filesystems || return 0
    mount -t configfs configfs /sys/kernel/config || die "cannot mount configfs"
}
mount_configfs
while read -r m; do
    insmod "/lib/modules/$m" || die "insmod $m failed"
    mount_configfs
done </lib/modules/load-order
grep -q /sys/kernel/config /proc/mounts || die "the kernel has no configfs after loading $(cat /lib/modules/load-order)"

export RUST_BACKTRACE=1
# shellcheck disable=SC1091 # written by run.sh
. /ci/env 2>/dev/null
if [ -x /bin/dlm-controld ]; then
    # Without --foreground it forks and returns once it is ready.
    dlm-controld --single-node || die "dlm-controld did not start"
fi

echo "ci-init: running: $(cat /ci/cmd.txt 2>/dev/null)"
cd /tmp || die "no /tmp"
sh /ci/cmd
rc=$?
echo "ci-init: command exited with status $rc"
if [ "$rc" -ne 0 ]; then
    echo "ci-init: last kernel messages:"
    dmesg | tail -n 30
fi

# A clean controller stop is part of the job: SIGTERM, and it must exit
# (it refuses while lockspaces exist; then say so). An exited daemon is
# our child (its parent exited first) and stays a zombie, which pidof
# still lists: "alive" means a /proc entry not in state Z.
alive() { [ -d "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }
for pid in $(pidof dlm-controld); do
    alive "$pid" || continue
    kill -TERM "$pid"
    i=0
    while alive "$pid" && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    if alive "$pid"; then
        echo "ci-init: dlm-controld still running 5 s after SIGTERM; lockspaces: $(ls /sys/kernel/dlm)"
    else
        echo "ci-init: dlm-controld stopped"
    fi
done

echo "DLM_CI_RESULT=$rc"
poweroff -f
