#!/usr/bin/env bash
# Build the libdlm C test programs, dynamically linked, so that the library
# can be swapped at run time with LD_LIBRARY_PATH:
#
#   capi/tests/c/build.sh [-o OUTDIR] [--include DIR] [--libdir DIR] [--ours DIR] [--list] [NAME...]
#
#   -o OUTDIR       where the programs go (default ci/out/ctests/bin)
#   --include DIR   compile against DIR/libdlm.h instead of /usr/include's
#                   (Debian's libdlm-dev)
#   --libdir DIR    link against DIR's libdlm.so / libdlm_lt.so instead of
#                   the system's (the programs still load whatever
#                   libdlm.so.3 / libdlm_lt.so.3 the loader finds)
#   --ours DIR      also build the programs of dlm-rs's own extension
#                   (OURS below: they use capi/include/dlm_rs.h, whose
#                   DLM_RS_1 symbols no other libdlm has), against
#                   capi/include and DIR's libdlm.so / libdlm_lt.so
#   --list          print the program names and exit (with --ours, OURS too)
#   NAME...         only these programs (e.g. ct_lock); default all
#
# Each program is built as <name>-lt (cc ... -ldlm_lt) and, where the
# threaded library applies, <name>-thr (cc -D_REENTRANT ... -ldlm
# -lpthread); PROGRAMS below says which. Prints the built paths, one a line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root_dir=$(cd "$here/../../.." && pwd)

# name: variants
PROGRAMS=(
    "ct_version: lt thr"
    "ct_lockspace: lt thr"
    "ct_lock: lt thr"
    "ct_wait: lt thr"
    "ct_lvb: lt thr"
    "ct_orphan: lt thr"
    "ct_default: lt thr"
    "ct_badargs: lt thr"
    "ct_thread: thr"
    "ct_crash: lt thr"
    "ct_flood: lt thr"
    "ct_timeout: lt thr"
)
# dlm-rs's libraries only (built with --ours).
OURS=(
    "ct_recovery: lt thr"
)

out="$root_dir/ci/out/ctests/bin"
inc=()
libdir=()
list=0
ours=""
only=()
while [ $# -gt 0 ]; do
    case "$1" in
    -o) out=$2; shift 2 ;;
    --include) inc=(-I "$2"); shift 2 ;;
    --libdir) libdir=(-L "$2" "-Wl,-rpath-link=$2"); shift 2 ;;
    --ours) ours=$(cd "$2" && pwd); shift 2 ;;
    --list) list=1; shift ;;
    -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "build.sh: unknown option $1" >&2; exit 2 ;;
    *) only+=("$1"); shift ;;
    esac
done

all=("${PROGRAMS[@]}")
[ -n "$ours" ] && all+=("${OURS[@]}")
if [ "$list" = 1 ]; then
    for p in "${all[@]}"; do
        name=${p%%:*}
        for v in ${p#*:}; do echo "$name-$v"; done
    done
    exit 0
fi

mkdir -p "$out"
cc=${CC:-gcc}
cflags=(-O2 -g -Wall -Wextra -Werror -std=gnu11 ${inc[@]+"${inc[@]}"})
wanted() {
    [ ${#only[@]} -eq 0 ] && return 0
    local o
    for o in "${only[@]}"; do [ "$o" = "$1" ] && return 0; done
    return 1
}
is_ours() {
    local o
    for o in "${OURS[@]}"; do [ "${o%%:*}" = "$1" ] && return 0; done
    return 1
}
for p in "${all[@]}"; do
    name=${p%%:*}
    wanted "$name" || continue
    fl=("${cflags[@]}")
    ld=(${libdir[@]+"${libdir[@]}"})
    if is_ours "$name"; then
        fl+=(-I "$root_dir/capi/include")
        ld=(-L "$ours" "-Wl,-rpath-link=$ours")
    fi
    for v in ${p#*:}; do
        case "$v" in
        lt) "$cc" "${fl[@]}" -o "$out/$name-lt" "$here/$name.c" \
            ${ld[@]+"${ld[@]}"} -ldlm_lt -lpthread ;;
        thr) "$cc" "${fl[@]}" -D_REENTRANT -o "$out/$name-thr" "$here/$name.c" \
            ${ld[@]+"${ld[@]}"} -ldlm -lpthread ;;
        *) echo "build.sh: unknown variant $v of $name" >&2; exit 1 ;;
        esac
        echo "$out/$name-$v"
    done
done
