#!/usr/bin/env bash
# Cluster figures: lock+unlock pairs per second from node 1 on a resource
# mastered on node 1 and on one mastered on node 2 (cl_pairs:
# dlm_ls_lock_wait(EX) + dlm_ls_unlock_wait, libdlm_lt). The master is
# the first node to take the resource; a lock shell keeps an NL lock on it
# there so that it stays, and node 1's debugfs is checked to say so.
# DLM_CLUSTER_PAIRS sets the number of pairs (default 20,000 on the local
# master, a tenth of it on the remote one, whose pairs are ~100x slower).
# shellcheck source=ci/cluster/tests/common.sh
. "$(dirname "$0")/common.sh"
t_ensure_up
ls=t_pairs
pairs=${DLM_CLUSTER_PAIRS:-20000}
t_join "$ls" 1 2
on 1 -q "cl-sh start p1 $ls"
on 2 -q "cl-sh start p2 $ls"
on 1 -q "cl-sh do p1 lock 1 r_local NL"
t_match "node1: NL on r_local" "$(on 1 "cl-sh wait p1 '^AST 1 '")" "status=0\(0\)"
on 2 -q "cl-sh do p2 lock 1 r_remote NL"
t_match "node2: NL on r_remote" "$(on 2 "cl-sh wait p2 '^AST 1 '")" "status=0\(0\)"
# Node 1's own NL lock on r_remote shows the master in its debugfs.
on 1 -q "cl-sh do p1 lock 2 r_remote NL"
t_match "node1: NL on r_remote" "$(on 1 "cl-sh wait p1 '^AST 2 '")" "status=0\(0\)"

dbg=$(on 1 "cat /sys/kernel/debug/dlm/$ls")
t_match "node1 masters r_local" "$(printf '%s\n' "$dbg" | grep -A1 '"r_local"')" "Master Copy"
t_match "node2 masters r_remote (node1's debugfs)" "$(printf '%s\n' "$dbg" | grep -A1 '"r_remote"')" "Master is node 2"
lib=$(on 1 "${T_ENV}ldd /usr/local/bin/cl_pairs | grep libdlm_lt")
t_log "node1: cl_pairs loads $lib"
if [ "$T_LIB" = ours ]; then
    t_match "node1: cl_pairs resolves libdlm_lt to dlm-rs's" "$lib" "=> /usr/local/lib/dlm-rs/libdlm_lt"
else
    t_match "node1: cl_pairs resolves libdlm_lt to Debian's" "$lib" "=> /(usr/)?lib/x86_64-linux-gnu/libdlm_lt"
fi
for res in r_local r_remote; do
    n=$pairs
    [ "$res" = r_remote ] && n=$((pairs / 10))
    out=$(on 1 -t 600 "${T_ENV}cl_pairs $ls $res $n")
    t_log "node1: $out"
    t_match "node1: $n pairs on $res" "$out" "^PAIRS res=$res n=$n "
    rate=$(printf '%s\n' "$out" | sed -n 's/.* per_s=\([0-9]*\).*/\1/p')
    t_figure "pairs_per_s_${res#r_}_master" "${rate:-?}" "/s (node1, $n pairs, $T_LIB libdlm_lt lock_wait+unlock_wait)"
done
on 1 -q "cl-sh stop p1"
on 2 -q "cl-sh stop p2"
t_leave "$ls" 1 2
t_end
