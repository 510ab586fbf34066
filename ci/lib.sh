# Shared helpers for the ci/ scripts. Source it; do not run it.
# shellcheck shell=bash

# Run a command as root: directly when we are root, else through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "error: '$*' needs root and sudo is not installed" >&2
        return 1
    fi
}

# Install the Debian packages named, if any is missing.
apt_install() {
    local missing=()
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        # On stderr, as apt-get's own words: scripts that print paths
        # on stdout (ci/cluster/c/build.sh) call this.
        echo "ci: installing ${missing[*]}" >&2
        as_root apt-get update -qq >&2
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# What building dlm-rs needs: a C compiler, libclang for bindgen, and the
# kernel UAPI headers (linux-libc-dev) that bindgen reads.
install_build_deps() {
    apt_install gcc libc6-dev libclang-dev linux-libc-dev
    if ! command -v cargo >/dev/null 2>&1; then
        if [ -x "$HOME/.cargo/bin/cargo" ]; then
            export PATH="$HOME/.cargo/bin:$PATH"
        else
            echo "ci: cargo not found; installing Rust with rustup"
            apt_install curl ca-certificates
            curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
            export PATH="$HOME/.cargo/bin:$PATH"
        fi
    fi
}

# --- failures are never silent ----------------------------------------------
# Sourcing this file installs an ERR trap (inherited by functions, command
# substitutions and subshells: set -E) that names the script, the line and
# the command that failed, so that `set -e` never ends a script without a
# word. Commands tested by if, while, || and && do not trigger it.
ci_on_err() {
    local rc=$1 src=$2 line=$3 cmd=$4
    echo "${src#"$PWD/"}:$line: '$cmd' failed (exit status $rc)" >&2
}
# ci_err_on installs it (sourcing does); a stretch whose failures are
# expected and handled runs between `trap - ERR` and ci_err_on.
ci_err_on() {
    set -E
    trap 'ci_on_err "$?" "${BASH_SOURCE[0]:-$0}" "$LINENO" "$BASH_COMMAND"' ERR
}
ci_err_on

# Print an error and exit with status 1 (or the second argument).
die() {
    echo "${0##*/}: $1" >&2
    exit "${2:-1}"
}

# --- the guest kernel ------------------------------------------------------
# The guest boots one Debian kernel series, chosen with DLM_KERNEL (or a
# script's --kernel, which sets it):
#
#   DLM_KERNEL=6.1   linux-image-amd64       (the default; Debian 12's kernel)
#   DLM_KERNEL=6.12  linux-image-6.12-amd64  (Debian 12's security archive)
#   DLM_KERNEL=X.Y   linux-image-X.Y-amd64
#
# DLM_KERNEL_PKG=linux-image-<release> pins one kernel package instead; its
# series (the release's X.Y) is then DLM_KERNEL's default.
#
# kernel_setup sets and exports DLM_KERNEL, and sets
#   KERNEL_META   the package whose dependency names the kernel package
#   KERNEL_DIR    ci/out/kernel/<series>, a link fetch.sh points at the
#                 kernel's cache ci/out/kernel/<release>/
#   GUEST_OUT     ci/out/linux-<series>/: this series' initramfs, serial
#                 logs and traces
# shellcheck disable=SC2034 # the variables are for the scripts that call it
kernel_setup() {
    local from_pkg=""
    if [ -n "${DLM_KERNEL_PKG:-}" ]; then
        from_pkg=$(printf '%s\n' "${DLM_KERNEL_PKG#linux-image-}" | sed -n 's/^\([0-9][0-9]*\.[0-9][0-9]*\)[.-].*/\1/p')
        [ -n "$from_pkg" ] || die "DLM_KERNEL_PKG=$DLM_KERNEL_PKG is not linux-image-<X.Y...>"
        if [ -n "${DLM_KERNEL:-}" ] && [ "$DLM_KERNEL" != "$from_pkg" ]; then
            die "DLM_KERNEL=$DLM_KERNEL but DLM_KERNEL_PKG=$DLM_KERNEL_PKG is a $from_pkg kernel"
        fi
    fi
    DLM_KERNEL=${DLM_KERNEL:-${from_pkg:-6.1}}
    case "$DLM_KERNEL" in
    6.1) KERNEL_META=linux-image-amd64 ;;
    [0-9].[0-9] | [0-9].[0-9][0-9]) KERNEL_META=linux-image-$DLM_KERNEL-amd64 ;;
    *) die "DLM_KERNEL must be a kernel series such as 6.1 or 6.12, not '$DLM_KERNEL'" 2 ;;
    esac
    export DLM_KERNEL
    local root
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    KERNEL_DIR="$root/ci/out/kernel/$DLM_KERNEL"
    GUEST_OUT="$root/ci/out/linux-$DLM_KERNEL"
    mkdir -p "$GUEST_OUT"
}
