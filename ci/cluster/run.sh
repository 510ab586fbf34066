#!/usr/bin/env bash
# Run cluster tests against the running cluster (ci/cluster/up.sh):
#
#   ci/cluster/run.sh TEST...      e.g. run.sh exclusion handoff
#   ci/cluster/run.sh --list
#
# Each TEST is ci/cluster/tests/TEST.sh; each prints its checks and a
# closing "TEST: N passed, M failed" line, and the daemons' logs when it
# fails. Tests boot again any node that is down before they start. The
# figures they measure are appended to ci/out/cluster/run/figures.txt.
# Exits 1 if any test failed.
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh
if [ "${1:-}" = --list ]; then
    for t in ci/cluster/tests/*.sh; do
        [ "$(basename "$t")" = common.sh ] || basename "$t" .sh
    done
    exit 0
fi
[ $# -gt 0 ] || die "usage: run.sh TEST... (run.sh --list names them)" 2
rc=0
for t in "$@"; do
    { [ -f "ci/cluster/tests/$t.sh" ] && [ "$t" != common ]; } || die "no test '$t' (run.sh --list)" 2
    start=$(date +%s)
    if bash "ci/cluster/tests/$t.sh"; then
        echo "run.sh: $t passed in $(($(date +%s) - start)) s"
    else
        echo "run.sh: $t FAILED after $(($(date +%s) - start)) s"
        rc=1
    fi
done
exit "$rc"
