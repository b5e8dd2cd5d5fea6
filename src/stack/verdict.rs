//! What the stack decided about one inbound packet: the socket that took it or why it was
//! dropped. The packet trace prints it at the end of each inbound line.

use super::guard::GuardRule;
use crate::flow::{SocketPair, listen_endpoint};
use crate::packet::extension::HeaderProblem;
use crate::stats::DropReason;
use smoltcp::wire::IpListenEndpoint;
use std::fmt;

/// The stack's decision about one inbound packet.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// A SYN taken by a listener, which made a new data socket for this pair.
    NewConnection {
        /// The listener's endpoint.
        listener: IpListenEndpoint,
        /// The new data socket's pair.
        pair: SocketPair,
    },
    /// A SYN for a listener whose SYN queue is full: answered with a SYN-ACK carrying a
    /// SYN cookie, no socket made.
    SynCookie {
        /// The listener's endpoint.
        listener: IpListenEndpoint,
        /// The pair the cookie is for.
        pair: SocketPair,
    },
    /// An ACK that returned a valid SYN cookie: a new, established data socket.
    CookieAccepted {
        /// The listener's endpoint.
        listener: IpListenEndpoint,
        /// The new data socket's pair.
        pair: SocketPair,
    },
    /// A segment for an existing TCP data socket.
    DataSocket(SocketPair),
    /// A datagram for a UDP socket.
    UdpSocket(IpListenEndpoint),
    /// TCP with no socket: answered with RST (no listener on the port, or no such connection).
    NoSocketRst {
        /// True when it was a SYN to a port nobody listens on.
        syn: bool,
    },
    /// A RST for no socket: ignored (never answer a RST with a RST).
    StrayRst,
    /// UDP to a port with no socket: answered with ICMP port unreachable.
    PortUnreachable,
    /// An IPv6 extension header a host refuses (RFC 8200 §4): dropped, answered with an
    /// ICMPv6 Parameter Problem.
    ParameterProblem(HeaderProblem),
    /// The ICMP error this packet called for was not sent: the rate limit
    /// (RFC 4443 §2.4(f), RFC 1812 §4.3.2.8). The packet is dropped.
    IcmpRateLimited(IcmpError),
    /// A fragment that overlaps another of its train: the whole train is discarded
    /// (RFC 5722 §4, RFC 8200 §4.5, RFC 1858 §4).
    FragmentOverlap,
    /// ICMP handled by the stack itself (echo request answered, error noted).
    Icmp,
    /// A fragment held for reassembly.
    FragmentQueued,
    /// The fragment that completed a packet of `len` bytes, and what became of that packet.
    Reassembled {
        /// Length of the whole packet.
        len: usize,
        /// The verdict on the whole packet.
        verdict: Box<Verdict>,
    },
    /// A segment for an existing data socket that the guard in front of smoltcp judged
    /// by `rule` (RFC 5961, RFC 7323, RFC 9293): see `stack::guard`.
    Guarded {
        /// The data socket's pair.
        pair: SocketPair,
        /// The rule that decided.
        rule: GuardRule,
        /// What was done: "challenge ACK", "dropped", "ACK ignored, text delivered", ...
        action: &'static str,
    },
    /// An ICMP "fragmentation needed" or "packet too big" about one of our connections
    /// (RFC 1191, RFC 8201): the path MTU towards its peer, and whether it was taken (the
    /// quoted segment was in flight and the MTU lower than before).
    PathMtu {
        /// The connection the quoted segment belongs to.
        pair: SocketPair,
        /// The MTU the message reports (raised to its family's floor).
        mtu: u16,
        /// Whether the estimate went down.
        taken: bool,
    },
    /// Dropped, counted under this reason; `detail` says more (the parse error, ...).
    Dropped {
        /// The counter it went to.
        reason: DropReason,
        /// Extra words for the trace, may be empty.
        detail: String,
    },
}

/// An ICMP error the stack sends about a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IcmpError {
    /// Port unreachable, for UDP to a port with no socket.
    PortUnreachable,
    /// ICMPv6 Parameter Problem, for an extension header.
    ParameterProblem(HeaderProblem),
}

impl Verdict {
    pub(crate) fn dropped(reason: DropReason, detail: impl Into<String>) -> Verdict {
        Verdict::Dropped {
            reason,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::NewConnection { listener, pair } => write!(
                f,
                "listener {} -> new data socket {pair}",
                listen_endpoint(*listener)
            ),
            Verdict::SynCookie { listener, pair } => write!(
                f,
                "listener {} syn queue full -> SYN-ACK with cookie for {pair}",
                listen_endpoint(*listener)
            ),
            Verdict::CookieAccepted { listener, pair } => write!(
                f,
                "listener {} cookie valid -> new data socket {pair}",
                listen_endpoint(*listener)
            ),
            Verdict::DataSocket(pair) => write!(f, "data socket {pair}"),
            Verdict::UdpSocket(ep) => write!(f, "udp socket {}", listen_endpoint(*ep)),
            Verdict::NoSocketRst { syn: true } => write!(f, "no listener -> RST"),
            Verdict::NoSocketRst { syn: false } => write!(f, "no connection -> RST"),
            Verdict::StrayRst => write!(f, "RST for no connection -> ignored"),
            Verdict::PortUnreachable => write!(f, "no udp socket -> ICMP port unreachable"),
            Verdict::ParameterProblem(problem) => write!(
                f,
                "{} -> dropped, ICMPv6 parameter problem code {} pointer {}",
                problem.kind,
                problem.code(),
                problem.pointer
            ),
            Verdict::IcmpRateLimited(IcmpError::PortUnreachable) => {
                write!(f, "no udp socket -> icmp rate limit, no port unreachable")
            }
            Verdict::IcmpRateLimited(IcmpError::ParameterProblem(problem)) => write!(
                f,
                "{} -> dropped, icmp rate limit, no parameter problem",
                problem.kind
            ),
            Verdict::FragmentOverlap => write!(f, "overlapping fragment: train discarded"),
            Verdict::Icmp => write!(f, "icmp -> stack"),
            Verdict::FragmentQueued => write!(f, "fragment -> reassembly"),
            Verdict::Reassembled { len, verdict } => {
                write!(f, "last fragment: {len} byte packet reassembled; {verdict}")
            }
            Verdict::PathMtu {
                pair,
                mtu,
                taken: true,
            } => write!(f, "packet too big for {pair} -> path MTU {mtu}"),
            Verdict::PathMtu { pair, mtu, .. } => {
                write!(
                    f,
                    "packet too big ({mtu}) for {pair}: not in flight or not lower -> ignored"
                )
            }
            Verdict::Guarded { pair, rule, action } => {
                write!(f, "data socket {pair}: {} -> {action}", rule.describe())
            }
            Verdict::Dropped { reason, detail } if detail.is_empty() => {
                write!(f, "{} -> dropped", reason.name())
            }
            Verdict::Dropped { reason, detail } => {
                write!(f, "{}: {detail} -> dropped", reason.name())
            }
        }
    }
}
