#!/usr/bin/env bash
# Run the cargo-fuzz target (fuzz/fuzz_targets/ingress.rs) for a bounded time.
set -euo pipefail

readonly PROG="${0##*/}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO

usage() {
    cat <<EOF2
Usage: scripts/$PROG [--seconds N] [--target NAME]

Fuzz the stack's receive path (reassembly, classification, flow table, smoltcp, the
echo app and the packet trace) with libFuzzer through cargo-fuzz, for N seconds
(default 60). A crash stops the run, exits non-zero and leaves the input in
fuzz/artifacts/NAME/. Needs cargo-fuzz and g++: scripts/install-test-tools.sh
installs them (cargo-fuzz with: cargo install --locked cargo-fuzz).
cargo-fuzz passes nightly-only flags (-Zsanitizer=address); RUSTC_BOOTSTRAP=1 lets the
stable toolchain accept them, so no nightly is needed.

Options:
  --seconds N   how long to fuzz                       (default 60)
  --target NAME which fuzz target                      (default ingress)
  -h, --help    show this help
EOF2
}

die() {
    echo "$PROG: error: $*" >&2
    exit 1
}

seconds=60
target=ingress
while (($# > 0)); do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --seconds) [[ $# -ge 2 ]] || die "--seconds needs a value"; seconds="$2"; shift 2 ;;
        --target) [[ $# -ge 2 ]] || die "--target needs a value"; target="$2"; shift 2 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
[[ "$seconds" =~ ^[0-9]+$ ]] || die "--seconds takes a whole number, not '$seconds'"
command -v cargo >/dev/null || die "cargo not found; install Rust (https://rustup.rs)"
cargo fuzz --version >/dev/null 2>&1 || die "cargo-fuzz is not installed: run scripts/install-test-tools.sh (or: cargo install --locked cargo-fuzz)"

cd "$REPO"
echo "$PROG: fuzzing target '$target' for ${seconds}s"
# The working corpus (git-ignored) grows run to run; the committed seeds (IPv6 extension
# headers, overlapping fragments, ...: fuzz/seeds/make_seeds.py) start every run.
corpus="fuzz/corpus/$target"
mkdir -p "$corpus"
seeds=()
[[ -d "fuzz/seeds/$target" ]] && seeds=("fuzz/seeds/$target")
RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" --fuzz-dir fuzz "$corpus" "${seeds[@]}" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1
echo "$PROG: no crash in ${seconds}s"
