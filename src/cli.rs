//! Command-line interface (clap): subcommands, flags and their defaults.

use clap::{Args, Parser, Subcommand};
use smoltcp::wire::IpCidr;

/// A userspace TCP/UDP/ICMP stack behind a Linux TUN device.
///
/// Run `sudo scripts/setup.sh` once to create the TUN device, then `tunstack echo`.
/// Logging follows RUST_LOG (default: info); RUST_LOG=tunstack=trace shows every packet.
#[derive(Debug, Parser)]
#[command(name = "tunstack", version, about, long_about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run TCP and UDP echo servers (RFC 862) on the stack; ping is answered too.
    Echo(EchoArgs),
    /// An nc-like client inside the stack: stdin to the connection, the connection to
    /// stdout. End of stdin sends FIN; exit status 0 when the peer closes cleanly, 1 on
    /// refused / reset / unreachable / timeout.
    Connect(ConnectArgs),
    /// Show the sockets of the stack running on a TUN (like `ss -tuan`): the listener, each
    /// data socket with its state and socket pair, queues, and the stack's counters.
    Ss(SsArgs),
}

/// Options of `tunstack ss`.
#[derive(Debug, Args)]
pub struct SsArgs {
    /// TUN device of the running stack to ask.
    #[arg(long, default_value = "tun0")]
    pub tun: String,
}

/// Options of `tunstack connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Stack options.
    #[command(flatten)]
    pub stack: StackArgs,
    /// Use UDP: each chunk of stdin is one datagram (sendto), each answer goes to stdout.
    #[arg(short = 'u', long)]
    pub udp: bool,
    /// TCP: give up when the peer is silent this long (connect or data). UDP: keep
    /// printing answers this long after stdin ends.
    #[arg(short = 'w', long, default_value_t = 10.0, value_name = "SECS")]
    pub wait: f64,
    /// Host-side address to connect to, e.g. 192.168.69.1 or fd69::1.
    pub host: std::net::IpAddr,
    /// Port to connect to.
    pub port: u16,
}

/// Options shared by every command that runs a stack.
#[derive(Debug, Args)]
pub struct StackArgs {
    /// TUN device to attach to (made by scripts/setup.sh).
    #[arg(long, default_value = "tun0")]
    pub tun: String,
    /// The stack's own address with prefix; repeat for more (default: 192.168.69.2/24 and fd69::2/64).
    #[arg(long = "addr", value_name = "IP/PREFIX", value_parser = parse_cidr)]
    pub addrs: Vec<IpCidr>,
    /// Link MTU (default: the TUN device's MTU).
    #[arg(long)]
    pub mtu: Option<usize>,
    /// Open the TUN without offloads: one MTU-sized packet per read and write. By default
    /// TCP segments up to 64 KiB cross the TUN whole (IFF_VNET_HDR + TSO), which is several
    /// times faster; fault injection always turns offloads off (it works per packet).
    #[arg(long)]
    pub no_offload: bool,
    /// Largest receive and send buffer of a TCP connection, in bytes. A connection gets
    /// this while few are open, less when many share --tcp-memory (never under 4 KiB).
    #[arg(long, default_value_t = 1024 * 1024, value_name = "BYTES")]
    pub tcp_buffer: usize,
    /// Buffer memory all TCP connections share, in bytes: a new connection gets
    /// min(--tcp-buffer, this / 2 / connections open).
    #[arg(long, default_value_t = 256 * 1024 * 1024, value_name = "BYTES")]
    pub tcp_memory: usize,
    /// Abort a connection whose peer stays silent this long while a SYN, data or FIN of
    /// ours awaits its answer (idle connections never time out).
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub tcp_timeout: f64,
    /// After traffic, keep polling the TUN without sleeping for this many microseconds
    /// before blocking: lower latency while packets flow, no cost when idle. 0 = off.
    #[arg(long, default_value_t = 50, value_name = "MICROS")]
    pub busy_poll_us: u64,
    /// Traffic that comes back after idle spells at a steady period (ping, heartbeats) is
    /// learned, and the TUN polled from this many microseconds before the next packet is
    /// due until as long after: no wake-up to pay when it comes. 0 = off.
    #[arg(long, default_value_t = 150, value_name = "MICROS")]
    pub rhythm_lead_us: u64,
    /// Fault injection: drop this percentage of packets each way.
    #[arg(long = "drop", default_value_t = 0, value_name = "PCT", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub drop_pct: u8,
    /// Fault injection: flip one bit in this percentage of packets each way.
    #[arg(long = "corrupt", default_value_t = 0, value_name = "PCT", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub corrupt_pct: u8,
    /// Fault injection: deliver this percentage of inbound packets twice.
    #[arg(long = "duplicate", default_value_t = 0, value_name = "PCT", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub duplicate_pct: u8,
    /// ICMP errors (port unreachable, parameter problem) sent per second to all
    /// destinations together, in bursts of up to --icmp-msgs-burst (Linux's
    /// net.ipv4.icmp_msgs_per_sec). 0 = no overall limit. Echo replies are never limited.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub icmp_msgs_per_sec: u32,
    /// The overall ICMP error burst (Linux's net.ipv4.icmp_msgs_burst).
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub icmp_msgs_burst: u32,
    /// Per destination, one ICMP error per this many milliseconds, up to 6 at once
    /// (Linux's net.ipv4.icmp_ratelimit). 0 = no per-destination limit.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub icmp_ratelimit_ms: u64,
    /// Answer pings sent to a broadcast or multicast address (Linux ignores them by
    /// default: net.ipv4.icmp_echo_ignore_broadcasts = 1).
    #[arg(long)]
    pub echo_broadcast: bool,
    /// Seed for fault injection, so a run can be repeated exactly.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print one line per packet in and out, with the stack's verdict on each inbound one
    /// (also on with RUST_LOG=tunstack::trace=trace).
    #[arg(long)]
    pub trace: bool,
    /// Write every packet in and out to this pcap file (raw IP) for tcpdump -r / Wireshark;
    /// a FIFO works for live viewing (`mkfifo f; wireshark -k -i f`).
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<std::path::PathBuf>,
}

/// Options of `tunstack echo`.
#[derive(Debug, Args)]
pub struct EchoArgs {
    /// Stack options.
    #[command(flatten)]
    pub stack: StackArgs,
    /// Port of the TCP and UDP echo servers.
    #[arg(long, default_value_t = 7)]
    pub port: u16,
    /// Established connections that may wait for accept(); further SYNs are dropped.
    #[arg(long, default_value_t = 128)]
    pub backlog: usize,
}

/// Parses `192.168.69.2/24` or `fd69::2/64`.
fn parse_cidr(text: &str) -> Result<IpCidr, String> {
    text.parse().map_err(|()| {
        format!("{text:?} is not an address with a prefix, like 192.168.69.2/24 or fd69::2/64")
    })
}
