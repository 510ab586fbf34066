#!/usr/bin/env bash
# The README's first command: install what dlm-rs needs, then run the main
# job on the fallback engine. Needs no kernel DLM module; root (or sudo)
# only for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/lib.sh
install_build_deps
cargo run --release --quiet --example engine_demo
