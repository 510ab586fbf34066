#!/usr/bin/env bash
# Cluster test 1: lockspace join on every node; EX on node 1 excludes
# node 2: a NOQUEUE request gets EAGAIN, a queued one sends node 1 a
# blocking callback. libdlm's callback has no mode argument; the blocked
# mode is read where the kernel shows it: the master's debugfs (the
# waiter's requested mode) and dlm_tool lockdebug on the holder ("bast
# <mode>"). Unlocking on node 1 grants node 2.
# exclusion-ours runs it on dlm-rs's libdlm_lt; exclusion-rust on the
# Rust API (dlm-locksh), whose blocking callback carries the mode, and
# adds its blocking and async paths across nodes.
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
t_lib 1 x1
t_lib 2 x2
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
if [ "$T_LIB" = rust ]; then
    t_match "node1: the Rust API's blocking callback carries the blocked mode PR" "$out" "^BAST 1 held=EX mode=PR "
fi
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

if [ "$T_LIB" = rust ]; then
    # The Rust API's blocking and async paths across nodes: node 2 takes
    # EX with a blocking Lockspace::lock (wlock), node 1 asks PR with
    # lock_async (alock) and waits; node 2's lock gets a blocking callback
    # with mode PR; a blocking NOQUEUE EX from node 2 is NotGranted
    # (EAGAIN); node 2 unlocks and node 1's future resolves to a grant.
    on 2 -q "cl-sh do x2 unlock 2"
    t_check "node2: blocking lock EX on r_paths" on 2 -q "cl-sh do x2 wlock 5 r_paths EX"
    t_match "node2: blocking EX granted" "$(on 2 "cl-sh wait x2 '^AST 5 '")" "status=0\(0\).* mode=EX"
    t_check "node1: async lock PR on r_paths" on 1 -q "cl-sh do x1 alock 5 r_paths PR"
    t_match "node2: blocking callback on the blocking-path lock, mode PR" "$(on 2 "cl-sh wait x2 '^BAST 5 '")" "^BAST 5 held=EX mode=PR "
    t_match "node1: the async request waits" "$(on 1 "cl-sh count x1 '^AST 5 '")" "^0$"
    on 1 -q "cl-sh do x1 wlock 6 r_paths EX noqueue"
    t_match "node1: blocking NOQUEUE EX refused with EAGAIN" "$(on 1 "cl-sh wait x1 '^AST 6 '")" "status=EAGAIN\(11\)"
    t_check "node2: unlock of the blocking-path lock" on 2 -q "cl-sh do x2 unlock 5"
    t_match "node2: unlocked" "$(on 2 "cl-sh wait x2 '^AST 5 ' 2")" "status=EUNLOCK"
    t_match "node1: the async request granted PR" "$(on 1 "cl-sh wait x1 '^AST 5 '")" "status=0\(0\).* mode=PR"
    t_check "node1: unlock of the async-path lock" on 1 -q "cl-sh do x1 unlock 5"
    t_match "node1: unlocked" "$(on 1 "cl-sh wait x1 '^AST 5 ' 2")" "status=EUNLOCK"
fi
on 1 -q "cl-sh stop x1"
on 2 -q "cl-sh stop x2"
# shellcheck disable=SC2086
t_leave "$ls" $nodes
t_end
