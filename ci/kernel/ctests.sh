#!/usr/bin/env bash
# The libdlm C test programs (capi/tests/c/) on the real kernel DLM in the
# QEMU guest, differential: every program's transcript and exit status is
# kept under ci/out/ctests/<lib>/ and compared with the reference,
# Debian's libdlm's, committed in capi/tests/expected/.
#
#   ci/kernel/ctests.sh                     Debian's libdlm (ci/out/ctests/debian/)
#   ci/kernel/ctests.sh --lib DIR           DIR's libdlm.so.3 and libdlm_lt.so.3,
#                                           through LD_LIBRARY_PATH (ci/out/ctests/ours/)
#   ci/kernel/ctests.sh --include DIR       build the programs against DIR/libdlm.h
#                                           (e.g. capi/include, ours) instead of
#                                           Debian's; results' name gets -ourh
#   ci/kernel/ctests.sh --name NAME         the results' directory name instead
#   ci/kernel/ctests.sh --regenerate        write Debian's transcripts to
#                                           capi/tests/expected/ (the reference)
#   ci/kernel/ctests.sh --valgrind          also run the programs (not ct_crash,
#                                           ct_flood) under valgrind's memcheck:
#                                           reports in <lib>/NAME.vg, error counts
#                                           printed; with --lib any error fails
#   ci/kernel/ctests.sh [...] -- NAME...    only these programs (e.g. ct_lock-lt)
#
# The programs are built on the host against Debian's libdlm-dev
# (capi/tests/c/build.sh), dynamically linked. The guest has Debian's
# libdlm3 in /lib (the programs' ldd), Debian's dlm_tool and
# libdlmcontrol; --lib DIR adds DIR's two libraries (and what they link)
# under /opt/dlm-rs/lib and runs every program, and dlm_tool, with
# LD_LIBRARY_PATH pointing there.
#
# A result equals the reference when its stdout and exit status equal
# capi/tests/expected/<name>.out and .rc. For a replacement library,
# capi/tests/expected/ours/<name>.out (.rc), where present, is the
# reference instead: the output that deliberately differs (a libdlm bug
# fixed on purpose). Exits non-zero when any result differs, when a
# program left a lockspace behind, or when the guest run failed.
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh

lib=""
include=()
name=""
regen=0
valgrind=0
only=()
while [ $# -gt 0 ]; do
    case "$1" in
    --lib) lib=$(cd "$2" && pwd); shift 2 ;;
    --name) name=$2; shift 2 ;;
    --include) include=(--include "$(cd "$2" && pwd)"); shift 2 ;;
    --regenerate) regen=1; shift ;;
    --valgrind) valgrind=1; shift ;;
    -h | --help) sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; only=("$@"); break ;;
    *) echo "ctests.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -n "$name" ] || { [ -n "$lib" ] && name=ours || name=debian; }
[ "$valgrind" = 1 ] && name="$name-valgrind"
[ ${#include[@]} -gt 0 ] && name="$name-ourh"
if [ "$regen" = 1 ] && [ -n "$lib" ]; then
    echo "ctests.sh: --regenerate writes Debian's reference; it cannot be used with --lib" >&2
    exit 2
fi

install_build_deps
apt_install libdlm-dev dlm-controld file cpio bc
[ "$valgrind" = 1 ] && apt_install valgrind libc6-dbg
t0=$(date +%s)

out=ci/out/ctests
res="$out/$name"
expected=capi/tests/expected
mkdir -p "$out"

ci/kernel/fetch.sh
ci/kernel/build.sh >"$out/static-bins.txt"
controller=$(head -n 1 "$out/static-bins.txt")

# With --lib, dlm-rs's own extension's programs too (build.sh --ours).
ours=()
[ -n "$lib" ] && ours=(--ours "$lib")
capi/tests/c/build.sh -o "$out/bin" ${include[@]+"${include[@]}"} ${ours[@]+"${ours[@]}"} >"$out/programs.txt"
mapfile -t progs <"$out/programs.txt"

# Every export of both libraries must be called by some program of its
# variant: Debian's libraries' dynamic symbols against the programs'
# imports.
covered=1
for v in lt:libdlm_lt.so.3 thr:libdlm.so.3; do
    # (awk reads all of ldconfig's output: an early exit would be a SIGPIPE.)
    so=$(ldconfig -p | awk -v n="${v#*:}" '$1 == n && !so { so = $NF } END { print so }')
    [ -n "$so" ] || { echo "ctests.sh: ${v#*:} not installed" >&2; exit 1; }
    missing=$(comm -23 <(nm -D --defined-only "$so" | awk '$2 == "T" { print $3 }' | sort -u) \
        <(for b in "$out/bin/"*-"${v%%:*}"; do nm -D -u "$b" | awk '{ print $2 }'; done | sort -u))
    if [ -n "$missing" ]; then
        echo "ctests.sh: exports of ${v#*:} no program calls: $missing" >&2
        covered=0
    fi
done
[ "$covered" = 1 ] || exit 1

# The base initramfs: busybox, the modules, the controller, the programs
# and dlm_tool (initramfs.sh copies the libraries ldd lists: Debian's
# libdlm.so.3, libdlm_lt.so.3, libdlmcontrol.so.3, libc), and the guest
# half of this script.
ci/kernel/initramfs.sh -o "$out/initramfs-base.cpio" --controller "$controller" \
    "${progs[@]}" "$(command -v dlm_tool)" ci/kernel/ctests-guest.sh >/dev/null

# The replacement's libraries, as a second archive: the kernel unpacks
# concatenated archives in order.
guest_args=()
cp "$out/initramfs-base.cpio" "$out/initramfs.cpio"
stage=$(mktemp -d "${TMPDIR:-/tmp}/dlm-ctests.XXXXXX")
trap 'rm -rf "$stage"' EXIT
if [ "$valgrind" = 1 ]; then
    # valgrind (the binary behind Debian's /usr/bin/valgrind wrapper script),
    # memcheck and its preloads, and the suppressions it reads.
    for f in /usr/bin/valgrind.bin /usr/libexec/valgrind/memcheck-amd64-linux \
        /usr/libexec/valgrind/vgpreload_core-amd64-linux.so \
        /usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so \
        /usr/libexec/valgrind/default.supp /usr/lib/valgrind/debian.supp; do
        [ -f "$f" ] || { echo "ctests.sh: $f missing (valgrind package)" >&2; exit 1; }
        mkdir -p "$stage$(dirname "$f")"
        cp -L "$f" "$stage$f"
    done
    # memcheck must redirect strlen in the loader, whose symbols are in
    # libc6-dbg's detached debug file (found by build id).
    id=$(file -L /lib64/ld-linux-x86-64.so.2 | sed -n 's/.*BuildID\[sha1\]=\([0-9a-f]*\).*/\1/p')
    dbg=/usr/lib/debug/.build-id/${id:0:2}/${id:2}.debug
    [ -n "$id" ] && [ -f "$dbg" ] || { echo "ctests.sh: no debug symbols for the loader ($dbg; libc6-dbg)" >&2; exit 1; }
    mkdir -p "$stage$(dirname "$dbg")" "$stage/bin"
    cp -L "$dbg" "$stage$dbg"
    cp -L /usr/bin/valgrind.bin "$stage/bin/valgrind"
    guest_args+=(--valgrind)
fi
if [ -n "$lib" ]; then
    mkdir -p "$stage/opt/dlm-rs/lib"
    for so in libdlm.so.3 libdlm_lt.so.3; do
        [ -e "$lib/$so" ] || { echo "ctests.sh: $lib/$so missing" >&2; exit 1; }
        cp -L "$lib/$so" "$stage/opt/dlm-rs/lib/$so"
        for dep in $(ldd "$lib/$so" | awk '/=> \// { print $3 } /^\t\// { print $1 }'); do
            [ -f "$dep" ] || continue
            mkdir -p "$stage$(dirname "$dep")"
            cp -L "$dep" "$stage$dep"
        done
    done
    guest_args+=(--libpath /opt/dlm-rs/lib)
fi
if [ -n "$(ls -A "$stage")" ]; then
    (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) \
        >>"$out/initramfs.cpio"
fi

status=0
ci/kernel/run.sh --quiet --initramfs "$out/initramfs.cpio" --timeout "${DLM_CTESTS_TIMEOUT:-1200}" \
    -- ctests-guest.sh ${guest_args[@]+"${guest_args[@]}"} ${only[@]+"${only[@]}"} || status=$?
log="$out/serial-$name.log"
tr -d '\r' <"ci/out/linux-${DLM_KERNEL:-6.1}/qemu-serial.log" >"$log"

# Split the transcripts: NAME.out (stdout), NAME.err (stderr), NAME.rc.
rm -rf "$res"
mkdir -p "$res"
awk -v dir="$res" '
    /^@@CT-BEGIN .*@@$/ { n = $2; sub(/@@$/, "", n); f = dir "/" n ".out"; printf "" > f; next }
    /^@@CT-STDERR .*@@$/ { close(f); f = dir "/" n ".err"; printf "" > f; next }
    /^@@CT-VG .*@@$/ { close(f); f = dir "/" n ".vg"; printf "" > f; next }
    /^@@CT-END .* rc=[0-9]+@@$/ { close(f); rc = $3; sub(/^rc=/, "", rc); sub(/@@$/, "", rc)
        print rc > (dir "/" n ".rc"); close(dir "/" n ".rc"); f = ""; next }
    /^@@CT-LEFT / { print > (dir "/LEFT"); next }
    f != "" { print >> f }
' "$log"

# The libraries the programs loaded: ours under /opt/dlm-rs/lib with --lib.
grep '^@@CT-LIBS ' "$log" | sed 's/^@@CT-LIBS //' >"$res/LIBS" || true
sed 's/^/ctests.sh: loaded: /' "$res/LIBS"
want_dir=/lib/x86_64-linux-gnu/
[ -n "$lib" ] && want_dir=/opt/dlm-rs/lib/
if [ ! -s "$res/LIBS" ] || grep -v "=> $want_dir" "$res/LIBS" >/dev/null; then
    echo "ctests.sh: the programs did not load libdlm from $want_dir (see $res/LIBS)" >&2
    exit 1
fi

n=$(find "$res" -name '*.rc' | wc -l)
if [ "$n" -eq 0 ]; then
    echo "ctests.sh: no transcripts in the guest's log ($log); guest status $status" >&2
    exit 1
fi
bad=0
if [ -s "$res/LEFT" ]; then
    echo "ctests.sh: programs left lockspaces behind:" >&2
    cat "$res/LEFT" >&2
    bad=1
fi

if [ "$regen" = 1 ]; then
    mkdir -p "$expected"
    for f in "$res"/*.rc; do
        b=$(basename "$f" .rc)
        cp "$res/$b.out" "$expected/$b.out"
        cp "$res/$b.rc" "$expected/$b.rc"
    done
    echo "ctests.sh: wrote $n reference transcripts to $expected/"
fi

# Compare with the reference.
same=0
for f in "$res"/*.rc; do
    b=$(basename "$f" .rc)
    want_out="$expected/$b.out"
    want_rc="$expected/$b.rc"
    if [ -n "$lib" ]; then
        [ -f "$expected/ours/$b.out" ] && want_out="$expected/ours/$b.out"
        [ -f "$expected/ours/$b.rc" ] && want_rc="$expected/ours/$b.rc"
    fi
    if [ ! -f "$want_out" ]; then
        echo "ctests.sh: $b: no reference ($want_out)" >&2
        bad=1
        continue
    fi
    if ! diff -u "$want_out" "$res/$b.out" >"$res/$b.diff" 2>&1 ||
        [ "$(cat "$want_rc")" != "$(cat "$res/$b.rc")" ]; then
        echo "ctests.sh: $b differs from $want_out (exit $(cat "$res/$b.rc"), want $(cat "$want_rc")):" >&2
        head -n 40 "$res/$b.diff" >&2
        [ -s "$res/$b.err" ] && { echo "  stderr:" >&2; head -n 10 "$res/$b.err" | sed 's/^/    /' >&2; }
        bad=1
    else
        rm -f "$res/$b.diff"
        same=$((same + 1))
    fi
done
# valgrind's verdicts: "ERROR SUMMARY: N errors" per program.
if [ "$valgrind" = 1 ]; then
    for f in "$res"/*.vg; do
        [ -e "$f" ] || { echo "ctests.sh: no valgrind reports" >&2; bad=1; break; }
        b=$(basename "$f" .vg)
        # valgrind -q writes nothing but errors (each starts unindented)
        # and fatal messages.
        if ! grep -q '[^[:space:]]' "$f"; then
            echo "ctests.sh: valgrind: $b: clean"
        else
            echo "ctests.sh: valgrind: $b: $(grep -cE '^(==[0-9]+== [^ ]|valgrind: )' "$f" || true) errors (see $f)"
            [ -n "$lib" ] && bad=1
        fi
    done
fi

# Every program with a reference must have run (unless a subset was asked).
if [ ${#only[@]} -eq 0 ]; then
    for f in "$expected"/*.rc; do
        [ -e "$f" ] || continue
        b=$(basename "$f" .rc)
        [ -f "$res/$b.rc" ] || { echo "ctests.sh: $b did not run" >&2; bad=1; }
    done
fi
echo "ctests.sh: $same of $n transcripts equal the reference ($name; $(($(date +%s) - t0)) s); results in $res/"
[ "$status" -eq 0 ] || { echo "ctests.sh: the guest run failed (status $status); see $log" >&2; exit "$status"; }
[ "$bad" -eq 0 ]
