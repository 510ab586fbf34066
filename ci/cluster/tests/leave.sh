#!/usr/bin/env bash
# shellcheck disable=SC2317 # checks are passed to t_check and cl_until by name
# Node 3 leaves cleanly, and what the others see (kept in
# ci/out/cluster/run/observe-leave.txt): first the lockspace (its lock
# shell releases its locks, then dlm_tool leave), then the whole stack
# (dlm_controld stopped by SIGTERM, corosync by corosync-cfgtool -H), then
# its QEMU (SIGTERM). Checks that nodes 1 and 2 keep working: members 1 2
# in dlm_tool ls and configfs, corosync quorate with two, a lock node 3
# held is free at once, without a recovery's wait; Rust API observers on
# nodes 1 and 2 see recover_prep and recover_done, and no recover_slot.
# shellcheck source=ci/cluster/tests/common.sh
. "$(dirname "$0")/common.sh"
t_ensure_up
ls=t_leave
obs=$CL_STATE/observe-leave.txt
: >"$obs"
t_join "$ls" 1 2 3
for n in 1 2; do t_recovery_watch "$n" "r$n" "$ls" 1:1,2:2,3:3; done
on 3 -q "cl-sh start l3 $ls"
on 3 -q "cl-sh do l3 lock 1 r_gone EX"
t_match "node3: EX" "$(on 3 "cl-sh wait l3 '^AST 1 '")" "status=0\\(0\\)"
g1=$(on 1 "echo \$EPOCHREALTIME")
g2=$(on 2 "echo \$EPOCHREALTIME")
on 3 -q "cl-sh stop l3"
t0=$(cl_now)
t_check "node3: dlm_tool leave" on 3 -t 30 -q "dlm_tool leave $ls"
t_figure leave_lockspace_s "$(cl_since "$t0")" "s (dlm_tool leave on node3)"
out=$(on 1 "dlm_tool ls $ls | grep '^members'")
t_match "node1: dlm_tool ls members 1 2" "$out" "^members +1 2 *$"
# A clean leave: recover_prep and recover_done, and no recover_slot.
for n in 1 2; do
    g=g$n
    t_recovery_seen "$n" "r$n" "$ls" "${!g}" 1:1,2:2 -
done
for n in 1 2; do on "$n" -q "cl-sh stop r$n"; done
t_match "node1: configfs nodes 1 2" "$(on 1 "ls /sys/kernel/config/dlm/cluster/spaces/$ls/nodes | tr '\n' ' '")" "^1 2 $"
on 1 -q "cl-sh start l1 $ls"
on 1 -q "cl-sh do l1 lock 1 r_gone EX noqueue"
t_match "node1: node 3's old lock is free (NOQUEUE EX granted)" "$(on 1 "cl-sh wait l1 '^AST 1 '")" "status=0\\(0\\)"
on 1 -q "cl-sh stop l1"
{
    echo "=== node1 after node 3 left $ls (dlm_tool leave)"
    on 1 "dlm_tool ls; cl-events $g1 'recover|remove|leave|nodeid 3|node 3|$ls'"
} >>"$obs" 2>&1

# The stack: dlm_controld, then corosync.
g1=$(on 1 "echo \$EPOCHREALTIME")
t_check "node3: dlm_controld stops on SIGTERM (no lockspace left)" on 3 -t 30 -q "p=\$(pidof -s dlm_controld); kill -TERM \$(pidof dlm_controld); timeout 20 sh -c 'while pidof dlm_controld >/dev/null; do sleep 0.1; done'"
t_check "node3: corosync-cfgtool -H stops corosync" on 3 -t 30 -q "corosync-cfgtool -H >/dev/null 2>&1; timeout 20 sh -c 'while pidof corosync >/dev/null; do sleep 0.1; done'"
two() { t_members 1 2; }
t_check "corosync on node1: 2 members, quorate" cl_until 30 two
t_figure leave_stack_to_membership_s "$(cl_since "$g1" "$(on 1 "echo \$EPOCHREALTIME")")" "s (node1 clock, dlm_controld stop + corosync -H to 2 members)"
{
    echo "=== node1 after node 3 stopped dlm_controld and corosync"
    on 1 "corosync-quorumtool -s | tail -n 6; cl-events $g1 'membership|Members|leave|node 3|nodeid 3|remove'"
} >>"$obs" 2>&1
t_check "node1's corosync logged a clean leave (no token timeout)" eval "! grep -q 'token timed out' '$obs'"
cl_stop_pidfile "$CL_STATE/node3.pid" 10
cl_stop_pidfile "$CL_STATE/node3.wrapper.pid" 2
t_check "node3's QEMU stopped" eval "! t_running 3"
t_leave "$ls" 1 2
t_end
