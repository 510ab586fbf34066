#!/usr/bin/env bash
# shellcheck disable=SC2317 # checks are passed to t_check and cl_until by name
# Cluster test 5: node 3 comes back. If it is running it is killed first
# (as in the failure test, which leaves it down). Nodes 1 and 2 keep a
# lockspace with node 1 holding EX; node 3 boots again, corosync counts it,
# it joins the lockspace (dlm_tool), is refused by NOQUEUE, and its queued
# request is granted once node 1 lets go. Figure: boot to membership.
# shellcheck source=ci/cluster/tests/common.sh
. "$(dirname "$0")/common.sh"
ls=t_rejoin
two() { t_members 1 2; }
if t_running 3; then
    t_ensure_up
    cl_kill_node 3 >/dev/null
    t_log "node3 killed, to come back"
fi
t_check "corosync on node1 counts 2 members" cl_until 60 two
t_join "$ls" 1 2
on 1 -q "cl-sh start r1 $ls"
on 1 -q "cl-sh do r1 lock 1 r_back EX valblk"
t_match "node1: EX" "$(on 1 "cl-sh wait r1 '^AST 1 '")" "status=0\\(0\\)"
on 1 -q "cl-sh do r1 convert 1 EX valblk lvb=before-rejoin"

t0=$(cl_now)
cl_start_node 3
t_check "node3 boots again" cl_wait_ready 3 120
t_figure rejoin_boot_s "$(cl_since "$t0")" "s (QEMU start to DLMCI-READY)"
three() { t_members 1 3; }
t_check "corosync on node1 counts 3 members again" cl_until 60 three
t_figure rejoin_membership_s "$(cl_since "$t0")" "s (QEMU start to corosync membership)"
t_join "$ls" 3
out=$(on 1 "dlm_tool ls $ls | grep '^members'")
t_match "node1: dlm_tool ls counts node 3 again" "$out" "^members +1 2 3 *$"
on 3 -q "cl-sh start r3 $ls"
on 3 -q "cl-sh do r3 lock 1 r_back EX noqueue"
t_match "node3: NOQUEUE refused while node 1 holds EX" "$(on 3 "cl-sh wait r3 '^AST 1 '")" "status=EAGAIN"
on 3 -q "cl-sh do r3 lock 2 r_back PR valblk"
t_match "node1: blocking callback from node 3's request" "$(on 1 "cl-sh wait r1 '^BAST 1 '")" "held=EX"
on 1 -q "cl-sh do r1 convert 1 NL valblk lvb=for-node3"
t_match "node3: PR granted with node 1's value block" "$(on 3 "cl-sh wait r3 '^AST 2 '")" "status=0\\(0\\).*mode=PR lvb=\"for-node3\""
on 3 -q "cl-sh stop r3"
on 1 -q "cl-sh stop r1"
t_leave "$ls" 1 2 3
t_end
