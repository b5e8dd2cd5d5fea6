#!/usr/bin/env bash
# Run the whole test suite: unit, integration (real TUN in network namespaces), doc tests,
# and the cargo-fuzz target for a bounded time, after installing the tools they need.
set -euo pipefail

readonly PROG="${0##*/}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO

usage() {
    cat <<EOF
Usage: scripts/$PROG [cargo test arguments]

Run the whole test suite: cargo test --all-targets, then cargo test --doc, then the
cargo-fuzz target for FUZZ_SECONDS (default 60; 0 skips it) via scripts/fuzz.sh
(only when run without arguments).
Extra arguments go to both cargo commands, e.g.
  scripts/$PROG -- --test-threads=2       # fewer tests at once
  scripts/$PROG ping                      # only tests whose name contains "ping"
If the arguments pick targets themselves (--test NAME, --lib, --doc, --bins, ...)
cargo test runs once, with exactly those arguments:
  scripts/$PROG --test echo_tun -- --nocapture

The integration tests create network namespaces and TUN devices, so they need
root. As a normal user with sudo, cargo builds as you and only the test binaries
run as root, through CARGO_TARGET_<host triple>_RUNNER="sudo -E" (you may be
asked for your password once). Without root they print a loud SKIP; with CI=true
a skipped test fails instead.

First it runs scripts/install-test-tools.sh: it installs what is missing of the
real-TUN tests' Debian packages (apt-get, as root or through sudo) and, when the
fuzz target runs, g++ and cargo-fuzz (cargo install --locked cargo-fuzz). When it
cannot, it prints the command to run; the suite then goes on (the tests that
need the missing tools SKIP loudly) except with CI=true, where it stops.
NO_INSTALL=1 only checks and says what is missing.

Needs: Rust (cargo). Environment: CI, FUZZ_SECONDS, NO_INSTALL.
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

cd "$REPO"
if ! command -v cargo >/dev/null; then
    [[ -x "$HOME/.cargo/bin/cargo" ]] \
        || die "cargo not found in PATH or ~/.cargo/bin; install Rust from https://rustup.rs"
    PATH="$HOME/.cargo/bin:$PATH"
fi

# ---- root for the test binaries only ----
host_triple="$(rustc -vV | sed -n 's/^host: //p')"
[[ -n "$host_triple" ]] || die "could not read the host triple from 'rustc -vV'"
runner_var="CARGO_TARGET_$(tr 'a-z.-' 'A-Z__' <<<"$host_triple")_RUNNER"

if [[ $EUID -eq 0 ]]; then
    echo "$PROG: running as root; the integration tests will run"
elif [[ -n "${!runner_var:-}" ]]; then
    echo "$PROG: using $runner_var='${!runner_var}' from the environment"
elif ! command -v sudo >/dev/null; then
    echo "$PROG: WARNING: not root and sudo is not installed: tests that need root" \
        "(real TUN devices in network namespaces) will be SKIPPED${CI:+ and, with CI set, FAIL}" >&2
elif ! sudo -n true 2>/dev/null && ! [[ -t 0 ]]; then
    echo "$PROG: WARNING: sudo needs a password and there is no terminal to ask on:" \
        "tests that need root will be SKIPPED${CI:+ and, with CI set, FAIL}" >&2
else
    echo "$PROG: test binaries will run as root through 'sudo -E' ($runner_var)"
    sudo -v || die "sudo failed; run as root instead: sudo $0 $*"
    export "$runner_var=sudo -E"
fi

# ---- the tools the tests need (scripts/install-test-tools.sh) ----
fuzz_seconds="${FUZZ_SECONDS:-60}"
[[ "$fuzz_seconds" =~ ^[0-9]+$ ]] || die "FUZZ_SECONDS takes a whole number, not '$fuzz_seconds'"
run_fuzz=false
if (($# == 0)) && ((fuzz_seconds > 0)); then
    run_fuzz=true
fi
readonly FUZZ_INSTALL="cargo install --locked cargo-fuzz"
install_args=()
if ! $run_fuzz; then
    install_args+=(--no-fuzz)
fi
if [[ "${NO_INSTALL:-}" == 1 ]]; then
    install_args+=(--check)
fi
if ! "$REPO/scripts/install-test-tools.sh" "${install_args[@]}"; then
    if [[ "${CI:-}" == true ]]; then
        die "scripts/install-test-tools.sh failed (see its output above); with CI=true" \
            "the suite does not run without its tools"
    fi
    echo "$PROG: WARNING: going on without them: the tests that need them will SKIP loudly" >&2
fi

# ---- which cargo test runs ----
picks_targets=false
for arg in "$@"; do
    case "$arg" in
        --) break ;;
        --lib | --bins | --bin | --bin=* | --test | --test=* | --tests | --examples | --example | \
            --example=* | --benches | --bench | --bench=* | --all-targets | --doc)
            picks_targets=true ;;
    esac
done

# Report every failing test binary, not just the first one.
fail_fast=(--no-fail-fast)
for arg in "$@"; do
    case "$arg" in
        --) break ;;
        --no-fail-fast) fail_fast=() ;;
    esac
done

failed=()
# Runs `cargo test ARGS...`, remembering it if it fails.
cargo_test() {
    echo "$PROG: cargo test $*"
    cargo test "$@" || failed+=("cargo test $* (see its output above)")
}

if $picks_targets; then
    cargo_test "${fail_fast[@]}" "$@"
else
    cargo_test --all-targets "${fail_fast[@]}" "$@"
    if cargo metadata --no-deps --format-version 1 2>/dev/null | grep -q '"kind":\["lib"\]'; then
        cargo_test --doc "${fail_fast[@]}" "$@"
    else
        echo "$PROG: no library target; skipping doc tests"
    fi
fi

# ---- the cargo-fuzz target, for a bounded time (FUZZ_SECONDS, 0 turns it off) ----
if $run_fuzz; then
    if cargo fuzz --version >/dev/null 2>&1; then
        "$REPO/scripts/fuzz.sh" --seconds "$fuzz_seconds" \
            || failed+=("scripts/fuzz.sh --seconds $fuzz_seconds (see its output above)")
    else
        message="the fuzz target needs cargo-fuzz, which is not installed: ${FUZZ_INSTALL}"
        if [[ "${CI:-}" == true ]]; then
            failed+=("$message")
        else
            echo "$PROG: SKIP: $message" >&2
        fi
    fi
fi

if ((${#failed[@]} > 0)); then
    for failure in "${failed[@]}"; do
        echo "$PROG: FAILED: $failure" >&2
    done
    exit 1
fi
echo "$PROG: all tests passed"
