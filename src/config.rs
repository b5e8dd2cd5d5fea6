//! Stack configuration: addresses, per-socket buffer sizes, queue limits and timeouts,
//! and the limits each must keep ([`StackConfig::validate`], in `config/validate.rs`).
//! Defaults match the README, the scripts and the tests.

mod validate;

pub use validate::{check_address, check_mtu};

use smoltcp::time::Duration;
use smoltcp::wire::{IpAddress, IpCidr, Ipv4Address, Ipv6Address};
use std::ops::RangeInclusive;

/// The stack's IPv4 address by default.
pub const DEFAULT_ADDR4: IpCidr =
    IpCidr::new(IpAddress::Ipv4(Ipv4Address::new(192, 168, 69, 2)), 24);
/// The stack's IPv6 address by default.
pub const DEFAULT_ADDR6: IpCidr = IpCidr::new(
    IpAddress::Ipv6(Ipv6Address::new(0xfd69, 0, 0, 0, 0, 0, 0, 2)),
    64,
);

/// The smallest buffer a TCP socket gets however many are open, and the smallest
/// `tcp_buffer`: below a few segments' worth a transfer crawls (a 1 MiB echo over the TUN
/// moved 2880 bytes in 60 s with a 10-byte buffer; it took 0.16 s at 536, 0.04 s at 4 KiB).
pub const MIN_TCP_BUFFER: usize = 4 * 1024;
/// The largest `tcp_buffer`: TCP's largest window (scale 14, RFC 7323 §2.3), and what
/// smoltcp takes (`socket/tcp.rs:584` panics above it).
pub const MAX_TCP_BUFFER: usize = 1 << 30;
/// The smallest `tcp_memory`: one connection's smallest buffers, both ways.
pub const MIN_TCP_MEMORY: usize = 2 * MIN_TCP_BUFFER;
/// The smallest MTU: every IPv4 host must pass a 68-byte datagram (RFC 791, "Fragmentation").
/// Below it smoltcp's own arithmetic underflows (no room for headers).
pub const MIN_MTU_IPV4: usize = 68;
/// The smallest MTU of a link that carries IPv6 (RFC 8200 §5).
pub const MIN_MTU_IPV6: usize = 1280;
/// The largest MTU: an IP packet's 16-bit total length, also a Linux TUN's ceiling.
pub const MAX_MTU: usize = 65535;
/// Addresses the stack can hold (smoltcp's `iface-max-addr-count-8`).
pub const MAX_ADDRESSES: usize = 8;
/// The shortest `tcp_timeout` and `reassembly_timeout`.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(1);
/// The longest `tcp_timeout` and `reassembly_timeout`: a day (a peer silent that long is
/// gone; longer ones would only risk overflowing the clock arithmetic).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// How a [`Stack`](crate::Stack) is set up. [`StackConfig::validate`] says whether the
/// stack can work with it ([`Stack::try_new`](crate::Stack::try_new) checks it).
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// The stack's own addresses with their prefixes: 1 to 8 unicast addresses, none
    /// loopback or a subnet's broadcast address, prefixes /1 and up.
    pub addresses: Vec<IpCidr>,
    /// Maximum IP packet size on the link: the device's MTU, 68 to 65535, at least 1280
    /// with an IPv6 address.
    pub mtu: usize,
    /// Largest receive (and send) buffer of a TCP socket, in bytes. A new socket gets
    /// `min(tcp_buffer, tcp_memory / 2 / sockets open)`, at least [`MIN_TCP_BUFFER`]: big
    /// windows while few connections are open, small ones when there are many.
    /// [`MIN_TCP_BUFFER`] to [`MAX_TCP_BUFFER`].
    pub tcp_buffer: usize,
    /// Buffer memory the TCP sockets share (see `tcp_buffer`), in bytes; at least
    /// [`MIN_TCP_MEMORY`].
    pub tcp_memory: usize,
    /// Payload buffer of each UDP socket, in bytes (also its send buffer); not 0.
    pub udp_buffer: usize,
    /// Datagrams a UDP socket queues per direction; not 0.
    pub udp_packets: usize,
    /// Ports `connect()` and `bind(port 0)` pick from (not empty, not port 0).
    pub ephemeral_ports: RangeInclusive<u16>,
    /// Half-open connections (SYN queue) a listener keeps as sockets. When full, SYNs are
    /// answered with SYN cookies, so a SYN flood cannot lock real clients out. With
    /// `syn_cookies` off, the SYN queue holds at least the listener's backlog, and when full
    /// its oldest half-open connection is evicted instead.
    pub syn_backlog: usize,
    /// Answer SYNs beyond a full SYN queue with SYN cookies (RFC 4987 §3.6): no socket until
    /// the client's ACK returns the cookie. The connection keeps the client's window scale
    /// and SACK; its MSS is rounded down to one of eight values (536 ... 1460, 8960).
    pub syn_cookies: bool,
    /// A connection whose peer is silent this long while our SYN, data or FIN awaits its
    /// answer is aborted (RST, `TimedOut`). Idle connections never time out.
    /// [`MIN_TIMEOUT`] to [`MAX_TIMEOUT`].
    pub tcp_timeout: Duration,
    /// An incomplete IP fragment train is dropped after this long ([`MIN_TIMEOUT`] to
    /// [`MAX_TIMEOUT`]).
    pub reassembly_timeout: Duration,
    /// Seed for ISNs, port choice and the SYN-cookie key; fixed in tests for reproducible
    /// runs, random in the binary (a known seed lets anyone forge SYN cookies).
    pub random_seed: u64,
    /// ICMP errors (port unreachable, parameter problem) the stack sends per second to all
    /// destinations together: a token bucket refilled at this rate, holding at most
    /// `icmp_msgs_burst` (Linux's `net.ipv4.icmp_msgs_per_sec`, 1000). 0: no overall limit.
    /// Echo replies are never limited.
    pub icmp_msgs_per_sec: u32,
    /// The overall bucket's size (Linux's `net.ipv4.icmp_msgs_burst`, 50).
    pub icmp_msgs_burst: u32,
    /// Per destination: one ICMP error per this interval, up to 6 in a burst (Linux's
    /// `net.ipv4.icmp_ratelimit`, 1 s, and its burst factor). Zero: no per-destination limit.
    pub icmp_ratelimit: Duration,
    /// Answer echo requests sent to a broadcast or multicast address. Off by default, like
    /// Linux (`net.ipv4.icmp_echo_ignore_broadcasts = 1`): one ping would get an answer from
    /// every host of the subnet (a smurf amplifier).
    pub echo_broadcast: bool,
}

impl Default for StackConfig {
    fn default() -> Self {
        StackConfig {
            addresses: vec![DEFAULT_ADDR4, DEFAULT_ADDR6],
            mtu: 1500,
            tcp_buffer: 1024 * 1024,
            tcp_memory: 256 * 1024 * 1024,
            udp_buffer: 256 * 1024,
            udp_packets: 256,
            ephemeral_ports: 49152..=65535,
            syn_backlog: 256,
            syn_cookies: true,
            tcp_timeout: Duration::from_secs(60),
            reassembly_timeout: Duration::from_secs(10),
            random_seed: 0x7475_6e73_7461_636b,
            icmp_msgs_per_sec: 1000,
            icmp_msgs_burst: 50,
            icmp_ratelimit: Duration::from_secs(1),
            echo_broadcast: false,
        }
    }
}
