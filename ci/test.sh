#!/usr/bin/env bash
# The README's second command, and what .ci/run calls: every check and
# every test of dlm-rs.
#
#   DLM_PROPTEST_CASES / DLM_MODEL_CASES  random sequences per property
#                                          (CI default: 100,000 in total)
#   DLM_RANDOM_SEEDS                       kernel-vs-engine random sequences
#                                          in the QEMU guest, on each kernel
#                                          (default 1000)
#
# The guest jobs run on both Debian 12 kernels, Linux 6.1 and 6.12 (see
# ci/kernel/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/lib.sh
install_build_deps

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
: "${DLM_PROPTEST_CASES:=50000}"
: "${DLM_MODEL_CASES:=50000}"
export DLM_PROPTEST_CASES DLM_MODEL_CASES

step() { echo; echo "=== $* ==="; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

step "cargo test (release; $DLM_PROPTEST_CASES property cases, $DLM_MODEL_CASES model cases)"
# Every program first: tests run the built dlm, dlmd and dlm-controld
# (the install test installs all three), and cargo builds a package's
# programs for the tests of that package only.
cargo build --workspace --release
cargo test --workspace --release

step "libdlm C ABI: exports, SONAMEs and libdlm.h against Debian's libdlm 4.2; the install"
capi_lib=$(capi/build-libs.sh)
capi/tests/abi.sh --lib "$capi_lib"
capi/tests/install.sh

step "libdlm C programs on the host through the fallback (Debian's header, ours, and valgrind)"
capi/tests/run-host.sh --lib "$capi_lib"
capi/tests/run-host.sh --lib "$capi_lib" --include capi/include
capi/tests/run-host.sh --lib "$capi_lib" --valgrind

step "kernel DLM in QEMU, Linux 6.1 (real dlm.ko, dlm-controld --single-node)"
ci/kernel.sh --kernel 6.1

step "libdlm C programs in QEMU on Linux 6.1 with our libraries (Debian's transcripts as the reference)"
ci/kernel/ctests.sh --lib "$capi_lib"
ci/kernel/ctests.sh --lib "$capi_lib" --include capi/include

step "Debian's lvmlockd, unmodified, on our libdlm_lt.so.3 in QEMU (Linux 6.1, dlm-controld --single-node)"
ci/kernel/lvmlockd.sh --lib "$capi_lib"

step "conformance: Linux 6.1 as oracle (golden traces, ${DLM_RANDOM_SEEDS:=1000} random sequences against the engine's 6.1 model)"
export DLM_RANDOM_SEEDS
ci/kernel/conformance.sh --kernel 6.1

step "kernel DLM in QEMU, Linux 6.12 (real dlm.ko, dlm-controld --single-node)"
ci/kernel.sh --kernel 6.12

step "conformance: Linux 6.12 as oracle (golden traces, $DLM_RANDOM_SEEDS random sequences against the engine's 6.12 model)"
ci/kernel/conformance.sh --kernel 6.12

# The full cluster run takes about 6 minutes; CI runs the short one
# (ci/cluster/README.md). DLM_CLUSTER=0 skips it.
if [ "${DLM_CLUSTER:-1}" != 0 ]; then
    step "three-node corosync + dlm_controld cluster in QEMU (short: join, exclusion, a node killed)"
    ci/cluster/test.sh --short
fi

step "fuzzing: each cargo-fuzz target for ${DLM_FUZZ_SECS:-30} s after its regressions (fuzz/README.md)"
ci/fuzz.sh

step "engine benchmark (quick run; figures are informational)"
cargo bench -p dlm-engine --bench engine -- --quick
