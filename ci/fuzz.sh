#!/usr/bin/env bash
# The cargo-fuzz targets in fuzz/ (see fuzz/README.md):
#   ci/fuzz.sh                 build, replay fuzz/regressions/, then each
#                              target for DLM_FUZZ_SECS seconds (default 30)
#   ci/fuzz.sh --runs N        each target for N executions instead (the
#                              long run: --runs 10000000)
#   ci/fuzz.sh --target NAME   only that target
# It uses the nightly toolchain when rustup has one, else the stable one
# with RUSTC_BOOTSTRAP=1 for the -Z flags cargo-fuzz passes; it installs
# cargo-fuzz with `cargo install` if it is missing. If none of that works
# it says so in one line and exits 0, so that the rest of CI still runs.
# AddressSanitizer is on for capi_args alone (see fuzz/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/lib.sh

secs="${DLM_FUZZ_SECS:-30}"
runs=""
only=""
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --target) only="$2"; shift 2 ;;
        *) echo "ci/fuzz.sh: unknown argument $1" >&2; exit 64 ;;
    esac
done

skip() { echo "fuzz: SKIPPED: $*"; exit 0; }

if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    tc=(+nightly)
    echo "fuzz: toolchain nightly ($(rustc +nightly --version))"
else
    tc=()
    export RUSTC_BOOTSTRAP=1
    echo "fuzz: toolchain stable with RUSTC_BOOTSTRAP=1 ($(rustc --version))"
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install --locked --quiet cargo-fuzz || skip "cargo install cargo-fuzz failed (see above)"
fi

# capi_args drives the C ABI against a private dlmd: the release build.
cargo build --release -p dlmd >&2 || skip "cargo build --release -p dlmd failed (see above)"

cd fuzz
targets=$(cargo "${tc[@]}" fuzz list)
[ -n "$only" ] && targets="$only"
# AddressSanitizer only where the code under test has unsafe code: the C
# ABI. The other targets fuzz crates that forbid unsafe code, where it
# can find nothing and halves the executions a second. Each sanitizer
# builds into a target directory of its own, so that runs of both kinds
# at once do not rebuild each other's.
san() { if [ "$1" = capi_args ]; then echo address; else echo none; fi; }
fz() { # fz VERB TARGET ARGS...
    local verb=$1 t=$2; shift 2
    cargo "${tc[@]}" fuzz "$verb" -s "$(san "$t")" --target-dir "target/san-$(san "$t")" "$t" "$@"
}
for t in $targets; do
    fz build "$t" || skip "cargo fuzz build failed with this toolchain (see above)"
done

for t in $targets; do
    if [ -d "regressions/$t" ]; then
        echo "fuzz: $t: replaying regressions/$t ($(ls "regressions/$t" | wc -l) inputs)"
        fz run "$t" "regressions/$t"/* -- -runs=1 >"/tmp/fuzz-$t.log" 2>&1 || {
            tail -40 "/tmp/fuzz-$t.log"; echo "fuzz: $t: a regression input fails again"; exit 1; }
    fi
    mkdir -p "corpus/$t"
    if [ "$t" = engine_ops ] && ! compgen -G "corpus/$t/seed-*" >/dev/null; then
        # Cases of the model tests' strategy (fuzz/README.md).
        (cd .. && cargo run --release -q -p dlm-model --example fuzz_seeds -- "fuzz/corpus/$t" 200) ||
            echo "fuzz: engine_ops: no seed cases (see above); fuzzing from nothing"
    fi
    if [ -n "$runs" ]; then limit=(-runs="$runs"); else limit=(-max_total_time="$secs"); fi
    start=$(date +%s)
    if ! fz run "$t" "corpus/$t" -- "${limit[@]}" -print_final_stats=1 \
            >"/tmp/fuzz-$t.log" 2>&1; then
        tail -60 "/tmp/fuzz-$t.log"
        echo "fuzz: $t: FAILED; the input is in fuzz/artifacts/$t/ (add it to fuzz/regressions/$t/ once fixed)"
        exit 1
    fi
    execs=$(grep -ao 'stat::number_of_executed_units: *[0-9]*' "/tmp/fuzz-$t.log" | grep -o '[0-9]*$' || echo '?')
    echo "fuzz: $t: $execs executions in $(( $(date +%s) - start )) s, no failure"
done
