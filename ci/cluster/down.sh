#!/usr/bin/env bash
# Stop the cluster ci/cluster/up.sh started: every QEMU by the PID in its
# pidfile (SIGTERM, SIGKILL after 5 s), the guests first, then the hub.
# A PID is signalled only while its process's command line names the
# cluster's state directory. Keeps the logs; idempotent.
#
#   ci/cluster/down.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh
. ci/cluster/lib.sh
[ -f "$CL_STATE/config" ] || { echo "down.sh: no cluster in $CL_STATE"; exit 0; }
cl_load_config
cl_down
echo "down.sh: stopped (logs in $CL_STATE)"
