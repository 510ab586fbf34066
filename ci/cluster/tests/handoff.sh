#!/usr/bin/env bash
# shellcheck disable=SC2317 # checks are passed to t_check and cl_until by name
# Cluster test 2: handoff by down-conversion, the value block passing
# from node to node. Node 1 holds EX; node 2 queues PR with VALBLK; on
# its blocking callback node 1 converts EX->NL writing the value block,
# and node 2 is granted PR reading it. Node 3 then asks EX: node 2 (PR)
# and node 1 (NL, compatible) are in the way only through node 2, which
# converts to NL; node 3 is granted EX with the same value, writes a new
# one converting EX->PR, and node 1's NL->PR conversion reads node 3's.
# Last, 1,000 handoffs between node 1 and node 2 (cl_pingpong), every one
# checked to carry the other side's counter in the value block.
# shellcheck source=ci/cluster/tests/common.sh
. "$(dirname "$0")/common.sh"
t_ensure_up
ls=t_hand
t_join "$ls" 1 2 3
for n in 1 2 3; do
    on "$n" -q "cl-sh start h$n $ls"
    t_lib "$n" "h$n"
done

on 1 -q "cl-sh do h1 lock 1 r_lvb EX valblk"
out=$(on 1 "cl-sh wait h1 '^AST 1 '")
t_match "node1: EX granted, a fresh value block" "$out" "status=0\(0\).* mode=EX lvb=<zero>"
on 2 -q "cl-sh do h2 lock 1 r_lvb PR valblk"
out=$(on 1 "cl-sh wait h1 '^BAST 1 '")
t_match "node1: blocking callback" "$out" "held=EX"
t_check "node1: EX->NL with the value block 'from-node1'" on 1 -q "cl-sh do h1 convert 1 NL valblk lvb=from-node1"
out=$(on 2 "cl-sh wait h2 '^AST 1 '")
t_match "node2: PR granted with node 1's value block" "$out" "status=0\(0\).* mode=PR lvb=\"from-node1\""
out=$(on 1 "cl-sh wait h1 '^AST 1 ' 2")
t_match "node1: down-conversion to NL granted" "$out" "status=0\(0\).* mode=NL"

on 3 -q "cl-sh do h3 lock 1 r_lvb EX valblk"
out=$(on 2 "cl-sh wait h2 '^BAST 1 '")
t_match "node2: blocking callback on its PR" "$out" "held=PR"
t_check "node2: PR->NL" on 2 -q "cl-sh do h2 convert 1 NL valblk"
out=$(on 3 "cl-sh wait h3 '^AST 1 '")
t_match "node3: EX granted with the value block node 1 wrote" "$out" "status=0\(0\).* mode=EX lvb=\"from-node1\""
on 1 -q "cl-sh do h1 convert 1 PR valblk"
out=$(on 3 "cl-sh wait h3 '^BAST 1 '")
t_match "node3: blocking callback on its EX (node 1 asks PR)" "$out" "held=EX"
t_check "node3: EX->PR with the value block 'from-node3'" on 3 -q "cl-sh do h3 convert 1 PR valblk lvb=from-node3"
out=$(on 1 "cl-sh wait h1 '^AST 1 ' 3")
t_match "node1: PR granted with node 3's value block" "$out" "status=0\(0\).* mode=PR lvb=\"from-node3\""
for n in 1 2 3; do on "$n" -q "cl-sh stop h$n"; done

if [ "$T_LIB" = rust ]; then
    t_log "the 1,000 handoffs are cl_pingpong's (C); not run for the Rust API"
    t_leave "$ls" 1 2 3
    t_end
fi
# 1,000 handoffs: 500 grants on each side.
handoffs=${DLM_CLUSTER_HANDOFFS:-1000}
half=$((handoffs / 2))
res=r_pp$$
on 1 -q "rm -f /tmp/pp1.*; setsid ${T_ENV}cl_pingpong $ls $res $half first /tmp/pp1.samples >/tmp/pp1.out 2>&1 & echo \$! >/tmp/pp1.pid"
t_check "node1: pingpong holds EX" on 1 -q "timeout 20 sh -c 'until grep -q HOLDING /tmp/pp1.out; do sleep 0.05; done'"
dbg=$(on 1 "grep -A1 '\"$res\"' /sys/kernel/debug/dlm/$ls")
t_match "node1 (the first to ask) masters the pingpong resource" "$dbg" "Master Copy"
lib=$(on 1 "grep -o '/[^ ]*libdlm_lt[^ ]*' /proc/\$(cat /tmp/pp1.pid)/maps | sort -u")
if [ "$T_LIB" = ours ]; then
    t_match "node1: cl_pingpong runs on dlm-rs's libdlm_lt" "$lib" "^/usr/local/lib/dlm-rs/libdlm_lt"
else
    t_match "node1: cl_pingpong runs on Debian's libdlm_lt" "$lib" "^/usr/lib/.*libdlm_lt"
fi
on 2 -q "rm -f /tmp/pp2.*; setsid ${T_ENV}cl_pingpong $ls $res $half second /tmp/pp2.samples >/tmp/pp2.out 2>&1 & echo \$! >/tmp/pp2.pid"
t0=$(cl_now)
# Bounded: under TCG a handoff takes a few milliseconds.
for n in 1 2; do
    t_check "node$n: pingpong finished" on "$n" -t 300 -q "p=\$(cat /tmp/pp$n.pid); timeout 280 sh -c \"while kill -0 \$p 2>/dev/null; do sleep 0.1; done\""
done
secs=$(cl_since "$t0")
for n in 1 2; do
    out=$(on "$n" "cat /tmp/pp$n.out")
    t_log "node$n: $(printf '%s\n' "$out" | grep '^PINGPONG')"
    t_match "node$n: $half handoffs, every value block right" "$(printf '%s\n' "$out" | grep '^PINGPONG')" \
        "grants=$half samples=$half .*lvb_errors=0 "
done
# Both sides' samples together: the median and p99 of one handoff.
samples=$( (on 1 "cat /tmp/pp1.samples"; on 2 "cat /tmp/pp2.samples") | grep -E '^[0-9]+$' | sort -n)
count=$(printf '%s\n' "$samples" | grep -c .)
t_match "$handoffs handoff samples" "$count" "^$handoffs$"
median=$(printf '%s\n' "$samples" | awk -v n="$count" 'NR == int(n / 2) + 1 { printf "%.3f", $1 / 1e6 }')
p99=$(printf '%s\n' "$samples" | awk -v n="$count" 'NR == int(n * 0.99) + 1 { printf "%.3f", $1 / 1e6 }')
t_figure handoff_median_ms "$median" "ms (over $count handoffs, node1<->node2)"
t_figure handoff_p99_ms "$p99" ms
t_figure handoffs_per_s "$(awk -v n="$count" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')" "/s (wall, incl. start)"
t_leave "$ls" 1 2 3
t_end
