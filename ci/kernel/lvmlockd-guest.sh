#!/bin/sh
# The guest half of ci/kernel/lvmlockd.sh (busybox sh, the command of
# ci/kernel/run.sh, after /init started dlm-controld --single-node):
# Debian's lvmlockd on the kernel DLM through libdlm_lt, with a shared VG
# on a loop device:
#
#   ctl modules; loop device on a 64 MiB file in /tmp; lvmlockd -f -g dlm;
#   vgcreate --shared vg0; vgchange --lockstart vg0; lvcreate lv0;
#   lvchange -aey vg0/lv0 (the kernel's debugfs shows its lock granted EX);
#   lvchange -an vg0/lv0 (the lock drops to NL); vgchange --lockstop vg0; lvmlockctl --quit
#   (retried: the first is sometimes ignored); no lockspace left.
#
#   lvmlockd-guest.sh [--libpath DIR]
#
# --libpath DIR runs lvmlockd with LD_LIBRARY_PATH=DIR (a replacement
# libdlm_lt.so.3). Every step is bounded by timeout; each prints
# "LVM-STEP <name>: ok (<s> s)" or "LVM-STEP <name>: FAILED ..." and the
# last line is "LVM-RESULT pass" or "LVM-RESULT fail". Exits 0 on pass.
libpath=""
if [ "${1:-}" = --libpath ]; then
    libpath=$2
    shift 2
fi
dmesg -n 1
failed=0
lvmlockd_pid=""

now() { cut -d' ' -f1 /proc/uptime; }
# step NAME LIMIT CMD...: run CMD under timeout LIMIT, report.
step() {
    name=$1
    limit=$2
    shift 2
    t0=$(now)
    timeout "$limit" "$@" >/tmp/step.out 2>&1
    rc=$?
    t1=$(now)
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    if [ $rc -eq 0 ]; then
        echo "LVM-STEP $name: ok ($secs s)"
    else
        echo "LVM-STEP $name: FAILED (status $rc after $secs s; limit $limit s): $*"
        sed 's/^/    /' /tmp/step.out
        failed=1
    fi
    return $rc
}
finish() {
    if [ -n "$lvmlockd_pid" ] && [ -d "/proc/$lvmlockd_pid" ]; then
        echo "lvmlockd-guest: lvmlockd still running; stopping it"
        kill -TERM "$lvmlockd_pid" 2>/dev/null
        sleep 1
        kill -KILL "$lvmlockd_pid" 2>/dev/null
    fi
    if [ $failed -ne 0 ]; then
        echo "lvmlockd-guest: lvmlockd's output:"
        sed 's/^/    /' /tmp/lvmlockd.log 2>/dev/null | tail -n 60
        echo "lvmlockd-guest: lockspaces: $(ls /sys/kernel/dlm 2>/dev/null | tr '\n' ' ')"
        echo "LVM-RESULT fail"
        exit 1
    fi
    echo "LVM-RESULT pass"
    exit 0
}

# --- modules, debugfs, the disk ---------------------------------------------
for m in $(cat /lib/modules/extra/order); do
    grep -q "^$(echo "$m" | tr - _) " /proc/modules && continue
    insmod "/lib/modules/extra/$m.ko" || { echo "LVM-STEP insmod $m: FAILED"; failed=1; finish; }
done
echo "LVM-STEP modules: ok ($(tr '\n' ' ' </lib/modules/extra/order))"
mount -t debugfs debugfs /sys/kernel/debug || { echo "LVM-STEP debugfs: FAILED"; failed=1; }
mkdir -p /run/lvm /run/lock/lvm /etc/lvm/archive /etc/lvm/backup
step "disk image" 30 dd if=/dev/zero of=/tmp/disk.img bs=1M count=64 || finish
step "losetup" 30 losetup /dev/loop0 /tmp/disk.img || finish

# --- lvmlockd ----------------------------------------------------------------
# Which libdlm_lt it loads (glibc's loader lists its objects and exits).
want=/lib/x86_64-linux-gnu/libdlm_lt.so.3
[ -n "$libpath" ] && want=$libpath/libdlm_lt.so.3
loaded=$(LD_LIBRARY_PATH=$libpath LD_TRACE_LOADED_OBJECTS=1 lvmlockd 2>&1 | awk '$1 == "libdlm_lt.so.3" { print $3 }')
if [ "$loaded" = "$want" ]; then
    echo "LVM-STEP lvmlockd loads $want: ok"
else
    echo "LVM-STEP lvmlockd loads $want: FAILED (it loads '${loaded:-nothing}')"
    failed=1
    finish
fi
if [ -n "$libpath" ]; then
    LD_LIBRARY_PATH=$libpath lvmlockd -f -g dlm >/tmp/lvmlockd.log 2>&1 &
else
    lvmlockd -f -g dlm >/tmp/lvmlockd.log 2>&1 &
fi
lvmlockd_pid=$!
i=0
while [ ! -S /run/lvm/lvmlockd.socket ] && [ $i -lt 100 ] && [ -d "/proc/$lvmlockd_pid" ]; do
    sleep 0.1
    i=$((i + 1))
done
if [ -S /run/lvm/lvmlockd.socket ]; then
    echo "LVM-STEP lvmlockd started: ok"
else
    echo "LVM-STEP lvmlockd started: FAILED (no /run/lvm/lvmlockd.socket after 10 s)"
    failed=1
    finish
fi

# --- the VG and the LV -------------------------------------------------------
step "vgcreate --shared vg0" 120 lvm vgcreate --shared vg0 /dev/loop0 || finish
step "vgchange --lockstart vg0" 120 lvm vgchange --lockstart vg0 || finish
step "lvcreate -an -Zn -L 4m -n lv0 vg0" 120 lvm lvcreate -an -Zn -L 4m -n lv0 vg0 || finish
step "lvchange -aey vg0/lv0" 120 lvm lvchange -aey vg0/lv0 || finish
uuid=$(lvm lvs --noheadings -o lv_uuid vg0/lv0 2>/dev/null | tr -d ' ')
echo "lvmlockd-guest: lv0's uuid: $uuid"

# The kernel's view of lockspace lvm_vg0: the LV's lock (named by its
# uuid) granted EX. The debugfs file lists each resource as
#   Resource <ptr> Name (len=N) "<name>"  ...  Granted Queue / <lkid> <mode> ...
dbg=/sys/kernel/debug/dlm/lvm_vg0
lv_lock_mode() {
    awk -v u1="$uuid" -v u2="$(echo "$uuid" | tr -d -)" '
        /^Resource / { inres = (index($0, "\"" u1 "\"") || index($0, "\"" u2 "\"")); q = ""; next }
        inres && /^Granted Queue/ { q = "g"; next }
        inres && /^(Conversion|Waiting) Queue/ { q = ""; next }
        inres && q == "g" && NF >= 2 { print $2; exit }
    ' "$dbg"
}
mode=$(lv_lock_mode)
if [ "$mode" = EX ]; then
    echo "LVM-STEP lv0's lock granted EX in $dbg: ok"
    awk -v u1="$uuid" -v u2="$(echo "$uuid" | tr -d -)" '
        /^Resource / { inres = (index($0, "\"" u1 "\"") || index($0, "\"" u2 "\"")) }
        inres { print "    " $0 }
    ' "$dbg"
else
    echo "LVM-STEP lv0's lock granted EX in $dbg: FAILED (granted mode '${mode:-none}')"
    sed 's/^/    /' "$dbg"
    failed=1
fi
[ -b /dev/vg0/lv0 ] || [ -b "$(readlink -f /dev/vg0/lv0 2>/dev/null)" ] &&
    echo "lvmlockd-guest: /dev/vg0/lv0 exists"

step "lvchange -an vg0/lv0" 120 lvm lvchange -an vg0/lv0 || finish
# lvmlockd keeps the lock at NL after a deactivation (or drops it).
mode=$(lv_lock_mode)
if [ -z "$mode" ] || [ "$mode" = NL ]; then
    echo "LVM-STEP lv0's lock no longer EX: ok (${mode:-gone})"
else
    echo "LVM-STEP lv0's lock no longer EX: FAILED (still granted $mode)"
    failed=1
fi
step "vgchange --lockstop vg0" 120 lvm vgchange --lockstop vg0 || finish

# --- lvmlockd quits ----------------------------------------------------------
# busybox sh reaps an exited background job itself, so "alive" is a /proc
# entry that is not a zombie.
alive() { [ -d "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }
tries=0
while alive "$lvmlockd_pid" && [ $tries -lt 10 ]; do
    timeout 10 lvmlockctl --quit >/tmp/quit.out 2>&1
    tries=$((tries + 1))
    j=0
    while alive "$lvmlockd_pid" && [ $j -lt 20 ]; do
        sleep 0.1
        j=$((j + 1))
    done
done
if alive "$lvmlockd_pid"; then
    echo "LVM-STEP lvmlockctl --quit: FAILED (lvmlockd still running after $tries tries)"
    sed 's/^/    /' /tmp/quit.out
    failed=1
elif wait "$lvmlockd_pid"; then
    echo "LVM-STEP lvmlockctl --quit: ok"
    echo "lvmlockd-guest: lvmlockd quit after $tries lvmlockctl --quit"
    lvmlockd_pid=""
else
    echo "LVM-STEP lvmlockctl --quit: FAILED (lvmlockd exited with status $?)"
    lvmlockd_pid=""
    failed=1
fi
left=$(ls /sys/kernel/dlm 2>/dev/null | tr '\n' ' ')
if [ -z "$left" ]; then
    echo "LVM-STEP no lockspace left: ok"
else
    echo "LVM-STEP no lockspace left: FAILED ($left)"
    failed=1
fi
finish
