#!/usr/bin/env bash
# shellcheck disable=SC2317 # checks are passed to t_check and cl_until by name
# Cluster test 4: node failure. Node 3 holds EX locks, each with a value
# block it wrote, on resources mastered by each node:
#   m1   mastered by node 1; node 1 holds NL+VALBLK on it
#   m2   mastered by node 2; node 2 holds NL+VALBLK on it
#   m3   mastered by node 3; node 1 holds NL+VALBLK on it (a survivor
#        with a VALBLK lock)
#   m3e  mastered by node 3; no survivor holds a lock on it
# and PR+VALBLK requests of the survivors wait behind each (node 2 on m1,
# m3 and m3e, node 1 on m2). Then node 3's QEMU is killed (SIGKILL).
# Checks: corosync and dlm_controld drop node 3; every waiter is granted
# after recovery; the value block is VALNOTVALID on m1, m2 and m3 (a dead
# EX holder may have changed it); on m3e, whose master died with no
# survivor holding a lock, it comes back all zero and NOT flagged: lost
# silently. The test detects that case the way userspace can: every
# writer stores a non-empty value, so a zero block without VALNOTVALID on
# a resource that had one means the value was lost. New requests work
# afterwards. On nodes 1 and 2 a Rust API observer (dlm-locksh
# --recovery) sees recover_prep, recover_slot for node 3 and recover_done
# with members 1 and 2, each within 2 s of the kernel's own recovery.
# Figures: kill -> corosync's new membership, -> the kernel's
# recovery done, -> the survivors' grants, and the kernel's recovery done
# -> recover_done (guest clocks moved onto the
# host's by cl_offset). What the stack shows before and after is kept in
# ci/out/cluster/run/observe-failure.txt. Node 3 stays down (the rejoin
# test boots it).
# shellcheck source=ci/cluster/tests/common.sh
. "$(dirname "$0")/common.sh"
t_ensure_up
ls=t_fail
obs=$CL_STATE/observe-failure.txt
: >"$obs"
observe() {
    local n=$1 what=$2
    {
        echo "=== node$n, $what ($(date -u +%T.%N | cut -c1-12) host UTC)"
        on "$n" -t 30 "echo '# dlm_tool ls'; dlm_tool ls; echo '# configfs spaces/$ls/nodes'; ls /sys/kernel/config/dlm/cluster/spaces/$ls/nodes 2>&1 | tr '\n' ' '; echo; echo '# configfs comms'; ls /sys/kernel/config/dlm/cluster/comms | tr '\n' ' '; echo; echo '# /sys/kernel/dlm/$ls'; for f in /sys/kernel/dlm/$ls/*; do [ -r \"\$f\" ] && printf '%s=%s\n' \"\${f##*/}\" \"\$(cat \"\$f\" 2>&1)\"; done; echo '# dlm_tool status'; dlm_tool status; echo '# corosync-quorumtool -l'; corosync-quorumtool -l" 2>&1
    } >>"$obs"
}

t_join "$ls" 1 2 3
for n in 1 2 3; do
    on "$n" -q "cl-sh start f$n $ls"
    t_lib "$n" "f$n"
done
# The survivors' recovery callbacks, through the Rust API's observers.
for n in 1 2; do t_recovery_watch "$n" "r$n" "$ls" 1:1,2:2,3:3; done
ast_ok() { # N SHELL H [K]: the Kth AST of handle H is a grant
    local out
    out=$(on "$1" "cl-sh wait $2 '^AST $3 ' ${4:-1}")
    printf '%s\n' "$out" | grep -q 'status=0(0)' || { t_log "$2: $out"; return 1; }
}
# The masters: the first node to ask.
on 1 -q "cl-sh do f1 lock 1 m1 NL valblk"
on 2 -q "cl-sh do f2 lock 2 m2 NL valblk"
t_check "node1 NL on m1" ast_ok 1 f1 1
t_check "node2 NL on m2" ast_ok 2 f2 2
# Node 3 takes EX on each (m3 and m3e first, so it masters them), writes
# the value block by converting to NL, and takes EX again.
h=3
for r in m3 m3e m1 m2; do
    on 3 -q "cl-sh do f3 lock $h $r EX valblk"
    t_check "node3 EX on $r" ast_ok 3 f3 $h 1
    on 3 -q "cl-sh do f3 convert $h NL valblk lvb=$r-from-node3"
    t_check "node3 $r EX->NL writing its value" ast_ok 3 f3 $h 2
    if [ "$r" = m3 ]; then
        on 1 -q "cl-sh do f1 lock 3 m3 NL valblk"
        out=$(on 1 "cl-sh wait f1 '^AST 3 '")
        t_match "node1 NL+VALBLK on m3 reads node 3's value" "$out" 'status=0\(0\).*lvb="m3-from-node3"'
    fi
    on 3 -q "cl-sh do f3 convert $h EX valblk"
    out=$(on 3 "cl-sh wait f3 '^AST $h ' 3")
    t_match "node3 EX again on $r" "$out" "status=0\\(0\\).*mode=EX lvb=\"$r-from-node3\""
    h=$((h + 1))
done
dbg=$(on 3 "cat /sys/kernel/debug/dlm/$ls")
for m in 1 2 3; do
    for r in m$m m${m}e; do
        [ "$r" = m1e ] || [ "$r" = m2e ] && continue
        block=$(printf '%s\n' "$dbg" | grep -A1 "\"$r\"" | tail -n 1)
        if [ "$m" = 3 ]; then
            t_match "node3 masters $r" "$block" "Master Copy"
        else
            t_match "node$m masters $r (node3's debugfs)" "$block" "Master is node $m"
        fi
    done
done
# The waiters.
on 2 -q "cl-sh do f2 lock 11 m1 PR valblk"
on 2 -q "cl-sh do f2 lock 13 m3 PR valblk"
on 2 -q "cl-sh do f2 lock 14 m3e PR valblk"
on 1 -q "cl-sh do f1 lock 12 m2 PR valblk"
on 3 -q "cl-sh wait f3 '^BAST' 4"
t_check "node3 got a blocking callback for each of its 4 EX locks" [ "$(on 3 "cl-sh count f3 '^BAST'")" -ge 4 ]
t_match "the waiters wait (node2)" "$(on 2 "cl-sh count f2 '^AST 1[134] '")" "^0$"
t_match "the waiters wait (node1)" "$(on 1 "cl-sh count f1 '^AST 12 '")" "^0$"
observe 1 "before the kill"

read -r off1 err1 < <(cl_offset 1)
read -r off2 err2 < <(cl_offset 2)
t_log "guest clocks minus the host's: node1 $off1 s (±$err1), node2 $off2 s (±$err2)"
g1=$(on 1 "echo \$EPOCHREALTIME")
g2=$(on 2 "echo \$EPOCHREALTIME")
t_kill=$(cl_kill_node 3)
t_log "node3 killed (SIGKILL of its QEMU)"

# The waiters' grants; corosync needs its token timeout and consensus first.
ast_m1="" ast_m2="" ast_m3="" ast_m3e=""
for w in "2 f2 11 m1" "1 f1 12 m2" "2 f2 13 m3" "2 f2 14 m3e"; do
    read -r wn wsh wh wr <<<"$w"
    out=$(on "$wn" -t 90 "cl-sh wait $wsh '^AST $wh ' 1 80")
    printf -v "ast_$wr" '%s' "$out"
    t_log "node$wn on $wr: $out"
    t_match "node$wn: its PR on $wr granted after node 3 died" "$out" "status=0\\(0\\).* mode=PR"
done
t_match "m1 (master node1 alive, node 3 held EX): VALNOTVALID" "$ast_m1" " VALNOTVALID"
t_match "m2 (master node2 alive, node 3 held EX): VALNOTVALID" "$ast_m2" " VALNOTVALID"
t_match "m3 (master node3 died, node1 held NL+VALBLK): VALNOTVALID" "$ast_m3" " VALNOTVALID"
t_log "m1 value: $(printf '%s\n' "$ast_m1" | grep -o 'lvb=[^ ]*'), m2: $(printf '%s\n' "$ast_m2" | grep -o 'lvb=[^ ]*'), m3: $(printf '%s\n' "$ast_m3" | grep -o 'lvb=[^ ]*')"
# m3e: the value is gone and nothing says so.
t_match "m3e (master node3 died, no survivor lock): value block all zero" "$ast_m3e" "lvb=<zero>"
t_check "m3e: and not flagged VALNOTVALID (lost silently)" eval "! printf '%s\n' \"\$ast_m3e\" | grep -q VALNOTVALID"
if printf '%s\n' "$ast_m3e" | grep -q 'lvb=<zero>' && ! printf '%s\n' "$ast_m3e" | grep -q VALNOTVALID; then
    t_log "m3e: detected: a zero value block without VALNOTVALID on a resource that had a value: EMPTIED by recovery"
fi

# Membership and recovery as the survivors' logs tell it.
t_members_k() { t_members "$1" 2; }
t_check "corosync on node1 counts 2 members, quorate" cl_until 30 t_members_k 1
out=$(on 1 "dlm_tool ls $ls | grep '^members'")
t_match "dlm_tool ls on node1: members 1 2" "$out" "^members +1 2 *$"
out=$(on 1 "ls /sys/kernel/config/dlm/cluster/spaces/$ls/nodes | tr '\n' ' '")
t_match "configfs spaces/$ls/nodes on node1: 1 2" "$out" "^1 2 $"
observe 1 "after node 3 was killed"
ev=$(on 1 -t 60 "cl-events $g1 'membership|Members|dlm_recover|recover|node 3|nodeid 3|fail|remove'")
{
    echo "=== node1's events since the kill (guest realtime; node1 clock - host = $off1 s ±$err1)"
    printf '%s\n' "$ev"
} >>"$obs"
host() { awk -v t="$1" -v o="$2" -v k="$t_kill" 'BEGIN { printf "%.3f", t - o - k }'; }
tm=$(printf '%s\n' "$ev" | awk '$2 == "corosync" && /A new membership/ { print $1; exit }')
tr=$(printf '%s\n' "$ev" | awk -v ls="$ls" '$2 == "kernel" && index($0, ls ": dlm_recover") && / done: / { print $1; exit }')
[ -n "$tm" ] && t_figure kill_to_corosync_membership_s "$(host "$tm" "$off1")" "s (node1's corosync log; ±$err1)"
[ -n "$tr" ] && t_figure kill_to_recovery_done_s "$(host "$tr" "$off1")" "s (node1's kernel: $ls dlm_recover done; ±$err1)"
t_check "node1's corosync logged the new membership" [ -n "$tm" ]
t_check "node1's kernel logged $ls's recovery done" [ -n "$tr" ]
for a in m1 m2 m3 m3e; do
    v=ast_$a
    node=2 off=$off2
    [ "$a" = m2 ] && node=1 off=$off1
    t=$(printf '%s\n' "${!v}" | sed -n 's/.* t=\([0-9.]*\).*/\1/p')
    [ -n "$t" ] && t_figure "kill_to_grant_${a}_s" "$(host "$t" "$off")" "s (node$node's waiter)"
done

# The recovery callbacks on both survivors: prep, slot for node 3, done
# with the two of them, each within 2 s of the kernel's own recovery.
for n in 1 2; do
    g=g$n
    t_recovery_seen "$n" "r$n" "$ls" "${!g}" 1:1,2:2 3
    [ "$n" = 1 ] && [ -n "$T_DONE_LAG" ] &&
        t_figure recovery_done_to_callback_s "$T_DONE_LAG" "s (node1: kernel's dlm_recover done -> recover_done in dlm-locksh, one clock)"
done

# New requests work: on m3e, and on a new resource.
on 2 -q "cl-sh do f2 unlock 14"
on 1 -q "cl-sh do f1 lock 20 m3e EX noqueue valblk"
out=$(on 1 "cl-sh wait f1 '^AST 20 '")
t_match "node1: a new EX NOQUEUE on m3e granted" "$out" "status=0\\(0\\).* mode=EX"
on 1 -q "cl-sh do f1 lock 21 fresh EX"
t_match "node1: EX on a new resource" "$(on 1 "cl-sh wait f1 '^AST 21 '")" "status=0\\(0\\)"
on 2 -q "cl-sh do f2 lock 21 fresh EX noqueue"
t_match "node2: NOQUEUE on it is refused" "$(on 2 "cl-sh wait f2 '^AST 21 '")" "status=EAGAIN"
for n in 1 2; do on "$n" -q "cl-sh stop f$n; cl-sh stop r$n"; done
t_leave "$ls" 1 2
t_end
