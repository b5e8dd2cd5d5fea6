#!/usr/bin/env bash
# Install what the test suite needs beyond Rust: the Debian packages of the real-TUN tests
# and cargo-fuzz. Used by scripts/test.sh (and so by .ci/run); safe to run again.
set -euo pipefail

readonly PROG="${0##*/}"

# The programs the real-TUN tests run (tests/common TOOLS, tests/hostile HOSTILE_TOOLS):
# ip, ss (iproute2); ping; nc -N (the OpenBSD one); socat; tcpdump; tshark; kill (procps);
# hping3; nmap; nft; scapy for Debian's /usr/bin/python3; setpriv, unshare, mount
# (util-linux); timeout, mknod, mkfifo (coreutils).
readonly PACKAGES=(
    iproute2 iputils-ping netcat-openbsd socat tcpdump tshark procps
    hping3 nmap nftables python3-scapy util-linux coreutils
)
# The fuzz target: libFuzzer is C++ that libfuzzer-sys compiles.
readonly FUZZ_PACKAGES=(g++)
readonly FUZZ_INSTALL=(cargo install --locked cargo-fuzz)

usage() {
    cat <<EOF
Usage: scripts/$PROG [--no-fuzz] [--check] [--list]

Install what scripts/test.sh needs besides Rust, skipping what is already there:
  - the Debian packages of the tests on a real TUN, with apt-get (as root, or
    through sudo):
      ${PACKAGES[*]}
  - for the fuzz target: ${FUZZ_PACKAGES[*]} and cargo-fuzz (${FUZZ_INSTALL[*]}).
Then check that this machine can run them (/dev/net/tun, network namespaces).
When it cannot install something it prints the exact command to run and exits 1.

Options:
  --no-fuzz   leave out what only the fuzz target needs (g++, cargo-fuzz)
  --check     install nothing: say what is missing and how to install it
              (exit 1 if anything is)
  --list      print the Debian packages, one per line, and exit
  -h, --help  show this help
EOF
}

die() {
    echo "$PROG: error: $*" >&2
    exit 1
}

fuzz=true
check_only=false
while (($# > 0)); do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --no-fuzz) fuzz=false ;;
        --check) check_only=true ;;
        --list) printf '%s\n' "${PACKAGES[@]}" "${FUZZ_PACKAGES[@]}"; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done

wanted=("${PACKAGES[@]}")
if $fuzz; then
    wanted+=("${FUZZ_PACKAGES[@]}")
fi

# ---- running as root: directly, through sudo, or not at all ----
# Prints how to run a command as root here ("" for root, "sudo" ...); fails if there is no way.
root_prefix() {
    if [[ $EUID -eq 0 ]]; then
        echo ""
    elif command -v sudo >/dev/null && { sudo -n true 2>/dev/null || [[ -t 0 ]]; }; then
        echo "sudo"
    else
        return 1
    fi
}

as_root() {
    local prefix
    prefix="$(root_prefix)" || return 1
    if [[ -z "$prefix" ]]; then
        "$@"
    else
        sudo env DEBIAN_FRONTEND=noninteractive "$@"
    fi
}

# ---- Debian packages ----
missing_packages() {
    local package
    for package in "${wanted[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' \
            || echo "$package"
    done
}

# Installs the missing packages; on failure prints the command that would do it.
install_packages() {
    local missing=("$@")
    local command="sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}"
    if ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then
        echo "$PROG: no apt-get here (not Debian or Ubuntu): install your system's packages for" \
            "${missing[*]}" >&2
        return 1
    fi
    if $check_only; then
        echo "$PROG: missing: ${missing[*]}; install them with: $command" >&2
        return 1
    fi
    if ! root_prefix >/dev/null; then
        echo "$PROG: missing: ${missing[*]}, and installing needs root (no sudo, or sudo" \
            "needs a password and there is no terminal); run: $command" >&2
        return 1
    fi
    echo "$PROG: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Answer wireshark-common's "may non-superusers capture packets?" up front.
    echo 'wireshark-common wireshark-common/install-setuid boolean false' \
        | as_root debconf-set-selections 2>/dev/null || true
    if ! as_root apt-get update -q </dev/null; then
        echo "$PROG: 'apt-get update' failed (see its output above); then run: $command" >&2
        return 1
    fi
    if ! as_root apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" </dev/null; then
        echo "$PROG: 'apt-get install ${missing[*]}' failed (see its output above);" \
            "run: $command" >&2
        return 1
    fi
}

# ---- cargo-fuzz ----
install_cargo_fuzz() {
    if ! command -v cargo >/dev/null && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
        PATH="$HOME/.cargo/bin:$PATH"
    fi
    if ! command -v cargo >/dev/null; then
        echo "$PROG: cargo not found (in PATH or ~/.cargo/bin): install Rust from" \
            "https://rustup.rs, or run $PROG as the user who has it (not through sudo)" >&2
        return 1
    fi
    if cargo fuzz --version >/dev/null 2>&1; then
        return 0
    fi
    if $check_only; then
        echo "$PROG: missing: cargo-fuzz; install it with: ${FUZZ_INSTALL[*]}" >&2
        return 1
    fi
    echo "$PROG: installing cargo-fuzz: ${FUZZ_INSTALL[*]} (builds it: a few minutes)"
    if ! "${FUZZ_INSTALL[@]}" </dev/null; then
        echo "$PROG: '${FUZZ_INSTALL[*]}' failed (see its output above); run it again by hand" >&2
        return 1
    fi
    cargo fuzz --version >/dev/null 2>&1 || {
        echo "$PROG: cargo-fuzz was installed but 'cargo fuzz --version' fails: is" \
            "~/.cargo/bin in PATH?" >&2
        return 1
    }
}

# ---- can this machine run the real-TUN tests at all ----
check_machine() {
    if [[ ! -c /dev/net/tun ]]; then
        echo "$PROG: /dev/net/tun is missing: load the module (sudo modprobe tun); in a" \
            "container: --device /dev/net/tun --cap-add NET_ADMIN" >&2
        return 1
    fi
    if ! root_prefix >/dev/null || ! command -v ip >/dev/null; then
        return 0 # checked by the tests themselves, which skip loudly without root
    fi
    local probe="tunstack-probe-$$"
    if ! as_root ip netns add "$probe" 2>/dev/null; then
        echo "$PROG: cannot create network namespaces ('ip netns add' failed): the tests need" \
            "CAP_SYS_ADMIN and CAP_NET_ADMIN (in a container: --privileged)" >&2
        return 1
    fi
    as_root ip netns delete "$probe"
}

failed=false
if command -v dpkg-query >/dev/null; then
    mapfile -t missing < <(missing_packages)
else
    missing=("${wanted[@]}") # cannot tell without dpkg: install_packages explains
fi
if ((${#missing[@]} > 0)); then
    install_packages "${missing[@]}" || failed=true
fi
if $fuzz; then
    install_cargo_fuzz || failed=true
fi
check_machine || failed=true

if $failed; then
    echo "$PROG: FAILED: the test tools are not all there (the reasons are above)" >&2
    exit 1
fi
if $fuzz; then
    wanted+=(cargo-fuzz)
fi
echo "$PROG: the test tools are installed (${wanted[*]})"
