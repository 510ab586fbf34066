# What every cluster test (ci/cluster/tests/*.sh) sources: the harness,
# the running cluster's settings, checks that count, figures, and a
# summary with the daemons' logs on failure.
# shellcheck shell=bash
cd "$(dirname "${BASH_SOURCE[0]}")/../../.." || exit 1
. ci/lib.sh
. ci/cluster/lib.sh
cl_load_config
# A test's failures are counted, not fatal: no ERR trap, no set -e.
trap - ERR
set +e

# Which library the test's programs use (DLM_CLUSTER_LIB; the tests
# NAME-ours.sh and NAME-rust.sh set it and run NAME.sh):
#   debian  Debian's libdlm3 (the default)
#   ours    dlm-rs's libdlm_lt.so.3 / libdlm.so.3 from /usr/local/lib/dlm-rs
#           (LD_LIBRARY_PATH; T_ENV is the prefix for a program's command)
#   rust    the Rust API: dlm-locksh in place of cl_locksh
T_LIB=${DLM_CLUSTER_LIB:-debian}
# shellcheck disable=SC2034 # T_ENV is used by the tests that source this
case "$T_LIB" in
debian) T_ENV="" ;;
ours) T_ENV="env LD_LIBRARY_PATH=/usr/local/lib/dlm-rs " ;;
rust) T_ENV="" ;;
*) die "DLM_CLUSTER_LIB must be debian, ours or rust, not '$T_LIB'" 2 ;;
esac
T_SUFFIX=""
[ "$T_LIB" = debian ] || T_SUFFIX="_$T_LIB"
T_NAME=$(basename "$0" .sh)
[ "$T_LIB" = debian ] || T_NAME="$T_NAME-$T_LIB"
T_PASS=0
T_FAIL=0
T_START=$(cl_now)
T_FIGURES=$CL_STATE/figures.txt

t_log() { echo "[$T_NAME $(cl_since "$T_START")s] $*"; }

# t_check DESC CMD...: CMD must succeed.
t_check() {
    local desc=$1
    shift
    if "$@"; then
        T_PASS=$((T_PASS + 1))
        t_log "ok: $desc"
    else
        T_FAIL=$((T_FAIL + 1))
        t_log "FAIL: $desc"
    fi
}

# t_match DESC TEXT REGEX: TEXT must match REGEX (grep -E).
t_match() {
    if printf '%s\n' "$2" | grep -qE -- "$3"; then
        T_PASS=$((T_PASS + 1))
        t_log "ok: $1"
    else
        T_FAIL=$((T_FAIL + 1))
        t_log "FAIL: $1: '$2' does not match /$3/"
    fi
}

# t_figure KEY VALUE [UNIT]: a measured figure, printed and kept in
# $CL_STATE/figures.txt; KEY gets _ours or _rust when not on Debian's
# libdlm.
t_figure() {
    printf '%s %s %s\n' "$1$T_SUFFIX" "$2" "${3:-}" >>"$T_FIGURES"
    t_log "figure: $1$T_SUFFIX = $2 ${3:-}"
}

# on N [-t S] [-q] CMD: cl_on, with CL_LIB (the lock shell cl-sh starts)
# exported to CMD.
on() {
    local n=$1 opts=()
    shift
    while [ $# -gt 1 ]; do
        case "$1" in
        -t) opts+=(-t "$2"); shift 2 ;;
        -q) opts+=(-q); shift ;;
        *) break ;;
        esac
    done
    cl_on "$n" "${opts[@]}" "export CL_LIB=$T_LIB; $*"
}

# t_lib N SHELL: lock shell SHELL on node N runs on the library the test
# asked for (its mapped libdlm files: Debian's /usr/lib one, ours from
# /usr/local/lib/dlm-rs, none for the Rust shell).
t_lib() {
    local libs
    libs=$(on "$1" "cl-sh libs $2" | tr '\n' ' ')
    case "$T_LIB" in
    debian) t_match "node$1: $2 runs on Debian's libdlm" "$libs" "^exe=/usr/local/bin/cl_locksh /usr/lib/[^ ]*libdlm_lt[^ ]* $" ;;
    ours) t_match "node$1: $2 runs on dlm-rs's libdlm_lt" "$libs" "^exe=/usr/local/bin/cl_locksh /usr/local/lib/dlm-rs/libdlm_lt[^ ]* $" ;;
    rust) t_match "node$1: $2 is the Rust API's shell (no libdlm mapped)" "$libs" "^exe=/usr/local/bin/dlm-locksh $" ;;
    esac
}

# t_running N: node N's QEMU is alive.
t_running() { cl_pid_of "$CL_STATE/node$1.pid" >/dev/null; }

# t_members N K: corosync on node N counts K members, with quorum.
t_members() {
    cl_on "$1" -t 10 -q "corosync-quorumtool -s >/tmp/q 2>&1; grep -q '^Quorate: *Yes' /tmp/q && [ \$(corosync-quorumtool -l | grep -c ' node[0-9]') -eq $2 ]"
}

# t_ensure_up: every node running and a member; a node that is not is
# booted again. Needed by tests that follow one that killed a node.
t_ensure_up() {
    local n started=()
    for n in $(seq 1 "$CL_NODES"); do
        t_running "$n" && continue
        t_log "node$n is not running: booting it"
        cl_start_node "$n"
        started+=("$n")
    done
    for n in ${started[@]+"${started[@]}"}; do
        cl_wait_ready "$n" 120 || { t_log "FAIL: node$n did not come back"; T_FAIL=$((T_FAIL + 1)); t_end; }
    done
    if ! cl_until 60 t_members 1 "$CL_NODES"; then
        t_log "FAIL: corosync does not count $CL_NODES members"
        T_FAIL=$((T_FAIL + 1))
        t_end
    fi
}

# t_join LS NODE...: dlm_tool join LS on each node, in turn.
t_join() {
    local ls=$1 n
    shift
    for n in "$@"; do
        t_check "node$n joins lockspace $ls" cl_on "$n" -t 30 -q "dlm_tool join $ls"
    done
}

# The recovery callbacks (issue 14 §3) are watched through the Rust API
# whatever library a test runs on: an observer, dlm-locksh --recovery,
# its callbacks printed as RECOVER lines (see dlm-locksh's docs).
#
# t_recovery_watch N SHELL LS MEMBERS: start observer SHELL on node N;
# its join gives recover_done with MEMBERS (e.g. 1:1,2:2,3:3), slot N,
# generation 1, and recovery_status is Ok (the cluster provider is used).
t_recovery_watch() {
    local n=$1 sh=$2 ls=$3 members=$4
    on "$n" -q "CL_LIB=rust cl-sh start $sh $ls --recovery"
    t_match "node$n: recover_done at join (members $members, slot $n, generation 1)" \
        "$(on "$n" "cl-sh wait $sh '^RECOVER done'")" "^RECOVER done members=$members our_slot=$n generation=1 "
    t_match "node$n: recovery_status Ok (events from the cluster)" "$(on "$n" "cl-sh wait $sh '^RECOVERY'")" "status=ok"
}

# t_recovery_seen N SHELL LS SINCE MEMBERS FAILED: after a membership
# change, observer SHELL on node N saw recover_prep, recover_slot for
# FAILED (a node id, or - for none: a clean leave), then recover_done with
# MEMBERS, its slot and a generation above 1; each within 2 s of the
# kernel's own recovery of LS as node N's kernel log shows it (SINCE: a
# moment on node N's clock, before the change). Sets T_DONE_LAG, the
# time from the kernel's "dlm_recover ... done" to recover_done.
t_recovery_seen() {
    local n=$1 sh=$2 ls=$3 since=$4 members=$5 failed=$6 out seq want ev tk0 tk1 tp ts td
    T_DONE_LAG=""
    out=$(on "$n" -t 90 "cl-sh wait $sh '^RECOVER done members=$members ' 1 80")
    t_match "node$n: recover_done with members $members, our slot $n, a higher generation" \
        "$out" "^RECOVER done members=$members our_slot=$n generation=([2-9]|[1-9][0-9]+) "
    seq=$(on "$n" "cl-sh out $sh | awk '/^RECOVER /' | sed 1d | awk '{ print \$2 }' | tr '\n' ' '")
    if [ "$failed" = - ]; then want="^prep done( prep done)* $"; else want="^prep slot done( prep done)* $"; fi
    t_match "node$n: the callbacks in order (prep, ${failed/-/no slot}, done)" "$seq" "$want"
    if [ "$failed" != - ]; then
        t_match "node$n: recover_slot for node $failed" "$(on "$n" "cl-sh wait $sh '^RECOVER slot'")" "^RECOVER slot nodeid=$failed slot=$failed "
    fi
    ev=$(on "$n" -t 60 "cl-events $since 'dlm_recover'")
    tk0=$(printf '%s\n' "$ev" | awk -v ls="$ls" '$2 == "kernel" && index($0, ls ": dlm_recover ") && !/ done: / { print $1; exit }')
    tk1=$(printf '%s\n' "$ev" | awk -v ls="$ls" '$2 == "kernel" && index($0, ls ": dlm_recover ") && / done: / { t = $1 } END { print t }')
    t_check "node$n: its kernel logged $ls's recovery (start $tk0, done $tk1)" [ -n "$tk0" ] && [ -n "$tk1" ]
    [ -n "$tk0" ] && [ -n "$tk1" ] || return 0
    stamp() { on "$n" "cl-sh out $sh | awk '/^RECOVER $1/' | tail -n 1" | sed -n 's/.* t=\([0-9.]*\).*/\1/p'; }
    tp=$(stamp prep) td=$(stamp done)
    within() { awk -v a="$1" -v b="$2" 'BEGIN { d = a - b; exit !(d >= -2 && d <= 2) }'; }
    t_check "node$n: recover_prep within 2 s of the kernel's recovery start ($tp vs $tk0)" within "$tp" "$tk0"
    t_check "node$n: recover_done within 2 s of the kernel's recovery done ($td vs $tk1)" within "$td" "$tk1"
    if [ "$failed" != - ]; then
        ts=$(stamp slot)
        t_check "node$n: recover_slot within 2 s of the kernel's recovery done ($ts vs $tk1)" within "$ts" "$tk1"
    fi
    T_DONE_LAG=$(awk -v a="$td" -v b="$tk1" 'BEGIN { printf "%.3f", a - b }')
}

# t_leave LS NODE...: stop the node's lock shells first (cl-sh stop).
t_leave() {
    local ls=$1 n
    shift
    for n in "$@"; do
        t_running "$n" || continue
        cl_on "$n" -t 30 -q "dlm_tool leave $ls" || t_log "note: node$n: dlm_tool leave $ls failed"
    done
}

# The daemons' state and logs, for a failure.
t_dump() {
    local n
    for n in $(seq 1 "$CL_NODES"); do
        t_running "$n" || { echo "---- node$n: not running"; continue; }
        echo "---- node$n: dlm_tool ls, corosync, dlm_controld and kernel logs (tails)"
        cl_on "$n" -t 20 "dlm_tool ls; corosync-quorumtool -s | tail -n 8; tail -n 15 /var/log/corosync/corosync.log; tail -n 25 /var/log/dlm_controld/dlm_controld.log; dmesg | tail -n 20; for f in /run/cl-sh/*.out; do [ -f \"\$f\" ] && { echo \"== \$f\"; tail -n 10 \"\$f\"; }; done" 2>&1
    done
}

# t_end: the summary line; on failure the logs. Exits 1 on any failure.
t_end() {
    t_log "done in $(cl_since "$T_START") s"
    if [ "$T_FAIL" -ne 0 ]; then
        t_dump
        cl_console_tails 15
    fi
    echo "$T_NAME: $T_PASS passed, $T_FAIL failed"
    [ "$T_FAIL" -eq 0 ]
    exit
}
