# Shared helpers of the cluster harness (ci/cluster/*.sh). Source it after
# ci/lib.sh; do not run it.
# shellcheck shell=bash
#
# One cluster at a time per state directory, CL_STATE (DLM_CLUSTER_STATE,
# default ci/out/cluster/run), which holds everything a running cluster
# has on the host:
#   config                 what up.sh was given (sourced by every script)
#   hub.pid                the network hub's QEMU
#   nodeN.pid              node N's QEMU (written by QEMU, -pidfile)
#   nodeN.console.log      node N's console (ttyS0): kernel, boot, DLMCI-READY
#   nodeN.ctl              node N's control port (ttyS1), a unix socket
#   nodeN.ctl.log          every request sent there and its answer
#   nodeN.net, hubN.net    the two ends of node N's link to the hub
#   shared.img             the disk all nodes see (lvmlockd's VG)
#   initramfs.cpio         the guests' initramfs with this run's overlay
# Nothing of it is IP: the guests' network exists only between their QEMUs.

CL_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CL_STATE=${DLM_CLUSTER_STATE:-$CL_ROOT/ci/out/cluster/run}

# Now, in seconds since the epoch with nanoseconds.
cl_now() { date +%s.%N; }
# Seconds from $1 to now (or to $2), with milliseconds.
cl_since() { awk -v a="$1" -v b="${2:-$(cl_now)}" 'BEGIN { printf "%.3f", b - a }'; }

# cl_load_config: the running cluster's settings (die if none).
cl_load_config() {
    [ -f "$CL_STATE/config" ] || die "no cluster in $CL_STATE (run ci/cluster/up.sh)"
    # shellcheck disable=SC1091
    . "$CL_STATE/config"
}

# The PID in FILE if that process is alive and is ours (its command line
# names the state directory), else nothing and status 1. PIDs are reused:
# a stale file must never make us signal a stranger.
cl_pid_of() {
    local f=$1 pid
    [ -s "$f" ] || return 1
    pid=$(tr -dc 0-9 <"$f")
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$CL_STATE/" || return 1
    echo "$pid"
}

# Stop the process whose PID is in FILE: SIGTERM, then SIGKILL after
# $2 s (default 5); wait until it is gone (another 5 s at most).
cl_stop_pidfile() {
    local f=$1 grace=${2:-5} pid i
    pid=$(cl_pid_of "$f") || { rm -f "$f"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        [ -d "/proc/$pid" ] || break
        sleep 0.1
    done
    if [ -d "/proc/$pid" ]; then
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            [ -d "/proc/$pid" ] || break
            sleep 0.1
        done
    fi
    [ -d "/proc/$pid" ] && { echo "cluster: process $pid ($f) survived SIGKILL" >&2; return 1; }
    rm -f "$f"
}

# The last LINES (default 25) lines of node N's console.
cl_console_tail() {
    local n=$1 lines=${2:-25} f="$CL_STATE/node$1.console.log"
    echo "---- node$n console ($f), last $lines lines ----"
    if [ -f "$f" ]; then tail -n "$lines" "$f" | tr -d '\r'; else echo "(no console log)"; fi
}
cl_console_tails() {
    local n
    for n in $(seq 1 "${CL_NODES:-3}"); do cl_console_tail "$n" "${1:-25}"; done
    echo "----"
}

# cl_on N [-t SECS] [-q] CMD
# Run CMD (a bash command string) on node N through its control port and
# print its output; returns CMD's exit status (124: it timed out in the
# guest). The guest bounds CMD by SECS (default 60); the host waits SECS+10
# for the answer and returns 125 if none comes (the guest is dead or
# hung), 126 if the port cannot be reached. -q: print nothing.
# Called in the current shell (not in $(...)), it leaves the clocks of the
# exchange in CL_ON_SENT and CL_ON_BEGUN (the host's, before the request
# and when the answer began) and CL_ON_GUEST (the guest's as it began).
cl_on() {
    local n=$1 tmo=60 quiet=0
    shift
    while [ $# -gt 0 ]; do
        case "$1" in
        -t) tmo=$2; shift 2 ;;
        -q) quiet=1; shift ;;
        *) break ;;
        esac
    done
    local cmd=$* sock="$CL_STATE/node$n.ctl" log="$CL_STATE/node$n.ctl.log"
    [ -S "$sock" ] || { echo "cluster: node$n has no control socket $sock" >&2; return 126; }
    local id enc line rc="" started=0 deadline now left
    id="$$-$RANDOM$RANDOM"
    enc=$(printf '%s' "$cmd" | base64 -w0)
    printf '>>> %s [%s] %s\n' "$(date +%T.%N | cut -c1-12)" "$id" "$cmd" >>"$log"
    # The coprocess is socat, connected to the port; it ends when we close
    # its input or kill it.
    local CL_CTL_PID=""
    coproc CL_CTL { exec socat -t 1 - UNIX-CONNECT:"$sock" 2>>"$log"; }
    # shellcheck disable=SC2154 # set by coproc
    local cpid=$CL_CTL_PID in=${CL_CTL[1]} out=${CL_CTL[0]}
    CL_ON_SENT=$EPOCHREALTIME
    printf 'RUN %s %s %s\n' "$id" "$tmo" "$enc" >&"$in"
    deadline=$(($(date +%s) + tmo + 10))
    while :; do
        now=$(date +%s)
        left=$((deadline - now))
        [ "$left" -gt 0 ] || break
        IFS= read -r -t "$left" line <&"$out" || break
        line=${line%$'\r'}
        CL_LAST_LINE=$line
        printf '%s\n' "$line" >>"$log"
        case "$line" in
        "@@DLMCI-BEGIN $id "*) CL_ON_BEGUN=$EPOCHREALTIME CL_ON_GUEST=${line##* } started=1 ;;
        *"@@DLMCI-END $id "*)
            # Output without a final newline shares the marker's line.
            line=${line%%"@@DLMCI-END $id "*}
            [ -n "$line" ] && [ "$quiet" = 0 ] && printf '%s\n' "$line"
            rc=${CL_LAST_LINE##* }
            break
            ;;
        *) [ "$started" = 1 ] && [ "$quiet" = 0 ] && printf '%s\n' "$line" ;;
        esac
    done
    kill "$cpid" 2>/dev/null || true
    wait "$cpid" 2>/dev/null || true
    if [ -z "$rc" ]; then
        if [ "$started" = 0 ] && [ ! -S "$sock" ]; then
            echo "cluster: node$n: control socket gone" >&2
            return 126
        fi
        echo "cluster: node$n: no answer within $((tmo + 10)) s to: $cmd" | tee -a "$log" >&2
        return 125
    fi
    printf '<<< [%s] exit %s\n' "$id" "$rc" >>"$log"
    return "$rc"
}

# cl_offset N: print node N's clock minus the host's (seconds) and the
# uncertainty (half the best round trip of five), e.g. "0.412 0.004".
cl_offset() {
    local n=$1 i best="" off=""
    for i in 1 2 3 4 5; do
        cl_on "$n" -t 5 -q true || return 1
        read -r rtt o < <(awk -v s="$CL_ON_SENT" -v b="$CL_ON_BEGUN" -v g="$CL_ON_GUEST" \
            'BEGIN { printf "%.6f %.6f\n", b - s, g - (s + b) / 2 }')
        if [ -z "$best" ] || awk -v a="$rtt" -v b="$best" 'BEGIN { exit !(a < b) }'; then
            best=$rtt off=$o
        fi
    done
    awk -v o="$off" -v r="$best" 'BEGIN { printf "%.4f %.4f\n", o, r / 2 }'
}

# cl_wait_console N PATTERN SECS: wait until node N's console has a line
# matching PATTERN (grep -E); 1 if it does not within SECS, 2 if the node
# reported DLMCI-FAILED or its QEMU is gone.
cl_wait_console() {
    local n=$1 pat=$2 secs=$3 f="$CL_STATE/node$1.console.log" end
    end=$(($(date +%s) + secs))
    while [ "$(date +%s)" -lt "$end" ]; do
        grep -qE "$pat" "$f" 2>/dev/null && return 0
        grep -q "^DLMCI-FAILED" "$f" 2>/dev/null && return 2
        cl_pid_of "$CL_STATE/node$n.pid" >/dev/null || { [ -f "$CL_STATE/node$n.pid" ] && return 2; }
        sleep 0.1
    done
    return 1
}

# cl_until SECS CMD...: run CMD every 0.2 s until it succeeds; 1 after SECS.
cl_until() {
    local secs=$1 end
    shift
    end=$(($(date +%s) + secs))
    while :; do
        "$@" && return 0
        [ "$(date +%s)" -lt "$end" ] || return 1
        sleep 0.2
    done
}

# --- the QEMU processes -------------------------------------------------------

# cl_start_hub: the network: a QEMU with no machine whose hub joins one
# datagram socket pair per node. Frames from one node go to all others.
cl_start_hub() {
    local args=() n
    for n in $(seq 1 "$CL_NODES"); do
        rm -f "$CL_STATE/hub$n.net"
        args+=(-netdev "dgram,id=l$n,local.type=unix,local.path=$CL_STATE/hub$n.net,remote.type=unix,remote.path=$CL_STATE/node$n.net"
            -netdev "hubport,id=p$n,hubid=0,netdev=l$n")
    done
    rm -f "$CL_STATE/hub.pid"
    setsid timeout -s KILL "$CL_LIFETIME" qemu-system-x86_64 -name dlmci-hub -M none -nodefaults -display none \
        -pidfile "$CL_STATE/hub.pid" "${args[@]}" </dev/null >"$CL_STATE/hub.log" 2>&1 &
    echo $! >"$CL_STATE/hub.wrapper.pid"
    local i
    for ((i = 0; i < 100; i++)); do
        [ -S "$CL_STATE/hub$CL_NODES.net" ] && cl_pid_of "$CL_STATE/hub.pid" >/dev/null && return 0
        cl_pid_of "$CL_STATE/hub.wrapper.pid" >/dev/null || break
        sleep 0.1
    done
    cat "$CL_STATE/hub.log" >&2
    echo "cluster: the hub did not start" >&2
    return 1
}

# cl_start_node N: boot node N (its QEMU in the background; cl_wait_ready
# waits for it). A console log of an earlier boot is kept as
# nodeN.console.prev.log.
cl_start_node() {
    local n=$1 mac
    mac=$(printf '52:54:00:77:00:%02x' "$n")
    rm -f "$CL_STATE/node$n.net" "$CL_STATE/node$n.ctl" "$CL_STATE/node$n.pid"
    [ -f "$CL_STATE/node$n.console.log" ] && mv "$CL_STATE/node$n.console.log" "$CL_STATE/node$n.console.prev.log"
    : >"$CL_STATE/node$n.console.log"
    local append="console=ttyS0 panic=-1 oops=panic loglevel=4 net.ifnames=0 rdinit=/init"
    append+=" dlmci.node=$n dlmci.nodes=$CL_NODES dlmci.net=$CL_NET"
    [ -n "$CL_TOKEN" ] && append+=" dlmci.token=$CL_TOKEN"
    # snapshot=on: the guest's writes to its root go to a temporary file
    # QEMU makes in TMPDIR and deletes at once.
    TMPDIR=$CL_STATE setsid timeout -s KILL "$CL_LIFETIME" qemu-system-x86_64 -name "dlmci-node$n" \
        "${CL_ACCEL_ARGS[@]}" -M pc -smp 1 -m "$CL_MEM" -nodefaults -display none -no-reboot \
        -pidfile "$CL_STATE/node$n.pid" \
        -kernel "$CL_VMLINUX" -initrd "$CL_STATE/initramfs.cpio" -append "$append" \
        -chardev "file,id=con,path=$CL_STATE/node$n.console.log" -serial chardev:con \
        -chardev "socket,id=ctl,path=$CL_STATE/node$n.ctl,server=on,wait=off" -serial chardev:ctl \
        -drive "file=$CL_ROOTFS,format=raw,if=none,id=root,snapshot=on" \
        -device virtio-blk-pci,drive=root,serial=dlmci-root \
        -drive "file=$CL_STATE/shared.img,format=raw,if=none,id=shared,file.locking=off" \
        -device virtio-blk-pci,drive=shared,share-rw=on,serial=dlmci-shared \
        -netdev "dgram,id=net,local.type=unix,local.path=$CL_STATE/node$n.net,remote.type=unix,remote.path=$CL_STATE/hub$n.net" \
        -device "virtio-net-pci,netdev=net,mac=$mac" \
        </dev/null >"$CL_STATE/node$n.qemu.log" 2>&1 &
    echo $! >"$CL_STATE/node$n.wrapper.pid"
}

# cl_wait_ready N SECS: node N printed DLMCI-READY and its agent answers.
cl_wait_ready() {
    local n=$1 secs=$2 rc=0
    cl_wait_console "$n" "^DLMCI-READY $n" "$secs" || rc=$?
    case "$rc" in
    0) ;;
    1) echo "cluster: node$n not ready within $secs s" >&2; return 1 ;;
    *) echo "cluster: node$n failed to boot" >&2; cat "$CL_STATE/node$n.qemu.log" >&2; return 1 ;;
    esac
    cl_on "$n" -t 10 -q true || { echo "cluster: node$n's agent does not answer" >&2; return 1; }
}

# cl_kill_node N: SIGKILL node N's QEMU (a node failure); waits until it
# is gone. Prints the time of the kill (cl_now) on stdout.
cl_kill_node() {
    local n=$1 pid i
    pid=$(cl_pid_of "$CL_STATE/node$n.pid") || { echo "cluster: node$n is not running" >&2; return 1; }
    cl_now
    kill -KILL "$pid"
    for ((i = 0; i < 100; i++)); do
        [ -d "/proc/$pid" ] || break
        sleep 0.05
    done
    [ ! -d "/proc/$pid" ] || { echo "cluster: node$n's QEMU $pid survived SIGKILL" >&2; return 1; }
    rm -f "$CL_STATE/node$n.pid"
    cl_stop_pidfile "$CL_STATE/node$n.wrapper.pid" 1 || true
}

# cl_down: stop every QEMU of the cluster by its PID (nodes, then hub).
cl_down() {
    local n rc=0
    for n in $(seq 1 "${CL_NODES:-9}"); do
        [ -f "$CL_STATE/node$n.pid" ] || [ -f "$CL_STATE/node$n.wrapper.pid" ] || continue
        cl_stop_pidfile "$CL_STATE/node$n.pid" 5 || rc=1
        cl_stop_pidfile "$CL_STATE/node$n.wrapper.pid" 2 || rc=1
    done
    cl_stop_pidfile "$CL_STATE/hub.pid" 5 || rc=1
    cl_stop_pidfile "$CL_STATE/hub.wrapper.pid" 2 || rc=1
    rm -f "$CL_STATE"/*.net "$CL_STATE"/*.ctl
    return "$rc"
}
