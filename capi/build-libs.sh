#!/usr/bin/env bash
# Build dlm-rs's libdlm.so.3 and libdlm_lt.so.3 and lay them out as the
# system's are, for LD_LIBRARY_PATH, the tests and ci/install.sh:
#
#   capi/build-libs.sh [-o DIR] [--profile PROFILE]
#
#   -o DIR       where (default target/capi)
#   --profile P  cargo profile (default release)
#
# DIR gets libdlm.so.3.0 and libdlm_lt.so.3.0 (SONAMEs libdlm.so.3 and
# libdlm_lt.so.3) with their libdlm.so.3 / libdlm.so links. Prints DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/capi
profile=release
while [ $# -gt 0 ]; do
    case "$1" in
    -o) out=$2; shift 2 ;;
    --profile) profile=$2; shift 2 ;;
    -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-libs.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
cargo build --profile "$profile" -p dlm-capi-libdlm -p dlm-capi-libdlm-lt >&2
dir=target/$profile
[ "$profile" = dev ] && dir=target/debug
mkdir -p "$out"
for l in libdlm libdlm_lt; do
    src="$dir/${l#lib}_rs"
    src="$dir/lib${src##*/}.so"
    install -m 0755 "$src" "$out/$l.so.3.0"
    ln -sf "$l.so.3.0" "$out/$l.so.3"
    ln -sf "$l.so.3" "$out/$l.so"
done
(cd "$out" && pwd)
