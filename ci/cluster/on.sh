#!/usr/bin/env bash
# Run a shell command on a node of the running cluster, through its
# control port, and exit with the command's status:
#
#   ci/cluster/on.sh [-t SECS] N COMMAND...
#
# e.g. ci/cluster/on.sh 2 dlm_tool ls; ci/cluster/on.sh 1 'dmesg | tail'.
# The words are joined with spaces and run with bash -c in the guest, in
# /tmp, bounded by SECS (default 60).
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh
. ci/cluster/lib.sh
tmo=60
[ "${1:-}" = -t ] && { tmo=$2; shift 2; }
[ $# -ge 2 ] || die "usage: on.sh [-t SECS] N COMMAND..." 2
n=$1
shift
cl_load_config
trap - ERR
cl_on "$n" -t "$tmo" "$*"
