#!/usr/bin/env bash
# Build the cluster test programs (ci/cluster/c/*.c) on the host against
# Debian's libdlm-dev, linked with -ldlm_lt (libdlm's single-threaded
# library; the guests have the same libdlm3 from the same release), into
# ci/out/cluster/bin/. Prints the programs' paths, one a line (up.sh puts
# them in the guests' /usr/local/bin).
#
#   ci/cluster/c/build.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
. ci/lib.sh
apt_install gcc libc6-dev libdlm-dev
out=ci/out/cluster/bin
mkdir -p "$out"
for src in ci/cluster/c/cl_*.c; do
    name=$(basename "$src" .c)
    if [ ! -x "$out/$name" ] || [ "$src" -nt "$out/$name" ] || [ ci/cluster/c/cl.h -nt "$out/$name" ]; then
        gcc -O2 -g -Wall -Wextra -Werror -std=gnu11 -o "$out/$name.tmp" "$src" -ldlm_lt >&2 ||
            die "gcc $src failed"
        mv "$out/$name.tmp" "$out/$name"
    fi
    echo "$out/$name"
done
