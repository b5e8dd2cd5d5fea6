#!/usr/bin/env bash
# Create (or repair) the persistent TUN device that tunstack attaches to.
set -euo pipefail

readonly PROG="${0##*/}"

usage() {
    cat <<EOF
Usage: sudo $PROG [options]

Create a persistent TUN device owned by a normal user, give the host side of it
an IPv4 and an IPv6 address, set its MTU and bring it up. Safe to re-run: an
existing device is checked and its addresses, MTU and owner are fixed if needed.
Must run as root (use sudo); the device is then usable by --user without root.

Options (environment variable in brackets):
  --tun NAME       device name                  [TUN, default tun0]
  --addr4 IP/LEN   host-side IPv4 address       [HOST_ADDR4, default 192.168.69.1/24]
  --addr6 IP/LEN   host-side IPv6 address       [HOST_ADDR6, default fd69::1/64]
                   (pass --addr6 none to skip IPv6)
  --mtu N          device MTU, 68 to 65535      [MTU, default 1500]
                   (below 1280, the IPv6 minimum, the link gets no IPv6)
  --user NAME      user allowed to attach       [TUN_USER, default \$SUDO_USER,
                   else the current user]
  --no-next-step   do not end with the "start the stack with" hint
                   (scripts/run.sh starts the stack itself)
  -h, --help       show this help

The stack itself (tunstack echo) uses 192.168.69.2 and fd69::2 on this link.
Undo with: sudo scripts/teardown.sh --tun NAME
EOF
}

die() {
    echo "$PROG: error: $*" >&2
    exit 1
}

warn() {
    echo "$PROG: warning: $*" >&2
}

# Run a command; on failure say which command failed and stop.
run() {
    if ! "$@"; then
        die "command failed: $*"
    fi
}

tun="${TUN:-tun0}"
addr4="${HOST_ADDR4:-192.168.69.1/24}"
addr6="${HOST_ADDR6:-fd69::1/64}"
mtu="${MTU:-1500}"
user="${TUN_USER:-${SUDO_USER:-$(id -un)}}"
next_step=true
original_args="$*"

need_value() {
    [[ $# -ge 2 && -n "$2" ]] || die "option $1 needs a value (see --help)"
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --tun) need_value "$@"; tun="$2"; shift 2 ;;
        --tun=*) tun="${1#*=}"; shift ;;
        --addr4) need_value "$@"; addr4="$2"; shift 2 ;;
        --addr4=*) addr4="${1#*=}"; shift ;;
        --addr6) need_value "$@"; addr6="$2"; shift 2 ;;
        --addr6=*) addr6="${1#*=}"; shift ;;
        --mtu) need_value "$@"; mtu="$2"; shift 2 ;;
        --mtu=*) mtu="${1#*=}"; shift ;;
        --user) need_value "$@"; user="$2"; shift 2 ;;
        --user=*) user="${1#*=}"; shift ;;
        --no-next-step) next_step=false; shift ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

# ---- validate inputs before touching anything ----
[[ "$tun" =~ ^[A-Za-z0-9_.-]{1,15}$ ]] \
    || die "invalid device name '$tun' (1-15 characters: letters, digits, _ . -)"
if ! [[ "$mtu" =~ ^[0-9]+$ ]] || ((mtu < 68 || mtu > 65535)); then
    die "invalid MTU '$mtu' (expected a number from 68 to 65535)"
fi
[[ "$addr4" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$ ]] \
    || die "invalid IPv4 address '$addr4' (expected IP/PREFIX, e.g. 192.168.69.1/24)"
if [[ "$addr6" != none ]]; then
    [[ "$addr6" =~ ^[0-9A-Fa-f:]+/[0-9]{1,3}$ ]] \
        || die "invalid IPv6 address '$addr6' (expected IP/PREFIX, e.g. fd69::1/64, or 'none')"
    if ((mtu < 1280)); then
        warn "MTU $mtu is below 1280, the IPv6 minimum: $tun gets no IPv6 address" \
            "(tunstack leaves out its own IPv6 address on it too)"
        addr6=none
    fi
fi
id -u "$user" >/dev/null 2>&1 || die "user '$user' does not exist (see --user)"

[[ $EUID -eq 0 ]] || die "must run as root to create $tun; try: sudo $0 $original_args"
command -v ip >/dev/null || die "'ip' not found; install iproute2 (apt-get install iproute2)"

# ---- /dev/net/tun: must exist, and should be usable by $user ----
if [[ ! -c /dev/net/tun ]]; then
    modprobe tun 2>/dev/null || true
    [[ -c /dev/net/tun ]] || die "/dev/net/tun does not exist: the kernel has no TUN support" \
        "or this container does not expose it (docker: --device /dev/net/tun --cap-add NET_ADMIN)"
fi

# Explain (but do not change) a device node the target user cannot open.
check_tun_node_access() {
    local mode
    [[ "$(id -u "$user")" -eq 0 ]] && return 0
    mode="$(stat -c '%a' /dev/net/tun)"
    [[ "${mode: -1}" == [67] ]] && return 0
    runuser -u "$user" -- test -r /dev/net/tun -a -w /dev/net/tun 2>/dev/null && return 0
    cat >&2 <<EOF
$PROG: note: /dev/net/tun has mode 0$mode here, so user '$user' cannot open it
  and tunstack will fail with "permission denied" unless it runs as root.
  Most distributions ship it as 0666 (safe: opening it only lets a user attach
  to TUN devices they own). To fix, either:
    sudo chmod 0666 /dev/net/tun     # until reboot; use a udev rule to persist
  or run tunstack as root (sudo scripts/run.sh).
EOF
}
check_tun_node_access

# ---- the device itself ----
link_details() {
    ip -d link show dev "$tun" 2>/dev/null
}

if details="$(link_details)"; then
    if ! grep -q ' tun type tun ' <<<"$details"; then
        die "$tun exists but is not a TUN device (remove it or pick another --tun)"
    fi
    uid="$(id -u "$user")"
    owner_ok=false
    # Always an explicit owner: a device without one may be attached by any local user.
    if grep -Eq " user ($user|$uid) " <<<"$details"; then
        owner_ok=true
    fi
    if grep -q ' pi on ' <<<"$details" || grep -q 'multi_queue' <<<"$details" || ! $owner_ok; then
        echo "$PROG: $tun exists with the wrong owner or flags; recreating it"
        run ip tuntap del dev "$tun" mode tun
        details=""
    else
        echo "$PROG: $tun already exists (owner '$user'), checking its configuration"
    fi
else
    details=""
fi

if [[ -z "$details" ]]; then
    # An explicit owner even for root: without one, the kernel lets any user attach.
    run ip tuntap add dev "$tun" mode tun user "$user"
    echo "$PROG: created TUN device $tun for user '$user'"
fi

# The MTU first: the kernel takes IPv6 off a link below 1280 and puts it back above.
run ip link set dev "$tun" mtu "$mtu"

# ---- IPv6 knobs: no router solicitations or autoconf noise on this link ----
v6conf="/proc/sys/net/ipv6/conf/$tun"
if [[ "$addr6" != none ]]; then
    [[ -d "$v6conf" ]] || die "IPv6 is not available in this kernel/namespace; use --addr6 none"
    if [[ "$(cat "$v6conf/disable_ipv6")" != 0 ]]; then
        echo "$PROG: enabling IPv6 on $tun (net.ipv6.conf.$tun.disable_ipv6 was 1)"
        run sysctl -q -w "net.ipv6.conf.$tun.disable_ipv6=0"
    fi
fi
if [[ -d "$v6conf" ]]; then
    for knob in router_solicitations=0 accept_ra=0 autoconf=0; do
        sysctl -q -w "net.ipv6.conf.$tun.$knob" >/dev/null 2>&1 \
            || warn "could not set net.ipv6.conf.$tun.$knob (harmless)"
    done
fi

# ---- addresses: exactly the wanted global address per family ----
# Remove global addresses of family $1 ("-4"/"-6") on $tun other than $2 (IP/PREFIX).
# `ip addr show to IP/32|128` yields our address in ip's canonical spelling, if present.
remove_other_addresses() {
    local family="$1" want="$2" host_bits keep have
    if [[ "$family" == -4 ]]; then host_bits=32; else host_bits=128; fi
    keep="$(ip -o "$family" addr show dev "$tun" to "${want%/*}/$host_bits" | awk '{print $4}')"
    [[ "${keep#*/}" == "${want#*/}" ]] || keep=""
    while read -r have; do
        [[ -n "$have" && "$have" != "$keep" ]] || continue
        echo "$PROG: removing stale address $have from $tun"
        run ip "$family" addr del "$have" dev "$tun"
    done < <(ip -o "$family" addr show dev "$tun" scope global | awk '{print $4}')
}

remove_other_addresses -4 "$addr4"
run ip -4 addr replace "$addr4" dev "$tun"
if [[ "$addr6" != none ]]; then
    remove_other_addresses -6 "$addr6"
    run ip -6 addr replace "$addr6" dev "$tun" nodad
fi

run ip link set dev "$tun" up

if [[ "$addr6" == none ]]; then addresses="$addr4"; else addresses="$addr4 and $addr6"; fi
echo "$PROG: $tun is ready: host side $addresses, MTU $mtu, owner '$user'"
if $next_step; then
    if [[ "$tun" == tun0 ]]; then tun_arg=""; else tun_arg=" --tun $tun"; fi
    echo "$PROG: start the stack with: scripts/run.sh$tun_arg"
fi
