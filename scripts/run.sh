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
If the TUN device is missing, create it first with scripts/setup.sh (through
sudo when not root). As a normal user, cargo and the stack run as you. Under
sudo, cargo and the stack run as \$SUDO_USER when possible (cargo found in
their ~/.cargo/bin, repository writable by them, /dev/net/tun usable by them),
otherwise as root.

tunstack echo options (passed through unchanged):
  --tun NAME         TUN device            (default tun0, or \$TUN)
  --addr IP/PREFIX   stack address; repeatable (default 192.168.69.2/24, fd69::2/64)
  --port N           echo port             (default 7)
  --backlog N        listen backlog
  --mtu N            MTU
Environment: RUST_LOG (log level, default info), TUN.

Then, from another terminal:  ping 192.168.69.2   or   nc 192.168.69.2 7
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

# ---- who builds and runs: the invoking user where possible ----
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

as_user=""   # empty: run as the current user
cargo=""
if [[ $EUID -eq 0 && -n "${SUDO_USER:-}" && "${SUDO_USER}" != root ]]; then
    user_cargo="$(cargo_for_user "$SUDO_USER")"
    if [[ -z "$user_cargo" ]]; then
        echo "$PROG: note: no cargo for $SUDO_USER (~/.cargo/bin/cargo); building and running as root"
    elif ! runuser -u "$SUDO_USER" -- test -w "$REPO" -a \( ! -e "$REPO/target" -o -w "$REPO/target" \); then
        echo "$PROG: note: $SUDO_USER cannot write $REPO/target; building and running as root"
    else
        as_user="$SUDO_USER"
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

# Run "$@" as $as_user (keeping RUST_LOG), or as ourselves.
as_target() {
    if [[ -n "$as_user" ]]; then
        local home
        home="$(getent passwd "$as_user" | cut -d: -f6)"
        runuser -u "$as_user" -- env HOME="$home" PATH="$(dirname "$cargo"):$PATH" "${log_env[@]}" "$@"
    else
        "$@"
    fi
}

# ---- build ----
echo "$PROG: building (cargo build --release)${as_user:+ as $as_user}"
cd "$REPO"
as_target "$cargo" build --release || die "cargo build --release failed (see the errors above)"
binary="${CARGO_TARGET_DIR:-$REPO/target}/release/tunstack"
[[ -x "$binary" ]] || die "build succeeded but $binary is missing"

# ---- the TUN device ----
if ! ip link show dev "$tun" >/dev/null 2>&1; then
    echo "$PROG: TUN device $tun is missing; creating it with scripts/setup.sh"
    if [[ $EUID -eq 0 ]]; then
        "$REPO/scripts/setup.sh" --tun "$tun" --user "${as_user:-$(id -un)}" \
            || die "scripts/setup.sh failed (see above)"
    elif command -v sudo >/dev/null; then
        sudo "$REPO/scripts/setup.sh" --tun "$tun" --user "$(id -un)" \
            || die "sudo scripts/setup.sh failed (see above)"
    else
        die "TUN device $tun is missing and sudo is not available; as root run: $REPO/scripts/setup.sh --tun $tun --user $(id -un)"
    fi
fi

# Under sudo, fall back to root if the user cannot open /dev/net/tun.
if [[ -n "$as_user" ]] && ! runuser -u "$as_user" -- test -r /dev/net/tun -a -w /dev/net/tun; then
    echo "$PROG: note: $as_user cannot open /dev/net/tun (mode $(stat -c '%a' /dev/net/tun)); running the stack as root"
    as_user=""
fi

if [[ $EUID -ne 0 && ! ( -r /dev/net/tun && -w /dev/net/tun ) ]]; then
    die "you cannot open /dev/net/tun (mode $(stat -c '%a' /dev/net/tun 2>/dev/null || echo missing))," \
        "so the stack cannot attach to $tun. Either run: sudo chmod 0666 /dev/net/tun" \
        "(most distributions ship it that way), or run as root: sudo scripts/$PROG $*"
fi

echo "$PROG: running ${binary#"$REPO"/} echo $*${as_user:+ as $as_user} (Ctrl-C to stop)"
if [[ -n "$as_user" ]]; then
    exec runuser -u "$as_user" -- env "${log_env[@]}" "$binary" echo "$@"
fi
exec "$binary" echo "$@"
