#!/usr/bin/env bash
# The libdlm C test programs on the host, through the fallback: a private
# dlmd, and a replacement libdlm.so.3 / libdlm_lt.so.3 loaded through
# LD_LIBRARY_PATH (Debian's libdlm cannot run here: there is no kernel
# DLM). The transcripts are compared with the same references as the
# guest's (capi/tests/expected/, with expected/ours/ where present).
#
#   capi/tests/run-host.sh --lib DIR [--include DIR] [--valgrind] [NAME...]
#
#   --lib DIR     DIR holds libdlm.so.3 and libdlm_lt.so.3 (required)
#   --include DIR compile the programs against DIR/libdlm.h (e.g.
#                 capi/include, ours) instead of Debian's
#   --valgrind    run each program (not ct_crash, ct_flood) under
#                 valgrind's memcheck; any report fails the run
#   NAME...       only these programs (e.g. ct_lock-lt); default all, and
#                 Debian's dlm_tool join/leave
#
# dlmd (built with cargo, release) listens on a socket in a temporary
# directory; the programs get DLM_BACKEND=fallback, DLM_SOCKET and
# DLM_NO_AUTOSTART=1. After each program, lockspaces left in dlmd
# (`dlm ls`) fail the run and are removed. dlmd is stopped by its pid at
# the end, whatever happened; its log is printed when something failed.
# Results: ci/out/ctests/host/ (host-valgrind/ with --valgrind, -ourh
# appended with --include).
#
# The programs of dlm-rs's own extension (dlm_rs.h; build.sh --ours) are
# built against DIR and run too, with CT_KILL_CMD: a command that kills
# dlmd with SIGKILL and starts it again on the same socket, for the
# recovery callbacks around a lock replay. Their references are
# expected/ours/host/<name>.out where the host's differ from the guest's.
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh

lib=""
include=()
valgrind=0
only=()
while [ $# -gt 0 ]; do
    case "$1" in
    --lib) lib=$(cd "$2" && pwd); shift 2 ;;
    --include) include=(--include "$(cd "$2" && pwd)"); shift 2 ;;
    --valgrind) valgrind=1; shift ;;
    -h | --help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "run-host.sh: unknown option $1" >&2; exit 2 ;;
    *) only+=("$1"); shift ;;
    esac
done
[ -n "$lib" ] || { echo "run-host.sh: --lib DIR is required (our libdlm.so.3 and libdlm_lt.so.3)" >&2; exit 2; }
for so in libdlm.so.3 libdlm_lt.so.3; do
    [ -e "$lib/$so" ] || { echo "run-host.sh: $lib/$so missing" >&2; exit 1; }
done

install_build_deps
apt_install libdlm-dev dlm-controld
[ "$valgrind" = 1 ] && apt_install valgrind
t0=$(date +%s)
name=host
[ "$valgrind" = 1 ] && name=host-valgrind
[ ${#include[@]} -gt 0 ] && name=$name-ourh
out=ci/out/ctests
res="$out/$name"
expected=capi/tests/expected
rm -rf "$res"
mkdir -p "$res"

capi/tests/c/build.sh -o "$out/$name-bin" ${include[@]+"${include[@]}"} --ours "$lib" >"$out/$name-programs.txt"
mapfile -t progs <"$out/$name-programs.txt"
cargo build --release -p dlmd -p dlm-cli >&2
dlmd_bin=$PWD/target/release/dlmd
dlm_bin=$PWD/target/release/dlm

tmp=$(mktemp -d "${TMPDIR:-/tmp}/dlm-host-ctests.XXXXXX")
# dlmd's pid is in $tmp/dlmd.pid: CT_KILL_CMD (below) replaces the daemon.
gone() { [ ! -e "/proc/$1" ] || [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = Z ]; }
stop_dlmd() {
    local pid
    pid=$(cat "$tmp/dlmd.pid" 2>/dev/null) || return 0
    rm -f "$tmp/dlmd.pid"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do gone "$pid" && break; sleep 0.1; done
    wait "$pid" 2>/dev/null || true
}
trap 'stop_dlmd; rm -rf "$tmp"' EXIT
# start_dlmd: a dlmd on $tmp/dlmd.sock, its pid in $tmp/dlmd.pid.
cat >"$tmp/start-dlmd.sh" <<SH
#!/usr/bin/env bash
setsid "$dlmd_bin" --socket "$tmp/dlmd.sock" --log-level info >>"$tmp/dlmd.log" 2>&1 </dev/null &
echo \$! >"$tmp/dlmd.pid"
for _ in \$(seq 100); do
    [ -S "$tmp/dlmd.sock" ] && [ -n "\$(ss -xl 2>/dev/null | grep -F "$tmp/dlmd.sock")" ] && exit 0
    kill -0 \$! 2>/dev/null || exit 1
    sleep 0.1
done
exit 1
SH
# kill-dlmd.sh (CT_KILL_CMD): SIGKILL, wait until it is gone, start again.
cat >"$tmp/kill-dlmd.sh" <<SH
#!/usr/bin/env bash
pid=\$(cat "$tmp/dlmd.pid")
kill -KILL "\$pid"
for _ in \$(seq 100); do
    { [ ! -e "/proc/\$pid" ] || [ "\$(awk '{print \$3}' "/proc/\$pid/stat" 2>/dev/null)" = Z ]; } && break
    sleep 0.05
done
echo "run-host.sh: dlmd killed (SIGKILL) and started again" >>"$tmp/dlmd.log"
exec "$tmp/start-dlmd.sh"
SH
chmod +x "$tmp/start-dlmd.sh" "$tmp/kill-dlmd.sh"
"$tmp/start-dlmd.sh" || { echo "run-host.sh: dlmd did not start:" >&2; cat "$tmp/dlmd.log" >&2; exit 1; }

export DLM_BACKEND=fallback DLM_SOCKET="$tmp/dlmd.sock" DLM_NO_AUTOSTART=1
export CT_KILL_CMD="$tmp/kill-dlmd.sh"
lockspaces() { "$dlm_bin" ls | awk 'NR > 1 { printf "%s ", $1 }'; }

# run NAME CMD...: stdout, stderr and status into $res/NAME.*
run() {
    local n=$1
    shift
    case "$valgrind:$n" in
    1:ct_crash* | 1:ct_flood* | 1:dlm_tool*) ;;
    1:*) set -- valgrind -q --log-file="$res/$n.vg" --leak-check=full \
        --show-leak-kinds=definite --errors-for-leak-kinds=definite "$@" ;;
    esac
    set +e
    LD_LIBRARY_PATH=$lib timeout 150 "$@" >"$res/$n.out" 2>"$res/$n.err"
    echo $? >"$res/$n.rc"
    set -e
}
bad=0
check_left() {
    local left ls
    left=$(lockspaces)
    if [ -n "$left" ]; then
        echo "run-host.sh: $1 left lockspaces behind: $left" >&2
        for ls in $left; do "$dlm_bin" leave "$ls" >/dev/null 2>&1 || true; done
        bad=1
    fi
}

for p in "${progs[@]}"; do
    n=$(basename "$p")
    if [ ${#only[@]} -gt 0 ] && ! printf '%s\n' "${only[@]}" | grep -qx "$n"; then
        continue
    fi
    run "$n" "$p"
    check_left "$n"
done
# Debian's dlm_tool, unmodified, on our libdlm.so.3 through the fallback;
# the lockspace lines as the guest writes them.
if [ ${#only[@]} -eq 0 ]; then
    run dlm_tool-join dlm_tool join ct_tool
    echo "lockspaces after join: $(lockspaces)" >>"$res/dlm_tool-join.out"
    run dlm_tool-leave dlm_tool leave ct_tool
    echo "lockspaces after leave: $(lockspaces)" >>"$res/dlm_tool-leave.out"
    check_left dlm_tool-leave
fi

same=0
n=0
for f in "$res"/*.rc; do
    b=$(basename "$f" .rc)
    n=$((n + 1))
    want_out="$expected/$b.out"
    want_rc="$expected/$b.rc"
    [ -f "$expected/ours/$b.out" ] && want_out="$expected/ours/$b.out"
    [ -f "$expected/ours/$b.rc" ] && want_rc="$expected/ours/$b.rc"
    [ -f "$expected/ours/host/$b.out" ] && want_out="$expected/ours/host/$b.out"
    [ -f "$expected/ours/host/$b.rc" ] && want_rc="$expected/ours/host/$b.rc"
    if [ ! -f "$want_out" ]; then
        echo "run-host.sh: $b: no reference ($want_out)" >&2
        bad=1
        continue
    fi
    if ! diff -u "$want_out" "$res/$b.out" >"$res/$b.diff" 2>&1 ||
        [ "$(cat "$want_rc")" != "$(cat "$res/$b.rc")" ]; then
        echo "run-host.sh: $b differs from $want_out (exit $(cat "$res/$b.rc"), want $(cat "$want_rc")):" >&2
        head -n 40 "$res/$b.diff" >&2
        [ -s "$res/$b.err" ] && { echo "  stderr:" >&2; head -n 10 "$res/$b.err" | sed 's/^/    /' >&2; }
        bad=1
    else
        rm -f "$res/$b.diff"
        same=$((same + 1))
    fi
    if [ -f "$res/$b.vg" ] && grep -q '[^[:space:]]' "$res/$b.vg"; then
        echo "run-host.sh: valgrind reports for $b (see $res/$b.vg):" >&2
        head -n 20 "$res/$b.vg" >&2
        bad=1
    fi
done
stop_dlmd
cp "$tmp/dlmd.log" "$res/dlmd.log"
if [ "$bad" -ne 0 ]; then
    echo "run-host.sh: ---- dlmd's log (last 40 lines; all in $res/dlmd.log) ----" >&2
    tail -n 40 "$res/dlmd.log" >&2
fi
echo "run-host.sh: $same of $n transcripts equal the reference ($name; $(($(date +%s) - t0)) s); results in $res/"
[ "$bad" -eq 0 ]
