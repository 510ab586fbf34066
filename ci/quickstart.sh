#!/usr/bin/env bash
# The README's first command: install what dlm-rs needs, build it, and run
# the main job on the fallback engine: two `dlm lock` commands contending
# for one lock, the second waiting for the first. Needs no kernel DLM
# module; root (or sudo) only for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/lib.sh
install_build_deps
echo "building dlm-rs (release)..."
cargo build --release --quiet -p dlm-cli -p dlmd
export PATH="$PWD/target/release:$PATH"
# Use the fallback daemon even where a kernel DLM exists.
export DLM_BACKEND=fallback





echo
echo "Two processes contend for an EX lock on resource \"demo\"."
echo "dlm starts a per-user dlmd on first use (see 'dlm status')."
echo
dlm lock --verbose demo sh -c 'echo "$(date +%T.%N | cut -c1-12) [A] holding the lock for 2 s"; sleep 2; echo "$(date +%T.%N | cut -c1-12) [A] done, releasing"' &
a=$!
sleep 0.5
echo "$(date +%T.%N | cut -c1-12) [B] asking for the same lock..."
dlm lock --verbose demo sh -c 'echo "$(date +%T.%N | cut -c1-12) [B] got it: it waited for A"'
wait "$a"
echo
echo "A try that must not wait (--nowait) while someone holds the lock:"
dlm lock demo sleep 1 &
h=$!
sleep 0.3
if dlm lock --nowait demo true; then
    echo "unexpected: got the lock"
else
    echo "(exit status $? as documented: the lock was busy; dlm's own errors exit 64 and up)"
fi
wait "$h"
echo
dlm status
echo
echo "dlmd keeps running for later commands; 'dlm daemon status' shows it, 'dlm daemon stop' stops it."
