//! Command-line interface (clap): subcommands, flags and their defaults.

use clap::{Args, Parser, Subcommand};
use smoltcp::wire::IpCidr;
use std::fmt::Display;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::str::FromStr;
use tunstack::config::{
    self, MAX_ADDRESSES, MAX_MTU, MAX_TCP_BUFFER, MIN_MTU_IPV4, MIN_MTU_IPV6, MIN_TCP_BUFFER,
    MIN_TCP_MEMORY,
};

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
    #[arg(long, default_value = "tun0", value_name = "NAME", value_parser = parse_tun_name)]
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
    /// printing answers this long after stdin ends. 0.001 to 86400 (a day).
    #[arg(short = 'w', long, default_value_t = 10.0, value_name = "SECS",
          value_parser = parse_seconds, allow_hyphen_values = true)]
    pub wait: f64,
    /// Host-side address to connect to, e.g. 192.168.69.1 or fd69::1; it must be on one
    /// of the stack's subnets (--addr), else the connect fails with "network unreachable".
    #[arg(value_parser = parse_host)]
    pub host: IpAddr,
    /// Port to connect to, 1 to 65535.
    #[arg(value_parser = parse_port, allow_negative_numbers = true)]
    pub port: u16,
}

/// Options shared by every command that runs a stack.
#[derive(Debug, Args)]
pub struct StackArgs {
    /// TUN device to attach to (made by scripts/setup.sh).
    #[arg(long, default_value = "tun0", value_name = "NAME", value_parser = parse_tun_name)]
    pub tun: String,
    /// The stack's own address with prefix; repeat for more, up to 8 (default:
    /// 192.168.69.2/24 and fd69::2/64). Unicast, not loopback, prefix /1 or longer.
    #[arg(long = "addr", value_name = "IP/PREFIX", value_parser = parse_cidr)]
    pub addrs: Vec<IpCidr>,
    /// Link MTU, 68 to 65535 (default: the TUN device's MTU). IPv6 needs 1280: below it
    /// the default IPv6 address is left out (with a warning) and an IPv6 --addr is refused.
    #[arg(long, value_name = "BYTES", value_parser = parse_mtu, allow_negative_numbers = true)]
    pub mtu: Option<usize>,
    /// Open the TUN without offloads: one MTU-sized packet per read and write. By default
    /// TCP segments up to 64 KiB cross the TUN whole (IFF_VNET_HDR + TSO), which is several
    /// times faster; fault injection always turns offloads off (it works per packet).
    #[arg(long)]
    pub no_offload: bool,
    /// Largest receive and send buffer of a TCP connection, in bytes: 4096 (4 KiB) to
    /// 1073741824 (1 GiB). A connection gets this while few are open, less when many share
    /// --tcp-memory (never under 4 KiB).
    #[arg(long, default_value_t = 1024 * 1024, value_name = "BYTES",
          value_parser = parse_tcp_buffer, allow_negative_numbers = true)]
    pub tcp_buffer: usize,
    /// Buffer memory all TCP connections share, in bytes (at least 8192): a new connection
    /// gets min(--tcp-buffer, this / 2 / connections open).
    #[arg(long, default_value_t = 256 * 1024 * 1024, value_name = "BYTES",
          value_parser = parse_tcp_memory, allow_negative_numbers = true)]
    pub tcp_memory: usize,
    /// Abort a connection whose peer stays silent this long while a SYN, data or FIN of
    /// ours awaits its answer (idle connections never time out). 0.001 to 86400 (a day).
    #[arg(long, default_value_t = 60.0, value_name = "SECS",
          value_parser = parse_seconds, allow_hyphen_values = true)]
    pub tcp_timeout: f64,
    /// After traffic, keep polling the TUN without sleeping for this many microseconds
    /// before blocking: lower latency while packets flow, no cost when idle. 0 = off; at
    /// most 1000000 (a second).
    #[arg(long, default_value_t = 50, value_name = "MICROS",
          value_parser = parse_micros, allow_negative_numbers = true)]
    pub busy_poll_us: u64,
    /// Traffic that comes back after idle spells at a steady period (ping, heartbeats) is
    /// learned, and the TUN polled from this many microseconds before the next packet is
    /// due until as long after: no wake-up to pay when it comes. 0 = off; at most 1000000.
    #[arg(long, default_value_t = 150, value_name = "MICROS",
          value_parser = parse_micros, allow_negative_numbers = true)]
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
    /// Seed for fault injection, so a run can be repeated exactly (0 to 2^64-1).
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = parse_seed, allow_negative_numbers = true)]
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
    /// Port of the TCP and UDP echo servers, 1 to 65535.
    #[arg(long, default_value_t = 7, value_name = "N",
          value_parser = parse_port, allow_negative_numbers = true)]
    pub port: u16,
    /// Established connections that may wait for accept(), 1 to 65535; further SYNs are
    /// dropped.
    #[arg(long, default_value_t = 128, value_name = "N",
          value_parser = parse_backlog, allow_negative_numbers = true)]
    pub backlog: usize,
}

impl StackArgs {
    /// The stack's addresses on a link of `mtu` bytes (`origin` says where that MTU comes
    /// from, for the messages), and a warning when the default IPv6 address had to be left
    /// out because the link is too small for IPv6. An IPv6 address asked for with --addr
    /// on such a link is an error instead: nothing the user asked for is dropped silently.
    pub fn addresses_for(
        &self,
        mtu: usize,
        origin: &str,
    ) -> Result<(Vec<IpCidr>, Option<String>), String> {
        if self.addrs.len() > MAX_ADDRESSES {
            return Err(format!(
                "{} addresses given with --addr: the stack takes 1 to {MAX_ADDRESSES}",
                self.addrs.len()
            ));
        }
        let is_v6 = |cidr: &&IpCidr| matches!(cidr, IpCidr::Ipv6(_));
        if mtu >= MIN_MTU_IPV6 {
            let addresses = if self.addrs.is_empty() {
                config::StackConfig::default().addresses
            } else {
                self.addrs.clone()
            };
            return Ok((addresses, None));
        }
        if let Some(v6) = self.addrs.iter().find(is_v6) {
            return Err(format!(
                "{origin} is below {MIN_MTU_IPV6}, the minimum for IPv6 (RFC 8200 §5), so --addr \
                 {v6} cannot work: leave out the IPv6 --addr or use --mtu {MIN_MTU_IPV6} or more"
            ));
        }
        if !self.addrs.is_empty() {
            return Ok((self.addrs.clone(), None));
        }
        let mut addresses = config::StackConfig::default().addresses;
        let dropped: Vec<String> = addresses
            .iter()
            .filter(is_v6)
            .map(|c| c.to_string())
            .collect();
        addresses.retain(|cidr| !is_v6(&cidr));
        let warning = format!(
            "{origin} is below {MIN_MTU_IPV6}, the minimum for IPv6 (RFC 8200 §5): IPv6 is off \
             ({} left out); use --mtu {MIN_MTU_IPV6} or more for IPv6",
            dropped.join(", ")
        );
        Ok((addresses, Some(warning)))
    }
}

/// A number within `range`; the message names the range and why it is what it is.
fn number_in<T>(text: &str, range: RangeInclusive<T>, why: &str) -> Result<T, String>
where
    T: FromStr + PartialOrd + Display,
{
    let (low, high) = (range.start(), range.end());
    match text.trim().parse::<T>() {
        Ok(value) if range.contains(&value) => Ok(value),
        Ok(_) => Err(format!("{text} is not in {low}..={high}: {why}")),
        Err(_) => Err(format!("{text:?} is not a number in {low}..={high}: {why}")),
    }
}

fn parse_mtu(text: &str) -> Result<usize, String> {
    number_in(
        text,
        MIN_MTU_IPV4..=MAX_MTU,
        "IPv4 needs at least 68 bytes (RFC 791), IPv6 1280 (RFC 8200 §5; below it IPv6 is off), \
         and a TUN carries at most 65535",
    )
}

fn parse_tcp_buffer(text: &str) -> Result<usize, String> {
    number_in(
        text,
        MIN_TCP_BUFFER..=MAX_TCP_BUFFER,
        "at least 4 KiB, a few segments (less makes a transfer crawl), at most 1 GiB, TCP's \
         largest window",
    )
}

fn parse_tcp_memory(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(bytes) if bytes >= MIN_TCP_MEMORY => Ok(bytes),
        _ => Err(format!(
            "{text} is not a number of bytes of at least {MIN_TCP_MEMORY}: one connection's \
             smallest buffers (4 KiB each way)"
        )),
    }
}

fn parse_seed(text: &str) -> Result<u64, String> {
    text.trim().parse().map_err(|_| {
        format!(
            "{text} is not a seed: a whole number from 0 to {}",
            u64::MAX
        )
    })
}

fn parse_micros(text: &str) -> Result<u64, String> {
    number_in(text, 0..=1_000_000, "0 is off, 1000000 is a second")
}

fn parse_port(text: &str) -> Result<u16, String> {
    number_in(
        text,
        1..=65535,
        "port 0 is not a port anyone can connect to",
    )
}

fn parse_backlog(text: &str) -> Result<usize, String> {
    number_in(
        text,
        1..=65535,
        "at least one connection must be able to wait for accept()",
    )
}

/// Seconds from 1 ms to a day: finite, positive (no NaN, inf or negative time).
fn parse_seconds(text: &str) -> Result<f64, String> {
    const RANGE: RangeInclusive<f64> = 0.001..=86400.0;
    match text.trim().parse::<f64>() {
        Ok(secs) if RANGE.contains(&secs) => Ok(secs),
        _ => Err(format!(
            "{text} is not a number of seconds in 0.001..=86400 (1 ms to a day)"
        )),
    }
}

/// A network interface name the kernel takes: 1 to 15 bytes, no '/', ':' or whitespace.
fn parse_tun_name(text: &str) -> Result<String, String> {
    let bad = text.is_empty()
        || text.len() > 15
        || text == "."
        || text == ".."
        || text
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if bad {
        return Err(format!(
            "{text:?} is not a network interface name: 1 to 15 characters without '/', ':' or \
             spaces, like tun0"
        ));
    }
    Ok(text.to_string())
}

/// Parses `192.168.69.2/24` or `fd69::2/64`, and checks that it can be the stack's own.
fn parse_cidr(text: &str) -> Result<IpCidr, String> {
    let cidr: IpCidr = text.parse().map_err(|()| {
        format!("{text:?} is not an address with a prefix, like 192.168.69.2/24 or fd69::2/64")
    })?;
    config::check_address(&cidr).map_err(|err| match err {
        tunstack::Error::InvalidConfig(message) => message,
        other => other.to_string(),
    })?;
    Ok(cidr)
}

/// A host to connect to: any address but the unspecified one and multicast groups.
fn parse_host(text: &str) -> Result<IpAddr, String> {
    let host: IpAddr = text
        .parse()
        .map_err(|_| format!("{text:?} is not an IP address, like 192.168.69.1 or fd69::1"))?;
    if host.is_unspecified() || host.is_multicast() {
        return Err(format!(
            "{host} is not a host to connect to (unspecified or multicast)"
        ));
    }
    Ok(host)
}
