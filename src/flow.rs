//! The flow table: which socket owns each packet. TCP data sockets are found by their socket
//! pair `<local ip, local port, remote ip, remote port>`, listeners and UDP sockets by
//! `<ip, port>` (exact address first, then the wildcard). Every lookup is one hash probe.
//! Fragments never reach it: the stack reassembles them first.

use smoltcp::wire::{IpAddress, IpEndpoint, IpListenEndpoint};
use std::collections::HashMap;
use std::fmt;
use std::ops::RangeInclusive;

/// Identifies one socket of a [`Stack`](crate::Stack): listener, TCP data socket or UDP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(pub(crate) usize);

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// The socket pair `<local ip, local port, remote ip, remote port>` naming one TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketPair {
    /// Our side: one of the stack's addresses and the listener's (or an ephemeral) port.
    pub local: IpEndpoint,
    /// The peer's address and port.
    pub remote: IpEndpoint,
}

impl fmt::Display for SocketPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} <-> {}", endpoint(self.local), endpoint(self.remote))
    }
}

/// Formats an endpoint like `ss` does: `192.168.69.2:7`, `[fd69::2]:7`.
pub fn endpoint(ep: IpEndpoint) -> String {
    match ep.addr {
        IpAddress::Ipv4(a) => format!("{a}:{}", ep.port),
        IpAddress::Ipv6(a) => format!("[{a}]:{}", ep.port),
    }
}

/// A listen endpoint as a std address; the wildcard shows as `[::]`.
pub fn listen_socket_addr(ep: IpListenEndpoint) -> std::net::SocketAddr {
    let ip = ep.addr.map_or(
        std::net::Ipv6Addr::UNSPECIFIED.into(),
        std::net::IpAddr::from,
    );
    std::net::SocketAddr::new(ip, ep.port)
}

/// Formats a listen endpoint; the wildcard address prints as `*`.
pub fn listen_endpoint(ep: IpListenEndpoint) -> String {
    match ep.addr {
        Some(addr) => endpoint(IpEndpoint::new(addr, ep.port)),
        None => format!("*:{}", ep.port),
    }
}

/// Maps socket pairs, listen endpoints and fragment trains to sockets.
#[derive(Debug, Default)]
pub struct FlowTable {
    tcp: HashMap<SocketPair, SocketId>,
    listeners: HashMap<IpListenEndpoint, SocketId>,
    udp: HashMap<IpListenEndpoint, SocketId>,
}

impl FlowTable {
    /// The TCP data socket for this pair.
    pub fn tcp(&self, pair: &SocketPair) -> Option<SocketId> {
        self.tcp.get(pair).copied()
    }

    /// Records a TCP data socket. Returns false if the pair is taken.
    pub fn insert_tcp(&mut self, pair: SocketPair, id: SocketId) -> bool {
        if self.tcp.contains_key(&pair) {
            return false;
        }
        self.tcp.insert(pair, id);
        true
    }

    /// Forgets a TCP data socket.
    pub fn remove_tcp(&mut self, pair: &SocketPair) {
        self.tcp.remove(pair);
    }

    /// Number of TCP socket pairs in the table.
    pub fn tcp_len(&self) -> usize {
        self.tcp.len()
    }

    /// The listener that takes a SYN for `<addr, port>`.
    pub fn listener(&self, addr: IpAddress, port: u16) -> Option<SocketId> {
        lookup(&self.listeners, addr, port)
    }

    /// The UDP socket that takes a datagram for `<addr, port>`.
    pub fn udp(&self, addr: IpAddress, port: u16) -> Option<SocketId> {
        lookup(&self.udp, addr, port)
    }

    /// Records a listener; false if the endpoint is taken.
    pub fn insert_listener(&mut self, ep: IpListenEndpoint, id: SocketId) -> bool {
        insert_bound(&mut self.listeners, ep, id)
    }

    /// Forgets a listener.
    pub fn remove_listener(&mut self, ep: &IpListenEndpoint) {
        self.listeners.remove(ep);
    }

    /// Records a UDP socket; false if the endpoint is taken.
    pub fn insert_udp(&mut self, ep: IpListenEndpoint, id: SocketId) -> bool {
        insert_bound(&mut self.udp, ep, id)
    }

    /// Forgets a UDP socket.
    pub fn remove_udp(&mut self, ep: &IpListenEndpoint) {
        self.udp.remove(ep);
    }

    /// Whether any listener uses `port` (on any address).
    fn port_has_listener(&self, port: u16) -> bool {
        self.listeners.keys().any(|ep| ep.port == port)
    }

    /// Picks a local port in `range`, starting at `start`, such that the socket pair
    /// `<local, port, remote>` is unused (TIME-WAIT sockets stay in the table, so they count)
    /// and no listener holds the port.
    pub fn free_tcp_port(
        &self,
        local: IpAddress,
        remote: IpEndpoint,
        range: &RangeInclusive<u16>,
        start: u32,
    ) -> Option<u16> {
        pick_port(range, start, |port| {
            let pair = SocketPair {
                local: IpEndpoint::new(local, port),
                remote,
            };
            !self.tcp.contains_key(&pair) && !self.port_has_listener(port)
        })
    }

    /// Picks a UDP port in `range` that no UDP socket holds on any address.
    pub fn free_udp_port(&self, range: &RangeInclusive<u16>, start: u32) -> Option<u16> {
        pick_port(range, start, |port| {
            !self.udp.keys().any(|ep| ep.port == port)
        })
    }
}

fn lookup(
    map: &HashMap<IpListenEndpoint, SocketId>,
    addr: IpAddress,
    port: u16,
) -> Option<SocketId> {
    let exact = IpListenEndpoint {
        addr: Some(addr),
        port,
    };
    map.get(&exact)
        .or_else(|| map.get(&IpListenEndpoint { addr: None, port }))
        .copied()
}

fn insert_bound(
    map: &mut HashMap<IpListenEndpoint, SocketId>,
    ep: IpListenEndpoint,
    id: SocketId,
) -> bool {
    // The wildcard conflicts with every address on the port, and each address with it.
    let clash = match ep.addr {
        None => map.keys().any(|other| other.port == ep.port),
        Some(_) => {
            map.contains_key(&ep)
                || map.contains_key(&IpListenEndpoint {
                    addr: None,
                    port: ep.port,
                })
        }
    };
    if clash {
        return false;
    }
    map.insert(ep, id);
    true
}

fn pick_port(range: &RangeInclusive<u16>, start: u32, free: impl Fn(u16) -> bool) -> Option<u16> {
    let first = u32::from(*range.start());
    let span = u32::from(*range.end()).checked_sub(first)? + 1;
    (0..span)
        .map(|i| (first + (start.wrapping_add(i)) % span) as u16)
        .find(|&port| free(port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::Ipv4Address;

    fn v4(last: u8) -> IpAddress {
        IpAddress::Ipv4(Ipv4Address::new(192, 168, 69, last))
    }

    #[test]
    fn pairs_sharing_a_local_port_are_distinct() {
        let mut table = FlowTable::default();
        let local = IpEndpoint::new(v4(2), 7);
        for (i, port) in [40000u16, 40001, 40002].into_iter().enumerate() {
            let pair = SocketPair {
                local,
                remote: IpEndpoint::new(v4(1), port),
            };
            assert!(table.insert_tcp(pair, SocketId(i)));
            assert!(!table.insert_tcp(pair, SocketId(99)), "pair reused");
        }
        let pair = SocketPair {
            local,
            remote: IpEndpoint::new(v4(1), 40001),
        };
        assert_eq!(table.tcp(&pair), Some(SocketId(1)));
        assert_eq!(table.tcp_len(), 3);
    }

    #[test]
    fn exact_listener_wins_over_wildcard_and_clashes_are_refused() {
        let mut table = FlowTable::default();
        assert!(table.insert_listener(
            IpListenEndpoint {
                addr: Some(v4(2)),
                port: 7
            },
            SocketId(1)
        ));
        assert!(!table.insert_listener(
            IpListenEndpoint {
                addr: None,
                port: 7
            },
            SocketId(2)
        ));
        assert!(table.insert_listener(
            IpListenEndpoint {
                addr: None,
                port: 8
            },
            SocketId(3)
        ));
        assert_eq!(table.listener(v4(2), 7), Some(SocketId(1)));
        assert_eq!(table.listener(v4(2), 8), Some(SocketId(3)));
        assert_eq!(table.listener(v4(2), 9), None);
    }

    #[test]
    fn free_port_skips_pairs_in_use_and_reports_exhaustion() {
        let mut table = FlowTable::default();
        let remote = IpEndpoint::new(v4(1), 80);
        let range = 50000..=50002;
        for port in [50000, 50001] {
            let pair = SocketPair {
                local: IpEndpoint::new(v4(2), port),
                remote,
            };
            table.insert_tcp(pair, SocketId(port as usize));
        }
        assert_eq!(table.free_tcp_port(v4(2), remote, &range, 0), Some(50002));
        // A different remote may reuse the same local port: the pair differs.
        let other = IpEndpoint::new(v4(3), 80);
        assert_eq!(table.free_tcp_port(v4(2), other, &range, 0), Some(50000));
        let pair = SocketPair {
            local: IpEndpoint::new(v4(2), 50002),
            remote,
        };
        table.insert_tcp(pair, SocketId(7));
        assert_eq!(table.free_tcp_port(v4(2), remote, &range, 5), None);
    }
}
