#!/usr/bin/env bash
# Build the guest's binaries statically (glibc, +crt-static), so they run
# in the busybox initramfs with no libraries:
#   dlm-controld      the single-node controller
#   dlm-guest-smoke   the first guest test (an example of dlm-controld)
#   dlm-conformance   the scenario and random-differential runner
#
# The explicit --target keeps build scripts (bindgen in dlm-sys) dynamic
# host programs, and the separate target directory leaves the normal
# build's artifacts alone. Prints the binaries' paths, one a line.
set -euo pipefail
cd "$(dirname "$0")/../.."
target=x86_64-unknown-linux-gnu
dir=ci/out/target-static
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release --target "$target" --target-dir "$dir" \
    -p dlm-controld --bin dlm-controld --example dlm-guest-smoke \
    -p dlm-conformance --bin dlm-conformance >&2
out="$dir/$target/release"
for b in "$out/dlm-controld" "$out/examples/dlm-guest-smoke" "$out/dlm-conformance"; do
    if ! file -L "$b" | grep -qE 'statically linked|static-pie linked'; then
        echo "build.sh: $b is not static: $(file -L "$b")" >&2
        exit 1
    fi
    echo "$b"
done
