#!/usr/bin/env bash
# Install dlm-rs: the programs dlm, dlmd and dlm-controld, their man pages
# (dlm(1) and one per subcommand, dlmd(8), dlm-controld(8)), bash, zsh and
# fish completions, the systemd units dlmd.service and dlmd.socket, and the
# C libraries libdlm.so.3 and libdlm_lt.so.3 (drop-in replacements for
# libdlm 4.2's) with libdlm.h, libdlm.pc and libdlm_lt.pc.
#
#   ci/install.sh                      build (release) and install under /usr/local
#   PREFIX=/usr ci/install.sh          install under /usr
#   DESTDIR=/tmp/pkg ci/install.sh     stage the tree under /tmp/pkg (for packaging)
#   ci/install.sh --from DIR           install the programs already built in DIR
#                                      (dlm, dlmd, dlm-controld and dlm-man, and
#                                      libdlm_rs.so / libdlm_lt_rs.so), no build
#   LIBDIR=/usr/lib/x86_64-linux-gnu   where the libraries go (default PREFIX/lib)
#
# The libraries go to LIBDIR as libdlm.so.3.0 with the links libdlm.so.3
# and libdlm.so (the same for libdlm_lt), the header to PREFIX/include, the
# .pc files to LIBDIR/pkgconfig. Installing into the system (no DESTDIR,
# as root) runs ldconfig; to replace Debian's libdlm3, install with
# PREFIX=/usr LIBDIR=/usr/lib/x86_64-linux-gnu (see the README).
#
# dlmd goes next to dlm in PREFIX/bin, where the client's auto-start finds
# it (users' PATH often lacks sbin); dlm-controld, which only root runs, in
# PREFIX/sbin. The units go to PREFIX/lib/systemd/system with ExecStart
# pointing at PREFIX/bin/dlmd. Nothing is started or enabled: the script
# says what to run for that.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
LIBDIR=${LIBDIR:-$PREFIX/lib}
from=
case "${1:-}" in
    --from) from=${2:?--from needs a directory} ;;
    "") ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 64 ;;
esac
case "$PREFIX" in
    /*) ;;
    *) echo "install.sh: PREFIX=$PREFIX must be an absolute path" >&2; exit 64 ;;
esac
case "$LIBDIR" in
    /*) ;;
    *) echo "install.sh: LIBDIR=$LIBDIR must be an absolute path" >&2; exit 64 ;;
esac

if [ -z "$from" ]; then
    . ci/lib.sh
    install_build_deps
    echo "install.sh: building dlm-rs (release)..."
    cargo build --release --quiet -p dlm-cli -p dlmd -p dlm-controld -p dlm-man \
        -p dlm-capi-libdlm -p dlm-capi-libdlm-lt
    from=${CARGO_TARGET_DIR:-target}/release
fi
for p in dlm dlmd dlm-controld dlm-man; do
    [ -x "$from/$p" ] || { echo "install.sh: $from/$p is missing: build it first" >&2; exit 66; }
done
for p in libdlm_rs.so libdlm_lt_rs.so; do
    [ -f "$from/$p" ] || { echo "install.sh: $from/$p is missing: build it first" >&2; exit 66; }
done

root=$DESTDIR$PREFIX
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$from/dlm-man" man "$work/man" >/dev/null
"$from/dlm-man" completions "$work/completions" >/dev/null

install -d "$root/bin" "$root/sbin" "$root/share/man/man1" "$root/share/man/man8" \
    "$root/share/bash-completion/completions" "$root/share/zsh/site-functions" \
    "$root/share/fish/vendor_completions.d" "$root/lib/systemd/system"
install -m 755 "$from/dlm" "$from/dlmd" "$root/bin/"
install -m 755 "$from/dlm-controld" "$root/sbin/"
install -m 644 "$work"/man/*.1 "$root/share/man/man1/"
install -m 644 "$work"/man/*.8 "$root/share/man/man8/"
install -m 644 "$work"/completions/bash/* "$root/share/bash-completion/completions/"
install -m 644 "$work"/completions/zsh/* "$root/share/zsh/site-functions/"
install -m 644 "$work"/completions/fish/* "$root/share/fish/vendor_completions.d/"
sed "s|/usr/bin/dlmd|$PREFIX/bin/dlmd|g" dlmd/dlmd.service >"$work/dlmd.service"
install -m 644 "$work/dlmd.service" dlmd/dlmd.socket "$root/lib/systemd/system/"

# The C libraries, as the system's are laid out.
libroot=$DESTDIR$LIBDIR
install -d "$libroot/pkgconfig" "$root/include"
for l in libdlm libdlm_lt; do
    install -m 755 "$from/${l}_rs.so" "$libroot/$l.so.3.0"
    ln -sf "$l.so.3.0" "$libroot/$l.so.3"
    ln -sf "$l.so.3" "$libroot/$l.so"
    sed -e "s|@PREFIX@|$PREFIX|" -e "s|@LIBDIR@|$LIBDIR|" "capi/$l.pc.in" >"$work/$l.pc"
    install -m 644 "$work/$l.pc" "$libroot/pkgconfig/"
done
install -m 644 capi/include/libdlm.h "$root/include/"
if [ -z "$DESTDIR" ] && [ "$(id -u)" = 0 ] && command -v ldconfig >/dev/null; then
    ldconfig
fi

echo "installed dlm-rs under $root:"
echo "  $PREFIX/bin/dlm, $PREFIX/bin/dlmd, $PREFIX/sbin/dlm-controld"
echo "  man pages in $PREFIX/share/man (man dlm, man dlm-lock, man dlmd, man dlm-controld)"
echo "  completions for bash, zsh and fish; units dlmd.service and dlmd.socket in $PREFIX/lib/systemd/system"
echo "  libdlm.so.3 and libdlm_lt.so.3 in $LIBDIR, libdlm.h in $PREFIX/include, libdlm.pc and libdlm_lt.pc in $LIBDIR/pkgconfig"
echo "the system daemon (hosts without the kernel DLM): systemctl daemon-reload && systemctl enable --now dlmd.socket"
