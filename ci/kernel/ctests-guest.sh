#!/bin/sh
# The guest half of ci/kernel/ctests.sh (busybox sh, run as the command of
# ci/kernel/run.sh): run every libdlm C test program in /bin (ct_*-lt,
# ct_*-thr), then Debian's dlm_tool join/leave, each under a time limit,
# and print every transcript between markers for the host to split:
#
#   @@CT-BEGIN <name>@@
#   <stdout>
#   @@CT-STDERR <name>@@
#   <stderr>
#   @@CT-END <name> rc=<status>@@
#
#   ctests-guest.sh [--libpath DIR] [--valgrind] [NAME...]
#
# --libpath DIR runs the programs with LD_LIBRARY_PATH=DIR (a replacement
# libdlm). --valgrind runs each program but ct_crash and ct_flood under
# valgrind's memcheck; its report follows the transcript between
# "@@CT-VG <name>@@" and the end marker. NAME... limits the run to those programs (default: all). After
# each program, lockspaces it left behind (/sys/kernel/dlm/*) are printed
# as "@@CT-LEFT <name> <lockspaces>@@" and removed with dlm_tool leave.
# First, "@@CT-LIBS <program> <loader's line>" says which libdlm loads.
# Exits 0; the verdict is the host's.
dmesg -n 1
libpath=""
valgrind=0
while [ $# -gt 0 ]; do
    case "$1" in
    --libpath) libpath=$2; shift 2 ;;
    --valgrind) valgrind=1; shift ;;
    *) break ;;
    esac
done
out=/tmp/ct
mkdir -p "$out"
# The AST thread of the threaded library needs to be cancellable, and
# the programs' alarm() bounds them; timeout is the last resort.
limit=150

# run NAME CMD...: CMD's stdout, stderr and status into $out/NAME.*
run() {
    name=$1
    shift
    case "$valgrind:$name" in
    1:ct_crash* | 1:ct_flood* | 1:dlm_tool*) ;;
    1:*) set -- valgrind -q --log-file="$out/$name.vg" --leak-check=full \
        --show-leak-kinds=definite --errors-for-leak-kinds=definite "$@" ;;
    esac
    if [ -n "$libpath" ]; then
        LD_LIBRARY_PATH=$libpath timeout "$limit" "$@" >"$out/$name.out" 2>"$out/$name.err"
    else
        timeout "$limit" "$@" >"$out/$name.out" 2>"$out/$name.err"
    fi
    echo $? >"$out/$name.rc"
}

# Lockspaces left behind: reported, then removed so the next program
# starts clean.
check_left() {
    left=$(ls /sys/kernel/dlm 2>/dev/null | tr '\n' ' ')
    if [ -n "$left" ]; then
        echo "@@CT-LEFT $1 $left@@"
        for ls in $left; do
            timeout 30 dlm_tool leave "$ls" >/dev/null 2>&1
        done
    fi
}

# Which libdlm the loader picks, as ldd would say (glibc's loader lists
# the objects and exits when LD_TRACE_LOADED_OBJECTS is set).
for p in /bin/ct_version-lt /bin/ct_version-thr; do
    [ -x "$p" ] || continue
    if [ -n "$libpath" ]; then
        LD_LIBRARY_PATH=$libpath LD_TRACE_LOADED_OBJECTS=1 "$p" 2>&1 | grep libdlm |
            sed "s| (0x[0-9a-f]*)||; s|^|@@CT-LIBS $(basename "$p") |"
    else
        LD_TRACE_LOADED_OBJECTS=1 "$p" 2>&1 | grep libdlm |
            sed "s| (0x[0-9a-f]*)||; s|^|@@CT-LIBS $(basename "$p") |"
    fi
done

progs=""
if [ $# -gt 0 ]; then
    for n in "$@"; do progs="$progs /bin/$n"; done
else
    progs=$(ls /bin/ct_*-lt /bin/ct_*-thr 2>/dev/null | sort)
fi
for p in $progs; do
    run "$(basename "$p")" "$p"
    check_left "$(basename "$p")"
done

# Debian's dlm_tool, unmodified: join makes a lockspace (dlm_new_lockspace
# + dlm_close_lockspace), leave removes it (dlm_open_lockspace +
# dlm_release_lockspace force 1). Only when all programs run.
if [ $# -eq 0 ] && [ -x /bin/dlm_tool ]; then
    run dlm_tool-join dlm_tool join ct_tool
    echo "lockspaces after join: $(ls /sys/kernel/dlm 2>/dev/null | tr '\n' ' ')" >>"$out/dlm_tool-join.out"
    run dlm_tool-leave dlm_tool leave ct_tool
    echo "lockspaces after leave: $(ls /sys/kernel/dlm 2>/dev/null | tr '\n' ' ')" >>"$out/dlm_tool-leave.out"
    check_left dlm_tool-leave
fi

for f in "$out"/*.out; do
    name=$(basename "$f" .out)
    echo "@@CT-BEGIN $name@@"
    cat "$f"
    echo "@@CT-STDERR $name@@"
    cat "$out/$name.err"
    if [ -f "$out/$name.vg" ]; then
        echo "@@CT-VG $name@@"
        cat "$out/$name.vg"
    fi
    echo "@@CT-END $name rc=$(cat "$out/$name.rc")@@"
done
exit 0
