#!/usr/bin/env bash
# Benchmark tunstack's echo server against the kernel's stack, inside private network
# namespaces that are created for the run and removed afterwards (issue 5).
set -euo pipefail

readonly PROG="${0##*/}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO
readonly TUNSTACK="$REPO/target/release/tunstack"
readonly BENCH="$REPO/target/release/tunstack-bench"

usage() {
    cat <<EOF
Usage: sudo scripts/$PROG [options]

Run the same client (target/release/tunstack-bench) against
  (a) tunstack echo on a TUN device: one namespace holds the TUN with the host-side
      addresses, tunstack (answering as 192.168.69.2) and the client;
  (b) the kernel's stack at its best (tunstack-bench kernel-echo) across a veth pair: the
      client in one namespace (192.168.69.1), the servers in another (192.168.69.2), two
      of them side by side: "kernel, every CPU" (port 7; not pinned, so it may use every
      CPU; a thread per connection, or with --kernel-shape epoll an epoll thread per CPU
      sharing the port with SO_REUSEPORT) and "kernel, 1 thread" (port 7001; one epoll
      thread, on the server's CPU of --pin: the shape of tunstack's loop),
and print one table of medians with the ratio tunstack / kernel at its best: per row, the
better of the two kernel servers' medians (in bold). It is also written to OUT/report.md
(raw values in OUT/results.tsv, server logs in OUT/logs/). Runs of (a) and (b) alternate.
Every namespace and process made here is removed on exit, failure or Ctrl-C. Nothing is
sent outside these namespaces. Needs root.

Measured: TCP echo throughput with 1 and 4 connections (every byte checked) at MTU 1500
(over IPv4 and IPv6) and at a large MTU, with the CPU seconds per GB echoed (utime+stime
from /proc: the server's processes; and those, the client and the kernel's ksoftirqd
threads together); TCP 1-byte, UDP 64-byte and ping round trips (p50/p99),
also through their floors (a bare TUN loop, blocking and spinning; tunstack spinning); UDP echo
packets/s and loss at 64 and 1472 bytes; sequential connection rate; N concurrent
connections (time, tunstack RSS, RTT with them open, and on the way with N/100, N/30,
N/10 and N/3 open: plotted to OUT/rtt-vs-conns.svg; the kernel side: epoll kernel-echo
processes on every CPU sharing the port); tunstack's idle CPU with many idle connections.

Options:
  --quick             small sizes and 1 run of each (under a minute)
  --runs N            runs of each comparison, median reported    (default 3; quick 1)
  --conns N           connections in the scale test               (default 100000; quick 1000)
  --idle-conns N      idle connections for the idle-CPU test      (default 10000; quick 1000)
  --idle-secs S       how long idle CPU is measured               (default 10; quick 3)
  --big-mtu N         the large MTU                               (default 65000)
  --tcp-buffer B      tunstack --tcp-buffer at MTU 1500           (default 1048576, its default)
  --big-tcp-buffer B  tunstack --tcp-buffer at the large MTU      (default 1048576)
  --scale-tcp-buffer B  tunstack --tcp-buffer in the scale tests  (default 4096)
  --tunstack-args "A" extra options for every tunstack echo, e.g. "--no-offload"
  --pin MODE          CPU placement: split (client on CPU 0; tunstack and the 1-thread
                      kernel server on CPU 1; the every-CPU kernel server not pinned),
                      same (everything on CPU 0) or none (scheduler's choice)
                                                                  (default split)
  --kernel-shape S    the every-CPU kernel server at MTU 1500 and the large MTU:
                      thread-per-connection or epoll (an epoll thread per CPU, SO_REUSEPORT)
                                                                  (default thread-per-connection)
  --only LIST         comma-separated parts to run: throughput (TCP, both MTUs),
                      latency (round trips and their floors, UDP rate, connection rate), scale
                      (scale and idle CPU)                        (default: all three)
  --no-kernel-scale   skip the scale test against the kernel
  --out DIR           where results go                            (default target/bench)
  --no-build          do not run cargo build --release --bins first
  -h, --help          show this help
EOF
}

die() {
    echo "$PROG: error: $*" >&2
    exit 1
}

say() {
    echo "$PROG: $*" >&2
}

need_value() {
    [[ $# -ge 2 && -n "$2" ]] || die "option $1 needs a value (see --help)"
}

need_integer() {
    [[ "$2" =~ ^[0-9]+$ ]] || die "$1 must be a whole number, not '$2'"
}

quick=false
runs="" conns="" idle_conns="" idle_secs=""
big_mtu=65000
tcp_buffer=1048576
big_tcp_buffer=1048576
scale_tcp_buffer=4096
kernel_scale=true
tunstack_args=()
pin="split"
kernel_shape="thread-per-connection"
only="throughput,latency,scale"
out="$REPO/target/bench"
build=true
original_args="$*"

while [[ $# -gt 0 ]]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --quick) quick=true; shift ;;
        --runs) need_value "$@"; runs="$2"; shift 2 ;;
        --conns) need_value "$@"; conns="$2"; shift 2 ;;
        --idle-conns) need_value "$@"; idle_conns="$2"; shift 2 ;;
        --idle-secs) need_value "$@"; idle_secs="$2"; shift 2 ;;
        --big-mtu) need_value "$@"; big_mtu="$2"; shift 2 ;;
        --tcp-buffer) need_value "$@"; tcp_buffer="$2"; shift 2 ;;
        --big-tcp-buffer) need_value "$@"; big_tcp_buffer="$2"; shift 2 ;;
        --scale-tcp-buffer) need_value "$@"; scale_tcp_buffer="$2"; shift 2 ;;
        --tunstack-args) need_value "$@"; read -ra tunstack_args <<<"$2"; shift 2 ;;
        --pin) need_value "$@"; pin="$2"; shift 2 ;;
        --kernel-shape) need_value "$@"; kernel_shape="$2"; shift 2 ;;
        --only) need_value "$@"; only="$2"; shift 2 ;;
        --no-kernel-scale) kernel_scale=false; shift ;;
        --out) need_value "$@"; out="$2"; shift 2 ;;
        --no-build) build=false; shift ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

# ---- sizes: full run or --quick ----
if $quick; then
    runs="${runs:-1}" conns="${conns:-1000}" idle_conns="${idle_conns:-1000}" idle_secs="${idle_secs:-3}"
    secs=1 rtt_count=1000 ping_count=200 udp_secs=1 rate_secs=1 scale_rtt_count=1000
else
    runs="${runs:-3}" conns="${conns:-100000}" idle_conns="${idle_conns:-10000}" idle_secs="${idle_secs:-10}"
    secs=3 rtt_count=10000 ping_count=1000 udp_secs=2 rate_secs=3 scale_rtt_count=5000
fi
need_integer --runs "$runs"
need_integer --conns "$conns"
need_integer --idle-conns "$idle_conns"
need_integer --idle-secs "$idle_secs"
need_integer --big-mtu "$big_mtu"
need_integer --tcp-buffer "$tcp_buffer"
need_integer --big-tcp-buffer "$big_tcp_buffer"
need_integer --scale-tcp-buffer "$scale_tcp_buffer"
((runs >= 1)) || die "--runs must be at least 1"
for part in ${only//,/ }; do
    [[ "$part" =~ ^(throughput|latency|scale)$ ]] || die "--only: unknown part '$part' (throughput, latency, scale)"
done

enabled() {
    [[ ",$only," == *",$1,"* ]]
}

# server_cpus: tunstack, the floors and the 1-thread kernel server; every_cpu: the kernel
# server at its best, which split placement leaves free to use every CPU.
case "$pin" in
    split) client_cpus=(taskset -c 0) server_cpus=(taskset -c 1) every_cpu=() ;;
    same) client_cpus=(taskset -c 0) server_cpus=(taskset -c 0) every_cpu=(taskset -c 0) ;;
    none) client_cpus=() server_cpus=() every_cpu=() ;;
    *) die "--pin must be split, same or none, not '$pin'" ;;
esac
case "$kernel_shape" in
    thread-per-connection)
        kernel_shape_args=(--thread-per-connection)
        kernel_shape_desc="kernel-echo --thread-per-connection"
        ;;
    epoll)
        kernel_shape_args=()
        kernel_shape_desc="kernel-echo, an epoll thread per CPU it may use (SO_REUSEPORT)"
        ;;
    *) die "--kernel-shape must be thread-per-connection or epoll, not '$kernel_shape'" ;;
esac
if [[ "$pin" != none ]]; then
    command -v taskset >/dev/null || die "'taskset' not found (apt-get install util-linux), or use --pin none"
    [[ "$pin" == same ]] || (($(nproc) >= 2)) || die "--pin split needs 2 CPUs; use --pin same or none"
fi
((big_mtu >= 1280 && big_mtu <= 65535)) || die "--big-mtu must be from 1280 to 65535"

# ---- prerequisites ----
[[ $EUID -eq 0 ]] || die "must run as root (namespaces, TUN, veth); try: sudo $0 $original_args"
for tool in ip ping timeout; do
    command -v "$tool" >/dev/null || die "'$tool' not found (apt-get install iproute2 iputils-ping coreutils)"
done
[[ -c /dev/net/tun ]] || die "/dev/net/tun does not exist: no TUN support here"
if $build; then
    command -v cargo >/dev/null || die "cargo not found; build first and pass --no-build"
    say "building (cargo build --release --bins)"
    (cd "$REPO" && cargo build --release --bins --quiet) || die "cargo build --release --bins failed"
fi
[[ -x "$TUNSTACK" && -x "$BENCH" ]] || die "missing $TUNSTACK or $BENCH (cargo build --release --bins)"
# Which tunstack is measured: the commit, whether src/ had uncommitted changes, the build time.
describe_build() {
    local head dirty=""
    head="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)" || head="unknown"
    if [[ -n "$(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]]; then
        dirty=" with uncommitted changes in src/"
    fi
    echo "HEAD $head$dirty; binary built $(date -u -r "$TUNSTACK" '+%Y-%m-%d %H:%M:%S UTC')"
}
build_description="$(describe_build)"

# One fd per connection, in the client and in the kernel echo server. Where the hard
# limit is low (no CAP_SYS_RESOURCE), the scale client spreads its connections over
# worker processes and the kernel side over several echo processes.
nofile="$(ulimit -Hn)"
[[ "$nofile" == unlimited ]] && nofile=1048576
ulimit -n "$nofile" || die "cannot raise the open file limit to $nofile (ulimit -n)"
((nofile >= 2000)) || die "the open file limit ($nofile) is too low; raise ulimit -Hn"

mkdir -p "$out/logs" || die "cannot create $out"
readonly results="$out/results.tsv" report="$out/report.md"
: >"$results"
failures=()

# ---- cleanup: every process and namespace made here ----
readonly ns_tun="tsb$$-tun" ns_client="tsb$$-client" ns_server="tsb$$-server" ns_floor="tsb$$-floor"
pids=()
namespaces=()

stop_pid() {
    local pid="$1" i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local ns
    trap - EXIT INT TERM
    stop_all
    for ns in "${namespaces[@]}"; do
        ip netns del "$ns" 2>/dev/null || true
    done
    namespaces=()
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

# ---- namespaces ----
readonly SOURCES_FIRST=10 SOURCES_LAST=30
readonly SOURCES="192.168.69.$SOURCES_FIRST-192.168.69.$SOURCES_LAST"

new_ns() {
    ip netns add "$1" || die "cannot create network namespace $1"
    namespaces+=("$1")
    ip -n "$1" link set lo up || die "cannot bring up lo in $1"
}

del_ns() {
    local ns="$1" kept=() n
    ip netns del "$ns" 2>/dev/null || true
    for n in "${namespaces[@]}"; do
        [[ "$n" == "$ns" ]] || kept+=("$n")
    done
    namespaces=("${kept[@]}")
}

# Client-side address aliases and sysctls, the same for both setups: extra source
# addresses (scale test, connection rate), and all ports usable as ephemeral ports.
client_side() {
    local ns="$1" dev="$2" i
    for ((i = SOURCES_FIRST; i <= SOURCES_LAST; i++)); do
        ip -n "$ns" addr add "192.168.69.$i/24" dev "$dev" || die "cannot add 192.168.69.$i to $dev in $ns"
    done
    ip netns exec "$ns" sysctl -q -w net.ipv4.ip_local_port_range="1024 65535" \
        || die "cannot set the port range in $ns"
}

# The tunstack setup: TUN tun0 with the host side in namespace $ns_tun.
setup_tun() {
    local mtu="$1"
    new_ns "$ns_tun"
    ip netns exec "$ns_tun" "$REPO/scripts/setup.sh" --tun tun0 --mtu "$mtu" --user root >/dev/null \
        || die "scripts/setup.sh failed in namespace $ns_tun"
    client_side "$ns_tun" tun0
}

# The kernel setup: veth0 (client, .1) in $ns_client, veth1 (server, .2) in $ns_server.
setup_veth() {
    local mtu="$1"
    new_ns "$ns_client"
    new_ns "$ns_server"
    ip -n "$ns_client" link add veth0 mtu "$mtu" type veth peer name veth1 netns "$ns_server" mtu "$mtu" \
        || die "cannot create the veth pair"
    ip -n "$ns_client" addr add 192.168.69.1/24 dev veth0 || die "cannot address veth0"
    ip -n "$ns_server" addr add 192.168.69.2/24 dev veth1 || die "cannot address veth1"
    ip -n "$ns_client" -6 addr add fd69::1/64 dev veth0 nodad 2>/dev/null || true
    ip -n "$ns_server" -6 addr add fd69::2/64 dev veth1 nodad 2>/dev/null || true
    ip -n "$ns_client" link set veth0 up || die "cannot bring up veth0"
    ip -n "$ns_server" link set veth1 up || die "cannot bring up veth1"
    client_side "$ns_client" veth0
}

# ---- servers ----
server_pid=""

# Waits for the echo server to answer from namespace $1; $2 is its log, $3 its port (7).
wait_ready() {
    if ! timeout 20 ip netns exec "$1" "$BENCH" wait --target "192.168.69.2:${3:-7}" --timeout 10; then
        tail -n 20 "$2" >&2 || true
        die "the echo server did not come up (log: $2)"
    fi
}

# start_tunstack LOG_NAME [tunstack echo options]
start_tunstack() {
    local log="$out/logs/$1.log"
    shift
    say "starting tunstack echo $* ${tunstack_args[*]+${tunstack_args[*]}}"
    RUST_LOG=warn "${server_cpus[@]}" ip netns exec "$ns_tun" "$TUNSTACK" echo --tun tun0 "$@" \
        ${tunstack_args[@]+"${tunstack_args[@]}"} >"$log" 2>&1 &
    server_pid=$!
    pids+=("$server_pid")
    wait_ready "$ns_tun" "$log"
}

# start_kernel_echo LOG_NAME [PROCESSES]: the kernel at its best on port 7, on every CPU
# (split placement does not pin it), in --kernel-shape. With PROCESSES (the scale test),
# epoll processes instead, an epoll thread per CPU each, all sharing the TCP port
# (SO_REUSEPORT) so together they hold more connections than one fd limit allows.
start_kernel_echo() {
    local log="$out/logs/kernel-echo-$1.log" processes="${2:-}" i shape=("${kernel_shape_args[@]}")
    [[ -z "$processes" ]] || shape=()
    ${every_cpu[@]+"${every_cpu[@]}"} ip netns exec "$ns_server" "$BENCH" kernel-echo --listen 0.0.0.0:7 \
        --listen "[$STACK_V6]:7" ${shape[@]+"${shape[@]}"} >"$log" 2>&1 &
    server_pid=$!
    pids+=("$server_pid")
    for ((i = 2; i <= ${processes:-1}; i++)); do
        ${every_cpu[@]+"${every_cpu[@]}"} ip netns exec "$ns_server" "$BENCH" kernel-echo --listen 0.0.0.0:7 \
            --tcp-only >>"$log" 2>&1 &
        pids+=($!)
    done
    wait_ready "$ns_client" "$log"
}

# start_kernel_one LOG_NAME: the single-threaded kernel server (one epoll thread, as
# tunstack's loop) on port $KERNEL_ONE_PORT, placed like tunstack.
start_kernel_one() {
    local log="$out/logs/kernel-echo-1-thread-$1.log"
    "${server_cpus[@]}" ip netns exec "$ns_server" "$BENCH" kernel-echo --threads 1 \
        --listen "0.0.0.0:$KERNEL_ONE_PORT" --listen "[$STACK_V6]:$KERNEL_ONE_PORT" >"$log" 2>&1 &
    server_pid=$!
    pids+=("$server_pid")
    wait_ready "$ns_client" "$log" "$KERNEL_ONE_PORT"
}

stop_all() {
    local pid
    for pid in "${pids[@]}"; do
        stop_pid "$pid"
    done
    pids=()
}

stop_server() {
    local pid="$1" kept=() p
    stop_pid "$pid"
    for p in "${pids[@]}"; do
        [[ "$p" == "$pid" ]] || kept+=("$p")
    done
    pids=("${kept[@]}")
}

# ---- measuring ----
# measure SIDE TIMEOUT_SECS [--tag TAG] SUBCOMMAND ARGS...: the client in the namespace of
# SIDE; a failure is reported and remembered, and the benchmark goes on.
measure() {
    local side="$1" limit="$2" ns
    shift 2
    case "$side" in
        tunstack) ns="$ns_tun" ;;
        kernel | kernel-1) ns="$ns_client" ;;
        *) ns="$ns_floor" ;; # bare, bare-spin, tunstack-spin: see floors()
    esac
    if ! timeout --kill-after=5 "$limit" "${client_cpus[@]}" ip netns exec "$ns" \
        "$BENCH" --results "$results" --side "$side" "$@"; then
        say "FAILED ($side): tunstack-bench $*"
        failures+=("$side: tunstack-bench $*")
    fi
}

readonly TARGET=192.168.69.2:7
readonly STACK_V6=fd69::2
readonly KERNEL_ONE_PORT=7001
notes=()

# target_of SIDE [v6]: the echo server address of SIDE (the 1-thread kernel server has
# its own port), over IPv4 or IPv6.
target_of() {
    local port=7
    [[ "$1" != kernel-1 ]] || port=$KERNEL_ONE_PORT
    if [[ "${2:-}" == v6 ]]; then
        echo "[$STACK_V6]:$port"
    else
        echo "192.168.69.2:$port"
    fi
}

# The three servers of an MTU section, by side, and their PIDs (for CPU per GB).
readonly SIDES=(tunstack kernel kernel-1)
declare -A side_pid=()

# One MTU: both setups up (tunstack, and the two kernel servers); throughput (and, at
# MTU 1500, round trips and rates) with runs alternating tunstack, kernel, kernel-1.
at_mtu() {
    local mtu="$1" buffer="$2" run side n
    say "== MTU $mtu (tunstack --tcp-buffer $buffer) =="
    setup_tun "$mtu"
    start_tunstack "tunstack-mtu$mtu" --mtu "$mtu" --tcp-buffer "$buffer"
    side_pid[tunstack]="$server_pid"
    setup_veth "$mtu"
    start_kernel_echo "mtu$mtu"
    side_pid[kernel]="$server_pid"
    start_kernel_one "mtu$mtu"
    side_pid[kernel-1]="$server_pid"
    if enabled throughput; then
        for ((run = 1; run <= runs; run++)); do
            for side in "${SIDES[@]}"; do
                for n in 1 4; do
                    measure "$side" $((secs + 40)) --tag "MTU $mtu" throughput --target "$(target_of "$side")" \
                        --conns "$n" --secs "$secs" --server-pid "${side_pid[$side]}"
                done
                # IPv6 takes another path out of smoltcp (see src/phy/coalesce.rs).
                if [[ "$mtu" == 1500 ]]; then
                    for n in 1 4; do
                        measure "$side" $((secs + 40)) --tag "IPv6, MTU $mtu" throughput \
                            --target "$(target_of "$side" v6)" --conns "$n" --secs "$secs" \
                            --server-pid "${side_pid[$side]}"
                    done
                fi
            done
        done
    fi
    if [[ "$mtu" == 1500 ]] && enabled latency; then
        latency_and_rates
    fi
    for side in "${SIDES[@]}"; do
        stop_server "${side_pid[$side]}"
    done
    del_ns "$ns_tun"
    del_ns "$ns_client"
    del_ns "$ns_server"
    notes+=("MTU $mtu: tunstack echo --mtu $mtu --tcp-buffer $buffer; TUN and veth MTU $mtu")
    notes+=("MTU $mtu: kernel, every CPU: $kernel_shape_desc, ${every_cpu[*]:-not pinned}; kernel, 1 thread: kernel-echo --threads 1, ${server_cpus[*]:-not pinned}; the ratio is to the better of the two (bold)")
}

# Round trips, UDP rates and connection rate (MTU 1500), runs alternating; each run
# also measures the floors.
latency_and_rates() {
    local run side size ping_limit target
    ping_limit=$((ping_count / 100 + 30))
    say "== round trips, UDP echo rate, connection rate (MTU 1500) =="
    setup_floor
    for ((run = 1; run <= runs; run++)); do
        for side in "${SIDES[@]}"; do
            target="$(target_of "$side")"
            measure "$side" 60 tcp-rtt --target "$target" --count "$rtt_count"
            measure "$side" 60 udp-rtt --target "$target" --size 64 --count "$rtt_count"
            # The kernel answers ping itself, whichever echo server runs: measured once.
            if [[ "$side" != kernel-1 ]]; then
                measure "$side" "$ping_limit" ping --target 192.168.69.2 --count "$ping_count" --interval 0.002
            fi
            for size in 64 1472; do
                measure "$side" $((udp_secs + 20)) udp-rate --target "$target" --size "$size" \
                    --window 64 --secs "$udp_secs"
            done
            measure "$side" $((rate_secs + 30)) conn-rate --target "$target" --sources "$SOURCES" \
                --secs "$rate_secs"
        done
        floors "$ping_limit"
    done
    del_ns "$ns_floor"
    notes+=("floors: on a second TUN (MTU 1500, namespace of its own), tunstack-bench tun-loop (blocking reads, then --spin) and tunstack echo --busy-poll-us 1000000, each started for its own measurements")
}

# The floor setup: a second TUN, tun0 in namespace $ns_floor, with the same addresses.
setup_floor() {
    new_ns "$ns_floor"
    ip netns exec "$ns_floor" "$REPO/scripts/setup.sh" --tun tun0 --mtu 1500 --user root >/dev/null \
        || die "scripts/setup.sh failed in namespace $ns_floor"
}

# start_floor SIDE: bare (a bare TUN loop, blocking reads), bare-spin (the same, never
# sleeping) or tunstack-spin (tunstack echo, never sleeping) on the floor TUN.
start_floor() {
    local side="$1" log="$out/logs/floor-$1.log"
    case "$side" in
        bare) "${server_cpus[@]}" ip netns exec "$ns_floor" "$BENCH" tun-loop --tun tun0 >"$log" 2>&1 & ;;
        bare-spin)
            "${server_cpus[@]}" ip netns exec "$ns_floor" "$BENCH" tun-loop --tun tun0 --spin >"$log" 2>&1 &
            ;;
        tunstack-spin)
            RUST_LOG=warn "${server_cpus[@]}" ip netns exec "$ns_floor" "$TUNSTACK" echo --tun tun0 \
                --busy-poll-us 1000000 ${tunstack_args[@]+"${tunstack_args[@]}"} >"$log" 2>&1 &
            ;;
    esac
    server_pid=$!
    pids+=("$server_pid")
    if ! ip netns exec "$ns_floor" ping -n -q -c 1 -w 10 192.168.69.2 >/dev/null; then
        tail -n 20 "$log" >&2 || true
        die "the $side floor did not answer ping (log: $log)"
    fi
}

# floors PING_LIMIT: the round trips through the bare TUN loop and through tunstack
# spinning: what the TUN alone costs, and what tunstack costs when it never sleeps.
floors() {
    local ping_limit="$1" side
    for side in bare bare-spin tunstack-spin; do
        start_floor "$side"
        if [[ "$side" == tunstack-spin ]]; then
            measure "$side" 60 tcp-rtt --target "$TARGET" --count "$rtt_count"
        fi
        measure "$side" 60 udp-rtt --target "$TARGET" --size 64 --count "$rtt_count"
        measure "$side" "$ping_limit" ping --target 192.168.69.2 --count "$ping_count" --interval 0.002
        stop_server "$server_pid"
    done
}

# The numbers of open connections, below $conns, at which the scale test also measures the
# round trip (for the plot): conns/100, conns/30, conns/10, conns/3, without zeros and
# repeats, comma-separated; empty if none is left.
rtt_steps() {
    local steps=() divisor step last=0
    for divisor in 100 30 10 3; do
        step=$((conns / divisor))
        if ((step > last)); then
            steps+=("$step")
            last=$step
        fi
    done
    local IFS=,
    echo "${steps[*]+${steps[*]}}"
}

# Scale tests against tunstack (fresh server each), then optionally against the kernel.
scale_tests() {
    local phase_timeout=300 limit run steps step_args=()
    limit=$((2 * phase_timeout + idle_secs + 120))
    steps="$(rtt_steps)"
    [[ -z "$steps" ]] || step_args=(--rtt-steps "$steps")
    say "== scale: $conns connections; idle CPU with $idle_conns (tunstack --tcp-buffer $scale_tcp_buffer) =="
    setup_tun 1500
    if $kernel_scale; then
        # Connections spread over the processes by hash: leave each a wide margin.
        setup_veth 1500
        start_kernel_echo scale $(((conns + nofile / 2 - 1) / (nofile / 2)))
    fi
    for ((run = 1; run <= runs; run++)); do
        start_tunstack "tunstack-scale-$run" --tcp-buffer "$scale_tcp_buffer"
        measure tunstack "$limit" scale --target "$TARGET" --sources "$SOURCES" --conns "$conns" \
            --rtt-count "$scale_rtt_count" --server-pid "$server_pid" --phase-timeout "$phase_timeout" \
            ${step_args[@]+"${step_args[@]}"}
        stop_server "$server_pid"
        if $kernel_scale; then
            measure kernel "$limit" scale --target "$TARGET" --sources "$SOURCES" --conns "$conns" \
                --rtt-count "$scale_rtt_count" --phase-timeout "$phase_timeout" \
                ${step_args[@]+"${step_args[@]}"}
        fi
    done
    start_tunstack "tunstack-idle" --tcp-buffer "$scale_tcp_buffer"
    measure tunstack "$limit" --tag "idle test" scale --target "$TARGET" --sources "$SOURCES" \
        --conns "$idle_conns" --rtt-count "$scale_rtt_count" --server-pid "$server_pid" \
        --idle-secs "$idle_secs" --phase-timeout "$phase_timeout"
    stop_all
    del_ns "$ns_tun"
    del_ns "$ns_client"
    del_ns "$ns_server"
    notes+=("scale: tunstack echo --tcp-buffer $scale_tcp_buffer (MTU 1500), a fresh server per run; kernel: kernel-echo processes sharing the port, an epoll thread per CPU each${every_cpu[*]:+ (${every_cpu[*]})}: $(((conns + nofile / 2 - 1) / (nofile / 2))) (fd limit $nofile); 64 connects in flight; the idle test runs once")
    if [[ -n "$steps" ]]; then
        notes+=("scale: the round trip is also measured on the way, with $steps connections open (plotted)")
    fi
}

# The plot of the scale test's round trips against open connections, next to the report,
# and a line about it in the report; a failure is remembered like a measurement's.
plot_results() {
    local plot="$out/rtt-vs-conns.svg"
    echo
    if "$BENCH" plot --results "$results" --out "$plot"; then
        echo "1-byte TCP round trip against open connections (scale test, medians): $plot"
        echo
        echo "![1-byte TCP round trip vs open connections](rtt-vs-conns.svg)"
    else
        say "FAILED: tunstack-bench plot --results $results --out $plot"
        failures+=("plot: tunstack-bench plot --results $results --out $plot")
    fi
}

started=$SECONDS
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
if enabled throughput || enabled latency; then
    at_mtu 1500 "$tcp_buffer"
fi
if enabled throughput; then
    at_mtu "$big_mtu" "$big_tcp_buffer"
fi
if enabled scale; then
    scale_tests
fi
elapsed=$((SECONDS - started))

# ---- the report ----
{
    echo "# tunstack benchmark"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); took ${elapsed} s"
    echo "- load average (1, 5, 15 min) before: $load_before; after: $(cut -d' ' -f1-3 /proc/loadavg)" \
        "(anything else running on the machine skews these numbers)"
    echo "- machine: $(nproc) CPU ($(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)), kernel $(uname -r)"
    echo "- command: scripts/$PROG $original_args"
    echo "- tunstack: $build_description"
    echo "- medians of $runs run(s) unless noted; tunstack runs with RUST_LOG=warn${tunstack_args[*]+ and ${tunstack_args[*]}}; CPU placement: --pin $pin"
    for note in "${notes[@]}"; do
        echo "- $note"
    done
    echo "- round trips, UDP echo rate and connection rate at MTU 1500; UDP rate keeps 64 datagrams in flight;"
    echo "  connection rate and scale tests connect from $SOURCES in turn"
    echo
    "$BENCH" report "$results"
    if enabled scale; then
        plot_results
    fi
    if ((${#failures[@]} > 0)); then
        echo
        echo "Failed measurements:"
        for failure in "${failures[@]}"; do
            echo "- $failure"
        done
    fi
} >"$report" || die "cannot write the report"
echo
cat "$report"
say "report written to $report (raw values: $results)"
((${#failures[@]} == 0)) || exit 1
