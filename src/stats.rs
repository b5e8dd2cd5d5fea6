//! Stack counters: packets and bytes each way, and every drop by its reason. Plain integers,
//! bumped on the hot path, copied out for `tunstack ss` and the tests.

use std::fmt;

/// Why the stack dropped an inbound packet without handing it to a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DropReason {
    /// etherparse could not parse the headers.
    Malformed,
    /// IP header or transport checksum wrong.
    BadChecksum,
    /// Destination is not one of the stack's addresses.
    NotForUs,
    /// Source is unspecified, multicast, broadcast or one of ours.
    BadSource,
    /// The listener's accept queue is full.
    BacklogFull,
    /// A half-open connection evicted to make room in a full SYN queue (only with SYN
    /// cookies off: see [`StackConfig::syn_cookies`](crate::StackConfig::syn_cookies)).
    SynQueueEvicted,
    /// An ACK for no connection, while SYN cookies are in use, whose cookie did not check.
    BadCookie,
    /// The UDP socket's receive buffer had no room.
    UdpBufferFull,
    /// A protocol the stack does not speak.
    UnknownProtocol,
    /// A fragment that overlaps another of its train: the whole train is discarded
    /// (RFC 5722 §4, RFC 8200 §4.5; RFC 1858 §4 for IPv4).
    FragmentOverlap,
    /// A fragment that repeats, byte for byte, what its train already holds.
    FragmentDuplicate,
    /// An IPv6 option the stack does not know whose action bits say discard (RFC 8200
    /// §4.2): silently (01; 11 to a multicast address) or with a Parameter Problem.
    Ipv6Option,
    /// An IPv6 extension header a host refuses, answered with a Parameter Problem: a
    /// Routing header with segments left, a Hop-by-Hop header that is not first.
    Ipv6Header,
    /// An echo request to a broadcast or multicast address, ignored like Linux's
    /// `icmp_echo_ignore_broadcasts` (see [`StackConfig::echo_broadcast`](crate::StackConfig::echo_broadcast)).
    BroadcastEcho,
}

impl DropReason {
    /// All reasons, in display order.
    pub const ALL: [DropReason; 14] = [
        DropReason::Malformed,
        DropReason::BadChecksum,
        DropReason::NotForUs,
        DropReason::BadSource,
        DropReason::BacklogFull,
        DropReason::SynQueueEvicted,
        DropReason::BadCookie,
        DropReason::UdpBufferFull,
        DropReason::UnknownProtocol,
        DropReason::FragmentOverlap,
        DropReason::FragmentDuplicate,
        DropReason::Ipv6Option,
        DropReason::Ipv6Header,
        DropReason::BroadcastEcho,
    ];

    /// Short name used in logs and the socket table.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::BadChecksum => "bad-checksum",
            DropReason::NotForUs => "not-for-us",
            DropReason::BadSource => "bad-source",
            DropReason::BacklogFull => "backlog-full",
            DropReason::SynQueueEvicted => "syn-queue-evicted",
            DropReason::BadCookie => "bad-cookie",
            DropReason::UdpBufferFull => "udp-buffer-full",
            DropReason::UnknownProtocol => "unknown-protocol",
            DropReason::FragmentOverlap => "fragment-overlap",
            DropReason::FragmentDuplicate => "fragment-duplicate",
            DropReason::Ipv6Option => "ipv6-option",
            DropReason::Ipv6Header => "ipv6-header",
            DropReason::BroadcastEcho => "broadcast-echo",
        }
    }
}

/// Counters of one stack since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets read from the device.
    pub rx_packets: u64,
    /// Bytes read from the device.
    pub rx_bytes: u64,
    /// Packets written to the device.
    pub tx_packets: u64,
    /// Bytes written to the device.
    pub tx_bytes: u64,
    /// Packets the stack made but could not hand to the device (its queue of packets
    /// waiting for the device was full): lost on the way out, never silently.
    pub tx_unsent: u64,
    /// TCP connections that completed the handshake.
    pub tcp_established: u64,
    /// TCP sockets removed after closing.
    pub tcp_reaped: u64,
    /// Segments answered with RST because no socket wanted them.
    pub rst_sent: u64,
    /// ICMP errors that aborted a connection attempt or reached a connected UDP socket.
    pub icmp_errors: u64,
    /// ICMP errors the stack sent (port unreachable, parameter problem).
    pub icmp_errors_sent: u64,
    /// ICMP errors the stack did not send because of the rate limit (RFC 4443 §2.4(f),
    /// RFC 1812 §4.3.2.8; see [`StackConfig::icmp_msgs_per_sec`](crate::StackConfig::icmp_msgs_per_sec)).
    pub icmp_rate_limited: u64,
    /// TCP segments sent again (a sequence range this socket had sent before).
    pub tcp_retransmits: u64,
    /// Holes the peer's SACK blocks showed, which smoltcp alone would have left to the
    /// retransmission timeout (see `stack::sack`): each started a fast retransmit.
    pub sack_recoveries: u64,
    /// Tail-loss probes: the peer acknowledged nothing for two round trips while data of
    /// ours was outstanding, and a fast retransmit was started (see `stack::tail`).
    pub tail_probes: u64,
    /// Segments the guard in front of smoltcp answered with a challenge ACK or an ACK
    /// and dropped (RFC 5961 §3.2, §4.2, §5.2; PAWS, RFC 7323 §5.3).
    pub tcp_guard_answers: u64,
    /// Segments the guard dropped without an answer (an RST out of the window, an old
    /// pure ACK, or an answer held back by the rate limit of RFC 5961 §7).
    pub tcp_guard_drops: u64,
    /// Segments whose old ACK number the guard ignored, delivering their text (RFC 9293
    /// §3.10.7.4).
    pub tcp_guard_acks_ignored: u64,
    /// Path MTUs lowered by ICMP "fragmentation needed" / "packet too big" (RFC 1191, 8201).
    pub path_mtu_updates: u64,
    /// SYN-ACKs carrying a SYN cookie, sent because a listener's SYN queue was full.
    pub syn_cookies_sent: u64,
    /// Connections made from an ACK that returned a valid cookie.
    pub syn_cookies_accepted: u64,
    /// Drops, indexed like [`DropReason::ALL`].
    pub drops: [u64; DropReason::ALL.len()],
}

impl Stats {
    /// Counts one drop.
    pub fn drop(&mut self, reason: DropReason) {
        if let Some(slot) = DropReason::ALL.iter().position(|r| *r == reason) {
            self.drops[slot] += 1;
        }
    }

    /// How many packets were dropped for `reason`.
    pub fn drops_for(&self, reason: DropReason) -> u64 {
        DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |slot| self.drops[slot])
    }

    /// Total drops over all reasons.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "packets in {} ({} bytes), out {} ({} bytes), unsent {}",
            self.rx_packets, self.rx_bytes, self.tx_packets, self.tx_bytes, self.tx_unsent
        )?;
        writeln!(
            f,
            "connections: established {}, reaped {}, rst sent {}, icmp errors {}, sack recoveries {}, tail probes {}, retransmitted {}",
            self.tcp_established,
            self.tcp_reaped,
            self.rst_sent,
            self.icmp_errors,
            self.sack_recoveries,
            self.tail_probes,
            self.tcp_retransmits
        )?;
        writeln!(
            f,
            "guard: answered {}, dropped {}, old acks ignored {}; path mtu lowered {}",
            self.tcp_guard_answers,
            self.tcp_guard_drops,
            self.tcp_guard_acks_ignored,
            self.path_mtu_updates
        )?;
        writeln!(
            f,
            "syn cookies: sent {}, accepted {}",
            self.syn_cookies_sent, self.syn_cookies_accepted
        )?;
        writeln!(
            f,
            "icmp errors out: sent {}, rate-limited {}",
            self.icmp_errors_sent, self.icmp_rate_limited
        )?;
        write!(f, "drops:")?;
        for (reason, count) in DropReason::ALL.iter().zip(self.drops) {
            write!(f, " {}={count}", reason.name())?;
        }
        Ok(())
    }
}
