#!/usr/bin/env bash
# Start a cluster of QEMU guests: corosync (knet, no crypto, votequorum)
# and dlm_controld --enable_fencing 0 from Debian's packages on Debian's
# kernel, on a network only the guests reach.
#
#   ci/cluster/up.sh [--kernel 6.1|6.12] [--nodes K] [--mem MIB] [--token MS]
#                    [--lifetime SECS] [--timeout SECS]
#
#   --nodes     cluster size, 2..9 (default 3); node ids 1..K, addresses
#               10.77.0.1..K, hostnames node1..nodeK
#   --mem       each guest's memory (default 1024)
#   --token     corosync's token timeout in ms (default: corosync's, 3000 +
#               650 per node beyond two)
#   --lifetime  every QEMU is killed after this many seconds whatever
#               happens (default 7200; a forgotten cluster ends)
#   --timeout   how long the guests may take to be ready (default 120)
#   --keep      on a failure, leave the guests running (to look at them)
#
# Builds (cached) the rootfs (rootfs.sh), the initramfs (initramfs.sh),
# the C test programs (c/build.sh) and ours (build-ours.sh: dlm-rs's
# libdlm and libdlm_lt, the Rust lock shell); adds this run's files (the
# guests' init and agent, the programs, our libraries in
# /usr/local/lib/dlm-rs) to the initramfs as /overlay; starts the
# hub and the guests (TCG, SMP 1); waits until every guest printed
# DLMCI-READY, its agent answers, and corosync on node 1 counts all K
# members with quorum; then returns, leaving the cluster running. State,
# sockets and logs are in ci/out/cluster/run (DLM_CLUSTER_STATE).
# ci/cluster/on.sh runs a command on a node, run.sh a test, down.sh stops
# it all. If anything fails here, every QEMU started is stopped by its PID
# and each guest's console tail is printed.
set -euo pipefail
cd "$(dirname "$0")/../.."
. ci/lib.sh
. ci/cluster/lib.sh

nodes=3
mem=1024
token=""
lifetime=7200
boot_timeout=120
keep=0
while [ $# -gt 0 ]; do
    case "$1" in
    --kernel) DLM_KERNEL=$2; shift 2 ;;
    --nodes) nodes=$2; shift 2 ;;
    --mem) mem=$2; shift 2 ;;
    --token) token=$2; shift 2 ;;
    --lifetime) lifetime=$2; shift 2 ;;
    --timeout) boot_timeout=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" 2 ;;
    esac
done
case "$nodes" in [2-9]) ;; *) die "--nodes must be 2..9, not '$nodes'" 2 ;; esac
for v in "$mem" "$lifetime" "$boot_timeout" ${token:+"$token"}; do
    case "$v" in '' | *[!0-9]*) die "'$v' is not a number" 2 ;; esac
done
kernel_setup

if [ -f "$CL_STATE/config" ]; then
    # shellcheck disable=SC1091 # written by an earlier up.sh
    . "$CL_STATE/config"
    for f in "$CL_STATE"/*.pid; do
        [ -f "$f" ] || continue
        cl_pid_of "$f" >/dev/null && die "a cluster is already running in $CL_STATE (ci/cluster/down.sh stops it)"
    done
fi
# Unix socket paths are limited to 107 bytes.
[ ${#CL_STATE} -le 90 ] || die "the state directory's path is too long for unix sockets: $CL_STATE (set DLM_CLUSTER_STATE)"

t_build=$(cl_now)
apt_install socat
ci/kernel/fetch.sh --kernel "$DLM_KERNEL"
ci/cluster/rootfs.sh
ci/cluster/initramfs.sh --kernel "$DLM_KERNEL"
progs=()
if [ -f ci/cluster/c/build.sh ]; then
    mapfile -t progs < <(ci/cluster/c/build.sh)
fi
# Ours: dlm-rs's libdlm/libdlm_lt and the Rust API's lock shell.
mapfile -t ours < <(ci/cluster/build-ours.sh)
echo "up.sh: built in $(cl_since "$t_build") s"

rm -rf "$CL_STATE"
mkdir -p "$CL_STATE"
CL_NODES=$nodes
CL_MEM=$mem
CL_TOKEN=$token
CL_LIFETIME=$lifetime
CL_NET=10.77.0
CL_KERNEL=$DLM_KERNEL
CL_VMLINUX=$KERNEL_DIR/vmlinux
CL_ROOTFS=$(readlink -f ci/out/cluster/rootfs.ext4)
case "${DLM_QEMU_ACCEL:-tcg}" in
kvm) CL_ACCEL_ARGS=(-accel kvm -cpu host) ;;
*) CL_ACCEL_ARGS=(-accel "tcg,tb-size=${DLM_CLUSTER_TB_MIB:-256}") ;;
esac
declare -p CL_NODES CL_MEM CL_TOKEN CL_LIFETIME CL_NET CL_KERNEL CL_VMLINUX CL_ROOTFS CL_ACCEL_ARGS |
    sed 's/^declare -[a-zA-Z-]* //' >"$CL_STATE/config"

# This run's files, appended to the initramfs: init-early.sh copies
# /overlay/usr/local into the rootfs.
stage=$(mktemp -d "${TMPDIR:-/tmp}/dlm-cluster-overlay.XXXXXX")
ok=0
cleanup() {
    rm -rf "$stage"
    if [ "$ok" = 0 ]; then
        echo "up.sh: FAILED; the guests' consoles:" >&2
        cl_console_tails 30 >&2
        if [ "$keep" = 1 ]; then
            echo "up.sh: --keep: the guests still run (ci/cluster/down.sh stops them)" >&2
        else
            cl_down || true
        fi
    fi
}
trap cleanup EXIT
mkdir -p "$stage/overlay/usr/local/sbin" "$stage/overlay/usr/local/bin"
install -m 0755 ci/cluster/guest/dlm-cluster-init ci/cluster/guest/dlm-cluster-agent "$stage/overlay/usr/local/sbin/"
install -m 0755 ci/cluster/guest/cl-sh ci/cluster/guest/cl-events "$stage/overlay/usr/local/bin/"
for p in ${progs[@]+"${progs[@]}"}; do
    install -m 0755 "$p" "$stage/overlay/usr/local/bin/"
done
# /usr/local/lib/dlm-rs: only a program started with LD_LIBRARY_PATH
# there (DLM_CLUSTER_LIB=ours) uses our libdlm; the rest keep Debian's.
mkdir -p "$stage/overlay/usr/local/lib/dlm-rs"
cp -a "${ours[0]}"/libdlm*.so* "$stage/overlay/usr/local/lib/dlm-rs/"
install -m 0755 "${ours[1]}" "$stage/overlay/usr/local/bin/"
(cd "$stage" && find overlay | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$stage/overlay.cpio"
cat "ci/out/cluster/linux-$DLM_KERNEL/initramfs.cpio" "$stage/overlay.cpio" >"$CL_STATE/initramfs.cpio"
truncate -s 256M "$CL_STATE/shared.img"

t0=$(cl_now)
cl_start_hub
for n in $(seq 1 "$nodes"); do
    cl_start_node "$n"
done
for n in $(seq 1 "$nodes"); do
    cl_wait_ready "$n" "$boot_timeout"
    echo "up.sh: node$n ready at $(cl_since "$t0") s"
done
# The cluster is ready when corosync on node 1 counts every node.
members() { cl_on 1 -t 10 -q "corosync-quorumtool -s | grep -q '^Quorate: *Yes' && [ \$(corosync-quorumtool -l | grep -c ' node[0-9]') -eq $nodes ]"; }
cl_until "$boot_timeout" members || die "corosync on node1 does not count $nodes members with quorum"
t_ready=$(cl_since "$t0")
echo "$t_ready" >"$CL_STATE/ready-seconds"
echo "up.sh: $nodes nodes ready (corosync quorate, all members) in $t_ready s after the first QEMU started"
cl_on 1 -t 10 "corosync-quorumtool -s | sed -n '/^Quorum information/,\$p'" || true
ok=1
