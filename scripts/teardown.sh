#!/usr/bin/env bash
# Remove the persistent TUN device created by scripts/setup.sh.
set -euo pipefail

readonly PROG="${0##*/}"

usage() {
    cat <<EOF
Usage: sudo $PROG [--tun NAME]

Remove the persistent TUN device made by scripts/setup.sh (and with it the
host-side addresses and routes). Does nothing if the device does not exist.

Options (environment variable in brackets):
  --tun NAME   device name   [TUN, default tun0]
  -h, --help   show this help
EOF
}

die() {
    echo "$PROG: error: $*" >&2
    exit 1
}

tun="${TUN:-tun0}"
original_args="$*"

while [[ $# -gt 0 ]]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --tun)
            [[ $# -ge 2 && -n "$2" ]] || die "option --tun needs a value (see --help)"
            tun="$2"; shift 2 ;;
        --tun=*) tun="${1#*=}"; shift ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

[[ "$tun" =~ ^[A-Za-z0-9_.-]{1,15}$ ]] \
    || die "invalid device name '$tun' (1-15 characters: letters, digits, _ . -)"
command -v ip >/dev/null || die "'ip' not found; install iproute2 (apt-get install iproute2)"

if ! details="$(ip -d link show dev "$tun" 2>/dev/null)"; then
    echo "$PROG: $tun does not exist; nothing to do"
    exit 0
fi
grep -q ' tun type tun ' <<<"$details" \
    || die "$tun is not a TUN device; refusing to remove it"
[[ $EUID -eq 0 ]] || die "must run as root to remove $tun; try: sudo $0 $original_args"

ip tuntap del dev "$tun" mode tun || die "could not remove $tun (command failed: ip tuntap del dev $tun mode tun)"

# A process still attached (a running tunstack) keeps the device alive until it exits.
if ip link show dev "$tun" >/dev/null 2>&1; then
    echo "$PROG: $tun is no longer persistent but a process still has it open;" \
        "it disappears when that process (tunstack?) exits"
else
    echo "$PROG: removed $tun"
fi
