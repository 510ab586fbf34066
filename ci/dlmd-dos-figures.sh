#!/usr/bin/env bash
# Figures for the system daemon under a denial-of-service attempt by an
# unprivileged user. Run as root, by hand; needs python3, useradd and
# runuser. Not part of ci/test.sh (the tests in dlmd/tests/dos.rs check
# the same things); this prints the numbers the README quotes.
#
#   ci/dlmd-dos-figures.sh BIN_DIR hold N hello|raw   user B holds N connections
#                                                     (saying Hello, or silent);
#                                                     then B, root and user C
#                                                     run `dlm ls` / `dlm lock`
#   ci/dlmd-dos-figures.sh BIN_DIR flood K M          user B connects K times,
#                                                     sending M bad frames on each;
#                                                     count the daemon's log
#
# BIN_DIR holds `dlmd` and `dlm` (e.g. target/release). DLMD_ARGS adds
# options to the daemon (e.g. "--max-connections-per-user 4096").
# Everything runs on a private socket; the users (dlmfig-b, dlmfig-c) and
# the daemon are removed/stopped at the end.
set -u
BIN=$(cd "$1" && pwd); WHAT=$2; shift 2
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }

D=$(mktemp -d /tmp/dlmd-figures.XXXXXX); chmod 755 "$D"
S=$D/dlmd.sock
DPID=; HPID=
cleanup() {
    exec 9>&- 2>/dev/null
    [ -n "$HPID" ] && kill "$HPID" 2>/dev/null && wait "$HPID" 2>/dev/null
    [ -n "$DPID" ] && kill "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null
    userdel dlmfig-b 2>/dev/null; userdel dlmfig-c 2>/dev/null
    rm -rf "$D"
}
trap cleanup EXIT
useradd -M -N dlmfig-b && useradd -M -N dlmfig-c || exit 1

# Open N connections and hold them (saying a control Hello on each, or
# nothing); write what happened to OUT, then wait for stdin to close.
cat >"$D/hog.py" <<'EOF'
import os, resource, socket, struct, sys
path, n, hello, out = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "hello", sys.argv[4]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
held, outcomes = [], {}
for i in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        if hello:
            s.sendall(struct.pack("<IBBB", 3, 1, 0, 0))
            s.settimeout(10)
            b = s.recv(13)
            key = "hello %s" % (struct.unpack("<q", b[5:13])[0] if len(b) == 13 else None)
        else:
            key = "connected"
    except OSError as e:
        key = "error %s" % e.strerror
    outcomes[key] = outcomes.get(key, 0) + 1
    held.append(s)
open(out, "w").write("uid %d: %s\n" % (os.getuid(), outcomes))
sys.stdin.read()
EOF

# Connect K times; on each connection send M Writes before any Hello
# (each one a protocol error), then close.
cat >"$D/flood.py" <<'EOF'
import socket, struct, sys
path, k, m = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
frame = struct.pack("<IB", 5, 2) + b"junk"
for i in range(k):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall(frame * m)
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536):
        pass
    s.close()
print("sent %d inputs on %d connections" % (k * m, k))
EOF

# shellcheck disable=SC2086
"$BIN/dlmd" --system --socket "$S" ${DLMD_ARGS:-} >"$D/log" 2>&1 & DPID=$!
for _ in $(seq 100); do [ -S "$S" ] && break; sleep 0.05; done
export DLM_BACKEND=fallback DLM_SOCKET=$S DLM_NO_AUTOSTART=1
as_user() { local u=$1; shift; timeout 20 runuser -u "$u" -- env DLM_BACKEND=fallback \
    DLM_SOCKET="$S" DLM_NO_AUTOSTART=1 "$@"; }

case $WHAT in
hold)
    N=$1; MODE=$2
    "$BIN/dlm" join figs --mode 666
    mkfifo "$D/hold"; chmod 777 "$D"
    runuser -u dlmfig-b -- python3 "$D/hog.py" "$S" "$N" "$MODE" "$D/hog.out" <"$D/hold" &
    HPID=$!
    exec 9>"$D/hold"
    for _ in $(seq 600); do [ -s "$D/hog.out" ] && break; sleep 0.1; done
    echo "--- uid B holds $N ($MODE): $(cat "$D/hog.out")"
    echo "--- uid B: dlm ls";   as_user dlmfig-b "$BIN/dlm" ls; echo "exit $?"
    echo "--- root: dlm ls";    timeout 20 "$BIN/dlm" ls; echo "exit $?"
    echo "--- root: dlm lock";  timeout 20 "$BIN/dlm" lock -l figs r1 -- true; echo "exit $?"
    echo "--- uid C: dlm ls";   as_user dlmfig-c "$BIN/dlm" ls; echo "exit $?"
    echo "--- uid C: dlm lock"; as_user dlmfig-c "$BIN/dlm" lock -l figs r2 -- true; echo "exit $?"
    if [ "$MODE" = raw ]; then
        sleep 8
        echo "--- 8 s later, root: dlm ls"; timeout 20 "$BIN/dlm" ls; echo "exit $?"
    fi
    exec 9>&-; wait "$HPID"; HPID=
    ;;
flood)
    K=$1; M=$2
    start=$(date +%s.%N)
    runuser -u dlmfig-b -- python3 "$D/flood.py" "$S" "$K" "$M"
    end=$(date +%s.%N)
    echo "flood took $(echo "$end - $start" | bc) s"
    sleep 6
    ;;
*)
    echo "unknown figure $WHAT" >&2; exit 2
    ;;
esac
kill "$DPID"; wait "$DPID"; DPID=
echo "--- dlmd log: $(wc -l <"$D/log") lines, $(wc -c <"$D/log") bytes, $(grep -c WARN "$D/log") at warn level; its last lines:"
tail -4 "$D/log"
