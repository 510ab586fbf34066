#!/usr/bin/env bash
# The ABI of our libdlm against Debian's libdlm3 / libdlm-dev 4.2:
#
#   capi/tests/abi.sh [--lib DIR]
#
#   --lib DIR   our libdlm.so.3 and libdlm_lt.so.3 (default: built with
#               capi/build-libs.sh into target/capi)
#
# Checks, each a line "ok ..." or "FAIL ...":
#  - `nm -D --defined-only` of each library is Debian's (26 and 21
#    symbols, the same names and kinds, unversioned), and besides them
#    exactly dlm-rs's extension (capi/include/dlm_rs.h, EXTENSION below),
#    each under the version node DLM_RS_1 (capi/dlm_rs.map);
#  - the SONAMEs; no version definitions but the base one and DLM_RS_1;
#  - dlm_rs.h compiles (gcc -Werror) after our libdlm.h and after
#    Debian's, and its structs have the kernel's layout;
#  - capi/include/libdlm.h defines the same macros, with the same values,
#    as Debian's header, with and without _REENTRANT;
#  - every declaration of Debian's header is compatible with ours (both
#    included in one translation unit, gcc -Werror);
#  - struct dlm_lksb has the same size and offsets.
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh
lib=""
while [ $# -gt 0 ]; do
    case "$1" in
    --lib) lib=$(cd "$2" && pwd); shift 2 ;;
    -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "abi.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
apt_install libdlm3 libdlm-dev binutils gcc
[ -n "$lib" ] || lib=$(capi/build-libs.sh)
deb=/usr/lib/x86_64-linux-gnu
ours_h=$PWD/capi/include/libdlm.h
fail=0
ok() { echo "ok $*"; }
bad() { echo "FAIL $*"; fail=1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dlm-abi.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# dlm-rs's own symbols (dlm_rs.h): "KIND NAME@@VERSION", sorted.
EXTENSION="T dlm_new_lockspace_ops@@DLM_RS_1"

for so in libdlm.so.3 libdlm_lt.so.3; do
    nm -D --defined-only "$deb/$so" | awk '{print $2, $3}' | sort >"$tmp/deb-$so"
    nm -D --defined-only "$lib/$so" | awk '{print $2, $3}' | sort >"$tmp/all-$so"
    # libdlm's symbols are the unversioned ones; ours carry a version.
    grep -v '@' "$tmp/all-$so" >"$tmp/ours-$so" || true
    grep '@' "$tmp/all-$so" >"$tmp/ext-$so" || true
    n=$(wc -l <"$tmp/ours-$so")
    if diff -u "$tmp/deb-$so" "$tmp/ours-$so"; then
        ok "$so exports Debian's $n symbols, unversioned"
    else
        bad "$so exports differ from Debian's"
    fi
    if diff -u <(printf '%s\n' "$EXTENSION" | sort) "$tmp/ext-$so"; then
        ok "$so exports dlm_rs.h's $(wc -l <"$tmp/ext-$so") symbol(s) under DLM_RS_1, nothing else"
    else
        bad "$so: versioned exports are not exactly dlm_rs.h's"
    fi
    soname=$(readelf -d "$lib/$so" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
    [ "$soname" = "$so" ] && ok "$so SONAME $soname" || bad "$so SONAME '$soname'"
    defs=$(readelf -V "$lib/$so" | sed -n '/Version definition/,/^$/s/.*Name: //p' | tr '\n' ' ')
    if [ "$defs" = "$so DLM_RS_1 " ]; then
        ok "$so version definitions: the base one and DLM_RS_1 only"
    else
        bad "$so version definitions: '$defs' (want '$so DLM_RS_1 ')"
    fi
done

for d in "" -D_REENTRANT; do
    v=${d:-lite}
    for h in deb ours; do
        f=/usr/include/libdlm.h
        [ "$h" = ours ] && f=$ours_h
        printf '#include <sys/types.h>\n#include "%s"\n' "$f" |
            gcc $d -dM -E -x c - | grep -vE '^#define (__|_|linux|unix)' |
            sed 's/[[:space:]]\+/ /g' | sort >"$tmp/macros-$h"
    done
    if diff -u "$tmp/macros-deb" "$tmp/macros-ours"; then
        ok "libdlm.h ($v): the same $(wc -l <"$tmp/macros-ours") macros as Debian's"
    else
        bad "libdlm.h ($v): macros differ from Debian's"
    fi
    cat >"$tmp/both.c" <<C
#include "$ours_h"
#undef __LIBDLM_H
#define BUILDING_LIBDLM
#include </usr/include/libdlm.h>
#include <stddef.h>
_Static_assert(sizeof(struct dlm_lksb) == 24, "lksb size");
_Static_assert(offsetof(struct dlm_lksb, sb_lkid) == 4, "sb_lkid");
_Static_assert(offsetof(struct dlm_lksb, sb_flags) == 8, "sb_flags");
_Static_assert(offsetof(struct dlm_lksb, sb_lvbptr) == 16, "sb_lvbptr");
int main(void) { return 0; }
C
    if gcc $d -std=gnu11 -Wall -Wextra -Werror -c -o "$tmp/both.o" "$tmp/both.c"; then
        ok "libdlm.h ($v): every declaration of Debian's is compatible with ours"
    else
        bad "libdlm.h ($v): declarations incompatible with Debian's"
    fi
    for h in "$ours_h" /usr/include/libdlm.h; do
        cat >"$tmp/ext.c" <<C
#include <sys/types.h>
#include "$h"
#include "$PWD/capi/include/dlm_rs.h"
#include <stddef.h>
_Static_assert(sizeof(struct dlm_slot) == 8, "dlm_slot size");
_Static_assert(offsetof(struct dlm_slot, slot) == 4, "dlm_slot.slot");
_Static_assert(offsetof(struct dlm_lockspace_ops, recover_prep) == 0, "recover_prep");
_Static_assert(offsetof(struct dlm_lockspace_ops, recover_slot) == sizeof(void *), "recover_slot");
_Static_assert(offsetof(struct dlm_lockspace_ops, recover_done) == 2 * sizeof(void *), "recover_done");
void *(*volatile f)(const char *, const char *, uint32_t, int, mode_t,
                    const struct dlm_lockspace_ops *, void *, int *) = dlm_new_lockspace_ops;
int main(void) { return f == 0; }
C
        if gcc $d -std=gnu11 -Wall -Wextra -Werror -c -o "$tmp/ext.o" "$tmp/ext.c"; then
            ok "dlm_rs.h ($v) after $h: compiles, the kernel's layout"
        else
            bad "dlm_rs.h ($v) after $h: does not compile"
        fi
    done
done
exit $fail
