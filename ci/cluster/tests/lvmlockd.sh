#!/usr/bin/env bash
# shellcheck disable=SC2317 # checks are passed to t_check and cl_until by name
# Cluster test 6: lvmlockd (Debian's lvm2-lockd, on Debian's libdlm) on
# the cluster, with a shared VG on the disk every guest sees (/dev/vdb:
# one raw image, file.locking=off, virtio-blk share-rw=on). lvmlockd -g
# dlm runs on every node; node 1 makes the VG (vgcreate --shared) and an
# LV, every node starts the VG's lockspace; while node 1 has the LV active
# exclusively (lvchange -aey) the same command on node 2 is refused; node 1
# is killed, and node 2 tries again until it succeeds (bounded, 90 s).
# Figure: kill to node 2's activation. Node 1 stays down.
# shellcheck source=ci/cluster/tests/common.sh
. "$(dirname "$0")/common.sh"
t_ensure_up
vg=vg$$
lv=lv0
# An lvmlockd left by an earlier run of this test (on the other library)
# is stopped first: lvmlockctl --quit, then its PID is signalled.
start_lvmlockd() {
    on "$1" -t 40 -q "p=\$(pidof lvmlockd); if [ -n \"\$p\" ]; then lvmlockctl --quit >/dev/null 2>&1; for i in \$(seq 1 50); do kill -0 \$p 2>/dev/null || break; sleep 0.1; done; kill -TERM \$p 2>/dev/null; for i in \$(seq 1 50); do kill -0 \$p 2>/dev/null || break; sleep 0.1; done; kill -KILL \$p 2>/dev/null; sleep 0.2; fi; rm -f /run/lvm/lvmlockd.socket; mkdir -p /run/lvm /run/lock/lvm; setsid ${T_ENV}lvmlockd -f -g dlm >/tmp/lvmlockd.log 2>&1 </dev/null & for i in \$(seq 1 100); do [ -S /run/lvm/lvmlockd.socket ] && exit 0; sleep 0.1; done; cat /tmp/lvmlockd.log; exit 1"
}
for n in 1 2 3; do t_check "node$n: lvmlockd -g dlm started" start_lvmlockd "$n"; done
# The library lvmlockd mapped (Debian builds it on libdlm_lt).
for n in 1 2 3; do
    lib=$(on "$n" "grep -o '/[^ ]*libdlm[^ ]*' /proc/\$(pidof lvmlockd)/maps | sort -u | tr '\n' ' '")
    t_log "node$n: lvmlockd maps $lib"
    if [ "$T_LIB" = ours ]; then
        t_match "node$n: lvmlockd runs on dlm-rs's libdlm" "$lib" "^/usr/local/lib/dlm-rs/libdlm"
    else
        t_match "node$n: lvmlockd runs on Debian's libdlm" "$lib" "^/usr/lib/.*libdlm"
    fi
done
# A disk with no old label: this run's VG is the only one.
on 1 -q "dd if=/dev/zero of=/dev/vdb bs=1M count=8 oflag=direct status=none"
t_check "node1: vgcreate --shared $vg /dev/vdb" on 1 -t 120 "lvm vgcreate --shared $vg /dev/vdb"
for n in 1 2 3; do
    t_check "node$n: vgchange --lockstart $vg" on "$n" -t 120 "lvm vgchange --lockstart $vg"
done
t_check "node1: lvcreate -an $vg/$lv" on 1 -t 120 "lvm lvcreate -an -Zn -L 16m -n $lv $vg"
t_check "node1: lvchange -aey $vg/$lv" on 1 -t 120 "lvm lvchange -aey $vg/$lv"
t_check "node1: the LV is active" on 1 -q "dmsetup info -c --noheadings -o name | grep -qx '$vg-$lv'"
out=$(on 2 -t 120 "lvm lvchange -aey $vg/$lv 2>&1; echo rc=\$?")
t_log "node2's lvchange -aey while node 1 holds it: $(printf '%s\n' "$out" | tr '\n' ' ')"
t_match "node2: lvchange -aey refused while node 1 holds the LV" "$out" "rc=[1-9]"
t_check "node2: the LV is not active there" on 2 -q "! dmsetup info -c --noheadings -o name | grep -qx '$vg-$lv'"
lsn=lvm_$vg
t_match "node2: lockspace $lsn has all three members" "$(on 2 "dlm_tool ls $lsn | grep '^members'")" "^members +1 2 3 *$"

read -r off2 err2 < <(cl_offset 2)
t_kill=$(cl_kill_node 1)
t_log "node1 killed"
ok=0
for i in $(seq 1 90); do
    out=$(on 2 -t 60 "lvm lvchange -aey $vg/$lv 2>&1; echo rc=\$? t=\$EPOCHREALTIME")
    if printf '%s\n' "$out" | grep -q 'rc=0 '; then
        ok=1
        break
    fi
    [ "$(awk -v a="$(cl_now)" -v b="$t_kill" 'BEGIN { print int(a - b) }')" -lt 90 ] || break
done
t_log "node2's last lvchange: $(printf '%s\n' "$out" | tr '\n' ' ') ($i tries)"
t_check "node2: lvchange -aey succeeds after node 1 died" [ "$ok" = 1 ]
if [ "$ok" = 1 ]; then
    t=$(printf '%s\n' "$out" | sed -n 's/.* t=\([0-9.]*\).*/\1/p' | tail -n 1)
    t_figure lvm_kill_to_activation_s "$(awk -v t="$t" -v o="$off2" -v k="$t_kill" 'BEGIN { printf "%.3f", t - o - k }')" "s (node2's lvchange -aey after node1's kill; ±$err2; $i tries)"
    t_check "node2: the LV is active" on 2 -q "dmsetup info -c --noheadings -o name | grep -qx '$vg-$lv'"
fi
t_match "node2: lockspace $lsn lost node 1" "$(on 2 "dlm_tool ls $lsn | grep '^members'")" "^members +2 3 *$"
# Tidy the survivors: deactivate, stop the lockspace, quit lvmlockd.
on 2 -t 60 -q "lvm lvchange -an $vg/$lv" || t_log "note: node2: lvchange -an failed"
for n in 2 3; do
    on "$n" -t 60 -q "lvm vgchange --lockstop $vg; lvmlockctl --quit" || t_log "note: node$n: lockstop/quit failed"
done
t_end
