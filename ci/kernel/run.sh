#!/usr/bin/env bash
# Boot the Debian kernel in QEMU with the test initramfs and run a command
# in the guest, after the guest's /init has loaded configfs and dlm and
# started dlm-controld:
#
#   ci/kernel/run.sh [--kernel 6.1|6.12] [--timeout SECS] [--initramfs FILE] [--quiet]
#                    [--plugin SO] -- CMD [ARG...]
#
# The kernel series is DLM_KERNEL's (default 6.1; see ci/lib.sh); the
# initramfs defaults to that series', ci/out/linux-<series>/initramfs.cpio.
# Exits with CMD's exit status. The whole serial console is kept in
# ci/out/linux-<series>/qemu-serial.log; on failure its tail is printed. The guest runs
# under `timeout`, so this never hangs: a guest that does not finish in
# SECS (default 120) is killed and the script exits 124.
#
# Acceleration: TCG, unless /proc/cpuinfo has vmx or svm, /dev/kvm is
# usable, and a KVM probe boot prints its first console line within 10 s
# (a broken KVM hangs silently; see /work/shared/docs/qemu.md). The probe's
# verdict is cached in ci/out/linux-<series>/accel. DLM_QEMU_ACCEL=tcg|kvm
# overrides.
# --plugin loads a QEMU TCG plugin (see icount.sh) and so forces TCG.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=ci/lib.sh
. "$here/../lib.sh"

timeout_s=120
initramfs=""
quiet=0
plugin=()
while [ $# -gt 0 ]; do
    case "$1" in
    --kernel) DLM_KERNEL=$2; shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --initramfs) initramfs=$2; shift 2 ;;
    --quiet) quiet=1; shift ;;
    --plugin) plugin=(-plugin "$2"); shift 2 ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    --) shift; break ;;
    *) die "unexpected '$1' (the command goes after --)" 2 ;;
    esac
done
[ $# -gt 0 ] || die "usage: run.sh [--kernel SERIES] [--timeout SECS] [--initramfs FILE] [--quiet] [--plugin SO] -- CMD [ARG...]" 2
kernel_setup
kdir=$KERNEL_DIR
outdir=$GUEST_OUT
log="$outdir/qemu-serial.log"
initramfs=${initramfs:-$outdir/initramfs.cpio}
[ -s "$kdir/vmlinux" ] || die "$kdir/vmlinux missing; run ci/kernel/fetch.sh --kernel $DLM_KERNEL"
[ -s "$initramfs" ] || die "$initramfs missing; run ci/kernel/initramfs.sh --kernel $DLM_KERNEL"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing; run ci/kernel/fetch.sh"

append="console=ttyS0 panic=-1 oops=panic loglevel=4 rdinit=/init"
qemu_base=(qemu-system-x86_64 -M pc -smp 1 -m 512 -nographic -no-reboot -nodefaults
    -kernel "$kdir/vmlinux")

# --- choose the accelerator -------------------------------------------------
probe_kvm() {
    grep -qwE 'vmx|svm' /proc/cpuinfo || return 1
    [ -r /dev/kvm ] && [ -w /dev/kvm ] || return 1
    local key
    key="$(cat "$kdir/version") $(uname -r) $(hostname)"
    if [ -f "$outdir/accel" ] && [ "$(sed -n 2p "$outdir/accel")" = "$key" ]; then
        [ "$(sed -n 1p "$outdir/accel")" = kvm ]
        return
    fi
    # A probe boot with the kernel's own early lines on the console: any
    # output within 10 s means KVM runs this kernel.
    local plog="$outdir/kvm-probe.log" verdict=tcg
    timeout -k 2 10 "${qemu_base[@]}" -accel kvm -cpu host -serial "file:$plog" \
        -initrd "$initramfs" -append "console=ttyS0 panic=-1 loglevel=7 rdinit=/bin/false" \
        </dev/null >/dev/null 2>&1 || true
    [ -s "$plog" ] && verdict=kvm
    printf '%s\n%s\n' "$verdict" "$key" >"$outdir/accel"
    [ "$verdict" = kvm ]
}
accel_choice=${DLM_QEMU_ACCEL:-auto}
[ ${#plugin[@]} -gt 0 ] && accel_choice=tcg
case "$accel_choice" in
kvm) accel=(-accel kvm -cpu host) ;;
tcg) accel=(-accel tcg) ;;
*) if probe_kvm; then accel=(-accel kvm -cpu host); else accel=(-accel tcg); fi ;;
esac

# --- the command, as a second cpio archive ---------------------------------
# The kernel unpacks concatenated archives in order, so /ci/cmd is added
# without rebuilding the base initramfs. Each word is single-quoted for
# the guest's sh.
quote() {
    local w out=""
    for w in "$@"; do
        out+="'${w//\'/\'\\\'\'}' "
    done
    printf '%s' "${out% }"
}
stage=$(mktemp -d "${TMPDIR:-/tmp}/dlm-run.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/ci"
printf '%s\n' "$(quote "$@")" >"$stage/ci/cmd"
printf '%s\n' "$*" >"$stage/ci/cmd.txt"
: >"$stage/ci/env"
for v in RUST_LOG DLM_SMOKE_ITERATIONS DLM_KERNEL; do
    [ -n "${!v:-}" ] && printf "export %s=%s\n" "$v" "$(quote "${!v}")" >>"$stage/ci/env"
done
(cd "$stage" && find ci | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$stage/cmd.cpio"
cat "$initramfs" "$stage/cmd.cpio" >"$stage/initramfs.cpio"

# --- boot -------------------------------------------------------------------
mkdir -p "$outdir"
: >"$log"
echo "run.sh: booting Linux $(cat "$kdir/version") ${accel[*]} (timeout ${timeout_s}s): $*"
start=$(date +%s.%N)
# The guest's own status is read from its log below; QEMU's is reported.
set +e
trap - ERR
if [ "$quiet" = 1 ]; then
    timeout -k 5 "$timeout_s" "${qemu_base[@]}" "${accel[@]}" ${plugin[@]+"${plugin[@]}"} -serial stdio \
        -initrd "$stage/initramfs.cpio" -append "$append" </dev/null >"$log" 2>&1
    qemu_rc=$?
else
    timeout -k 5 "$timeout_s" "${qemu_base[@]}" "${accel[@]}" ${plugin[@]+"${plugin[@]}"} -serial stdio \
        -initrd "$stage/initramfs.cpio" -append "$append" </dev/null 2>&1 | tee "$log"
    qemu_rc=${PIPESTATUS[0]}
fi
set -e
ci_err_on
secs=$(echo "$(date +%s.%N) - $start" | bc 2>/dev/null || echo "?")

# The marker line, without the console's carriage returns.
result=$(tr -d '\r' <"$log" | sed -n 's/^DLM_CI_RESULT=\([0-9][0-9]*\)$/\1/p' | tail -n 1)

fail() {
    echo
    echo "run.sh: ---- last 40 lines of $log ----"
    tail -n 40 "$log" | tr -d '\r'
    echo "run.sh: ----"
    echo "run.sh: FAILED: $1"
}
if [ -n "$result" ]; then
    if [ "$result" -eq 0 ]; then
        echo "run.sh: guest command passed (${secs}s wall, qemu status $qemu_rc)"
    else
        fail "guest command exited with status $result (${secs}s wall)"
    fi
    exit "$result"
fi
if [ "$qemu_rc" -eq 124 ] || [ "$qemu_rc" -eq 137 ]; then
    fail "the guest did not finish within ${timeout_s}s and was killed (hung, or too slow; see the log)"
    exit 124
fi
fail "no DLM_CI_RESULT line: the guest crashed or QEMU failed (qemu status $qemu_rc, ${secs}s)"
exit 1
