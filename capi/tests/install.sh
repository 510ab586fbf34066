#!/usr/bin/env bash
# ci/install.sh's C part, staged: DESTDIR=<tmp> PREFIX=/usr/local, then
#  - the libraries, their links, the header and the .pc files are where
#    the system's are;
#  - pkg-config against the staged tree gives the right flags for
#    libdlm_lt and libdlm;
#  - a C test program builds with those flags alone and links
#    libdlm_lt.so.3 (and libdlm.so.3 for the threaded one).
#
#   capi/tests/install.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh
apt_install pkg-config gcc binutils
cargo build --release --quiet -p dlm-cli -p dlmd -p dlm-controld -p dlm-man \
    -p dlm-capi-libdlm -p dlm-capi-libdlm-lt
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dlm-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
DESTDIR=$tmp PREFIX=/usr/local ci/install.sh --from target/release >/dev/null
fail=0
ok() { echo "ok $*"; }
bad() { echo "FAIL $*"; fail=1; }
lib=$tmp/usr/local/lib
for f in libdlm.so.3.0 libdlm.so.3 libdlm.so libdlm_lt.so.3.0 libdlm_lt.so.3 libdlm_lt.so \
    pkgconfig/libdlm.pc pkgconfig/libdlm_lt.pc; do
    [ -e "$lib/$f" ] && ok "installed lib/$f" || bad "lib/$f missing"
done
[ "$(readlink "$lib/libdlm_lt.so")" = libdlm_lt.so.3 ] && [ "$(readlink "$lib/libdlm_lt.so.3")" = libdlm_lt.so.3.0 ] &&
    ok "libdlm_lt.so -> libdlm_lt.so.3 -> libdlm_lt.so.3.0" || bad "libdlm_lt links"
[ -f "$tmp/usr/local/include/libdlm.h" ] && ok "installed include/libdlm.h" || bad "include/libdlm.h missing"
pc() { PKG_CONFIG_SYSROOT_DIR=$tmp PKG_CONFIG_LIBDIR=$lib/pkgconfig pkg-config "$@" | sed "s/ *$//"; }
got=$(pc --libs libdlm_lt)
[ "$got" = "-L$lib -ldlm_lt" ] && ok "pkg-config --libs libdlm_lt: $got" || bad "pkg-config --libs libdlm_lt: '$got'"
got=$(pc --libs libdlm)
[ "$got" = "-L$lib -ldlm -lpthread" ] && ok "pkg-config --libs libdlm: $got" || bad "pkg-config --libs libdlm: '$got'"
got=$(pc --cflags libdlm)
[ "$got" = "-I$tmp/usr/local/include -D_REENTRANT" ] && ok "pkg-config --cflags libdlm: $got" || bad "pkg-config --cflags libdlm: '$got'"
for v in lt thr; do
    m=libdlm_lt
    [ $v = thr ] && m=libdlm
    # shellcheck disable=SC2046
    if gcc -Wall -Werror -o "$tmp/ct_lock-$v" capi/tests/c/ct_lock.c $(pc --cflags --libs $m) -lpthread; then
        needed=$(readelf -d "$tmp/ct_lock-$v" | sed -n 's/.*NEEDED.*\[\(libdlm.*\)\]/\1/p')
        want=libdlm_lt.so.3
        [ $v = thr ] && want=libdlm.so.3
        [ "$needed" = "$want" ] && ok "ct_lock-$v builds with pkg-config $m alone, needs $needed" ||
            bad "ct_lock-$v needs '$needed'"
    else
        bad "ct_lock-$v does not build with pkg-config $m"
    fi
done
exit $fail
