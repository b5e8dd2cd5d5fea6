#!/usr/bin/env bash
# Build tunstack and run the echo server on the TUN device (creating it if needed).
set -euo pipefail

readonly PROG="${0##*/}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO

usage() {
    cat <<EOF
Usage: scripts/$PROG [tunstack echo options]
       sudo scripts/$PROG [tunstack echo options]

Build tunstack (cargo build --release) and run: tunstack echo [options].
If the TUN device is missing, not owned by the user who runs the stack, or down,
fix it first with scripts/setup.sh --no-next-step (through sudo when not root);
a device that is right is left as it is.

As a normal user, cargo and the stack run as you. Under sudo, the stack runs as
\$SUDO_USER whenever they can open /dev/net/tun (the TUN is made theirs, offloads
on, no root needed); cargo builds as them when their cargo is found
(~/.cargo/bin) and they can write the repository's target/, otherwise as root.

tunstack echo options (passed through unchanged; see tunstack echo --help):
  --tun NAME         TUN device              (default tun0, or \$TUN)
  --addr IP/PREFIX   stack address; repeatable (default 192.168.69.2/24, fd69::2/64)
  --port N           echo port, 1-65535      (default 7)
  --backlog N        listen backlog, 1-65535 (default 128)
  --mtu N            MTU, 68-65535           (default: the device's)
Environment: RUST_LOG (log level, default info), TUN.

Then, from another terminal:  ping 192.168.69.2   or   nc -v 192.168.69.2 7
EOF
}

die() {
    echo "$PROG: error: $*" >&2
    exit 1
}

for arg in "$@"; do
    case "$arg" in
        -h | --help) usage; exit 0 ;;
        --) break ;;
    esac
done

# The device name, as the binary will see it.
tun="${TUN:-tun0}"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
        --tun) ((i + 1 < ${#args[@]})) || die "option --tun needs a value"; tun="${args[i + 1]}" ;;
        --tun=*) tun="${args[i]#*=}" ;;
    esac
done
if [[ -n "${TUN:-}" ]] && ! printf '%s\n' "$@" | grep -q '^--tun'; then
    set -- --tun "$tun" "$@"
fi

# ---- who runs the stack, who builds ----
# Prints the path of cargo for user $1, or nothing.
cargo_for_user() {
    local home
    home="$(getent passwd "$1" | cut -d: -f6)"
    if [[ -n "$home" && -x "$home/.cargo/bin/cargo" ]]; then
        echo "$home/.cargo/bin/cargo"
    else
        runuser -u "$1" -- bash -lc 'command -v cargo' 2>/dev/null || true
    fi
}

run_user=""     # who runs the stack; empty: the current user
build_user=""   # who runs cargo; empty: the current user
cargo=""
if [[ $EUID -eq 0 && -n "${SUDO_USER:-}" && "${SUDO_USER}" != root ]]; then
    if runuser -u "$SUDO_USER" -- test -r /dev/net/tun -a -w /dev/net/tun; then
        run_user="$SUDO_USER"
    else
        echo "$PROG: note: $SUDO_USER cannot open /dev/net/tun (mode $(stat -c '%a' /dev/net/tun)); the stack runs as root"
    fi
    user_cargo="$(cargo_for_user "$SUDO_USER")"
    if [[ -z "$user_cargo" ]]; then
        echo "$PROG: note: no cargo for $SUDO_USER (~/.cargo/bin/cargo); building as root"
    elif ! runuser -u "$SUDO_USER" -- test -w "$REPO" -a \( ! -e "$REPO/target" -o -w "$REPO/target" \); then
        echo "$PROG: note: $SUDO_USER cannot write $REPO/target; building as root"
    else
        build_user="$SUDO_USER"
        cargo="$user_cargo"
    fi
fi
if [[ -z "$cargo" ]]; then
    if command -v cargo >/dev/null; then
        cargo="$(command -v cargo)"
    elif [[ -x "$HOME/.cargo/bin/cargo" ]]; then
        cargo="$HOME/.cargo/bin/cargo"
    else
        die "cargo not found in PATH or ~/.cargo/bin; install Rust from https://rustup.rs"
    fi
fi

log_env=()
[[ -z "${RUST_LOG:-}" ]] || log_env=("RUST_LOG=$RUST_LOG")

# ---- build ----
echo "$PROG: building (cargo build --release)${build_user:+ as $build_user}"
cd "$REPO"
if [[ -n "$build_user" ]]; then
    home="$(getent passwd "$build_user" | cut -d: -f6)"
    runuser -u "$build_user" -- env HOME="$home" PATH="$(dirname "$cargo"):$PATH" \
        "${log_env[@]}" "$cargo" build --release \
        || die "cargo build --release failed (see the errors above)"
else
    "$cargo" build --release || die "cargo build --release failed (see the errors above)"
fi
binary="${CARGO_TARGET_DIR:-$REPO/target}/release/tunstack"
[[ -x "$binary" ]] || die "build succeeded but $binary is missing"
if [[ -n "$run_user" ]] && ! runuser -u "$run_user" -- test -x "$binary"; then
    echo "$PROG: note: $run_user cannot run $binary; the stack runs as root"
    run_user=""
fi

if [[ $EUID -ne 0 && ! ( -r /dev/net/tun && -w /dev/net/tun ) ]]; then
    die "you cannot open /dev/net/tun (mode $(stat -c '%a' /dev/net/tun 2>/dev/null || echo missing))," \
        "so the stack cannot attach to $tun. Either run: sudo chmod 0666 /dev/net/tun" \
        "(most distributions ship it that way), or run as root: sudo scripts/$PROG $*"
fi

# ---- the TUN device: present, the stack user's, up ----
owner="${run_user:-$(id -un)}"
# Why $tun needs scripts/setup.sh (missing, someone else's, down), or nothing.
device_problem() {
    local details uid
    if ! details="$(ip -d link show dev "$tun" 2>/dev/null)"; then
        echo "is missing"
        return
    fi
    uid="$(id -u "$owner")"
    if grep -q ' user ' <<<"$details" && ! grep -Eq " user ($owner|$uid) " <<<"$details"; then
        echo "is not $owner's"
    elif ! head -n 1 <<<"$details" | grep -Eq '[<,]UP[,>]'; then
        echo "is down"
    fi
}
problem="$(device_problem)"
if [[ -n "$problem" ]]; then
    echo "$PROG: TUN device $tun $problem; fixing it with scripts/setup.sh --tun $tun --user $owner"
    setup=("$REPO/scripts/setup.sh" --tun "$tun" --user "$owner" --no-next-step)
    if [[ $EUID -eq 0 ]]; then
        "${setup[@]}" || die "scripts/setup.sh failed (see above)"
    elif command -v sudo >/dev/null; then
        sudo "${setup[@]}" || die "sudo scripts/setup.sh failed (see above)"
    else
        die "TUN device $tun $problem and sudo is not available; as root run: ${setup[*]}"
    fi
fi

echo "$PROG: running ${binary#"$REPO"/} echo${*:+ $*}${run_user:+ as $run_user} (Ctrl-C to stop)"
if [[ -n "$run_user" ]]; then
    exec runuser -u "$run_user" -- env "${log_env[@]}" "$binary" echo "$@"
fi
exec "$binary" echo "$@"
