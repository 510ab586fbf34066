#!/usr/bin/env bash
# Build what the cluster tests run "through ours" (DLM_CLUSTER_LIB=ours
# and =rust), for up.sh to put in the guests:
#   dlm-rs's libdlm.so.3 and libdlm_lt.so.3 (capi/build-libs.sh), into
#     ci/out/cluster/dlm-rs-lib/; the guests get them in
#     /usr/local/lib/dlm-rs, picked per program with LD_LIBRARY_PATH (the
#     guests' /usr/lib keeps Debian's libdlm3);
#   dlm-locksh (dlm-guest), the lock shell on the Rust API, static
#     (+crt-static, as ci/kernel/build.sh builds the guest's binaries).
# The libraries are glibc-dynamic, built on the host: host and guests are
# both Debian 12 (bookworm), so their glibc is the same.
# Prints two lines: the libraries' directory, then dlm-locksh's path.
#
#   ci/cluster/build-ours.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh
libs=ci/out/cluster/dlm-rs-lib
capi/build-libs.sh -o "$libs" >/dev/null
target=x86_64-unknown-linux-gnu
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release --target "$target" --target-dir ci/out/target-static \
    -p dlm-guest --bin dlm-locksh >&2
sh=ci/out/target-static/$target/release/dlm-locksh
file -L "$sh" | grep -qE 'statically linked|static-pie linked' || die "$sh is not static: $(file -L "$sh")"
echo "$libs"
echo "$sh"
