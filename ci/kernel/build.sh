#!/usr/bin/env bash
# Build the guest's binaries statically (glibc, +crt-static), so they run
# in the busybox initramfs with no libraries:
#   dlm-controld      the single-node controller
#   dlm-guest-smoke   the first guest test (a program of dlm-guest)
#   dlm-conformance   the scenario and random-differential runner
#   dlm-guest-client  the safe client API on the kernel backend (dlm-guest)
# and with --bench (for ci/kernel/bench.sh) also, built with the `dist`
# profile (release + LTO, as shipped):
#   dlmd              the fallback daemon, run inside the guest
#   dlm-guest-bench   the Rust rows of the benchmark table (dlm-guest)
# and the same program built with the plain release profile, for reference:
#   dlm-guest-bench-release
#
# The explicit --target keeps build scripts (bindgen in dlm-sys) dynamic
# host programs, and the separate target directory leaves the normal
# build's artifacts alone. Prints the binaries' paths, one a line, the
# controller first.
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh
bench=0
[ "${1:-}" = "--bench" ] && bench=1
target=x86_64-unknown-linux-gnu
dir=ci/out/target-static
extra=()
[ "$bench" = 1 ] && extra=(--bin dlm-guest-bench)
export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static"
cargo build --release --target "$target" --target-dir "$dir" \
    -p dlm-controld --bin dlm-controld \
    -p dlm-guest --bin dlm-guest-smoke --bin dlm-guest-client "${extra[@]}" \
    -p dlm-conformance --bin dlm-conformance >&2
out="$dir/$target/release"
bins=("$out/dlm-controld" "$out/dlm-guest-smoke" "$out/dlm-conformance"
    "$out/dlm-guest-client")
if [ "$bench" = 1 ]; then
    cargo build --profile dist --target "$target" --target-dir "$dir" \
        -p dlm-guest --bin dlm-guest-bench -p dlmd --bin dlmd >&2
    dist="$dir/$target/dist"
    cp "$out/dlm-guest-bench" "$out/dlm-guest-bench-release"
    bins+=("$dist/dlmd" "$dist/dlm-guest-bench" "$out/dlm-guest-bench-release")
fi
for b in "${bins[@]}"; do
    if ! file -L "$b" | grep -qE 'statically linked|static-pie linked'; then
        die "$b is not static: $(file -L "$b")"
    fi
    echo "$b"
done
