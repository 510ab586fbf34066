#!/usr/bin/env bash
# Cluster test 1: lockspace join on every node; EX on node 1 excludes
# node 2: a NOQUEUE request gets EAGAIN, a queued one sends node 1 a
# blocking callback. libdlm's callback has no mode argument; the blocked
# mode is read where the kernel shows it: the master's debugfs (the
# waiter's requested mode) and dlm_tool lockdebug on the holder ("bast
# <mode>"). Unlocking on node 1 grants node 2.
# shellcheck source=ci/cluster/tests/common.sh
. "$(dirname "$0")/common.sh"
t_ensure_up
ls=t_excl
nodes=$(seq 1 "$CL_NODES")

t0=$(cl_now)
# shellcheck disable=SC2086 # node numbers
t_join "$ls" $nodes
t_figure join_all_nodes_s "$(cl_since "$t0")" s
for n in $nodes; do
    out=$(on "$n" "dlm_tool ls $ls")
    t_match "node$n: dlm_tool ls counts every node a member" "$(printf '%s\n' "$out" | grep '^members')" \
        "^members +$(seq -s ' ' 1 "$CL_NODES") *$"
    out=$(on "$n" "ls /sys/kernel/config/dlm/cluster/spaces/$ls/nodes | sort -n | tr '\n' ' '")
    t_match "node$n: configfs spaces/$ls/nodes lists every node" "$out" "^$(seq -s ' ' 1 "$CL_NODES") $"
done

on 1 -q "cl-sh start x1 $ls"
on 2 -q "cl-sh start x2 $ls"
t_check "node1: lock EX on r_excl accepted" on 1 -q "cl-sh do x1 lock 1 r_excl EX"
out=$(on 1 "cl-sh wait x1 '^AST 1 '")
t_match "node1: EX granted" "$out" "status=0\(0\).* mode=EX"

on 2 -q "cl-sh do x2 lock 1 r_excl EX noqueue"
out=$(on 2 "cl-sh wait x2 '^AST 1 '")
t_match "node2: EX NOQUEUE refused with EAGAIN" "$out" "status=EAGAIN\(11\) .*mode=none"
on 2 -q "cl-sh do x2 lock 1 r_excl PR noqueue"
out=$(on 2 "cl-sh wait x2 '^AST 1 ' 2")
t_match "node2: PR NOQUEUE refused with EAGAIN" "$out" "status=EAGAIN\(11\)"
out=$(on 1 "cl-sh count x1 '^BAST'")
t_match "node1: no blocking callback for NOQUEUE requests" "$out" "^0$"

t_check "node2: a queued PR request accepted" on 2 -q "cl-sh do x2 lock 2 r_excl PR"
out=$(on 1 "cl-sh wait x1 '^BAST 1 '")
t_match "node1: a blocking callback on its EX lock" "$out" "^BAST 1 held=EX"
t_log "node1 saw: $out"
out=$(on 2 "cl-sh count x2 '^AST 2 '")
t_match "node2: its PR request waits" "$out" "^0$"
# The master is node 1 (it asked first): its debugfs shows the waiter
# and its requested mode; lockdebug shows the mode the bast carried.
dbg=$(on 1 "cat /sys/kernel/debug/dlm/$ls")
t_log "node1 debugfs $ls:"$'\n'"$dbg"
t_match "node1 masters r_excl" "$dbg" "Master Copy"
t_match "node1's debugfs: node 2's lock waits for PR" "$(printf '%s\n' "$dbg" | sed -n '/^Waiting Queue/,$p')" "\(PR\) Remote: +2 "
lkd=$(on 1 "dlm_tool lockdebug -v $ls")
t_match "node1's lockdebug: the EX lock was sent a bast for mode 3 (PR)" "$(printf '%s\n' "$lkd" | sed -n '/^Granted/,/^Waiting/p')" "bast 3 "

t_check "node1: unlock accepted" on 1 -q "cl-sh do x1 unlock 1"
out=$(on 2 "cl-sh wait x2 '^AST 2 '")
t_match "node2: PR granted after node 1's unlock" "$out" "status=0\(0\).* mode=PR"
out=$(on 1 "cl-sh wait x1 '^AST 1 ' 2")
t_match "node1: unlock completed with EUNLOCK" "$out" "status=EUNLOCK"

on 1 -q "cl-sh stop x1"
on 2 -q "cl-sh stop x2"
# shellcheck disable=SC2086
t_leave "$ls" $nodes
t_end
