//! Routing: which socket one classified packet is for — a data socket by its socket pair,
//! else a listener or UDP socket by `<ip, port>` — or why it is dropped or answered. The
//! IP rules a host keeps are applied here, before smoltcp sees the packet: no drop for a
//! low TTL (RFC 1122 §3.2.1.7), IPv6 extension headers ([`crate::packet::extension`]),
//! echo requests to broadcast ignored, and every ICMP error the stack sends decided and
//! rate-limited ([`super::icmp`]). An ICMP error about one of our packets reaches its
//! socket: a connection attempt, or a connected UDP socket.

use super::handshake::Arrival;
use super::icmp::Answer;
use super::{ErrorCause, Inner, Verdict};
use crate::flow::{SocketId, SocketPair};
use crate::packet::extension::{self, Discard, Extensions, HeaderProblem};
use crate::packet::{
    PacketInfo, QuotedFlow, Transport, TransportChecksum, classify_with, ipv4_options,
};
use crate::stats::DropReason;
use smoltcp::phy::DeviceCapabilities;
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpEndpoint};

/// Where one inbound packet goes.
pub(super) struct Route {
    pub verdict: Verdict,
    pub target: Option<SocketId>,
    pub info: Option<PacketInfo>,
    /// The target's [`TcpEntry::seq_offset`](super::TcpEntry::seq_offset), or 0.
    pub seq_offset: u32,
    /// What the stack answers itself ([`super::icmp`]) instead of handing the packet on.
    pub answer: Option<Answer>,
    /// IPv6 with extension headers, all processed: the upper-layer protocol and where its
    /// header starts. smoltcp gets the packet without them.
    pub upper: Option<(u8, usize)>,
}

impl Route {
    pub fn to(verdict: Verdict, target: Option<SocketId>) -> Route {
        Route {
            verdict,
            target,
            info: None,
            seq_offset: 0,
            answer: None,
            upper: None,
        }
    }

    fn answered(verdict: Verdict, answer: Answer) -> Route {
        let mut route = Route::to(verdict, None);
        route.answer = Some(answer);
        route
    }

    pub fn drop(reason: DropReason, detail: impl Into<String>) -> Route {
        Route::to(Verdict::dropped(reason, detail), None)
    }
}

impl Inner {
    pub(super) fn route(&mut self, packet: &[u8], caps: &DeviceCapabilities) -> Route {
        let sum = match self.partial_checksum {
            true => TransportChecksum::Partial,
            false => TransportChecksum::Verify,
        };
        let info = match classify_with(packet, sum) {
            Ok(info) => info,
            Err(err) => {
                return self
                    .unparsed_extensions(packet)
                    .unwrap_or_else(|| Route::drop(DropReason::Malformed, err.0));
            }
        };
        // With extension headers, those come first: a Routing header's final destination
        // is what the transport checksum covers (RFC 8200 §8.1).
        let extensions = extension::has_extensions(packet);
        if !info.checksum_ok && !extensions {
            return Route::drop(DropReason::BadChecksum, "");
        }
        // No check of the TTL: a host MUST NOT discard a datagram for TTL < 2
        // (RFC 1122 §3.2.1.7); the hop limit is a router's business.
        if self.is_bad_source(info.src) {
            return Route::drop(DropReason::BadSource, format!("source {}", info.src));
        }
        if !self.is_local(info.dst) && !info.dst.is_multicast() && !self.is_broadcast(info.dst) {
            return Route::drop(DropReason::NotForUs, format!("destination {}", info.dst));
        }
        let upper = match extension_headers(&info, packet) {
            Ok(upper) => upper,
            Err(refusal) => return self.refuse(refusal, info, packet),
        };
        if !info.checksum_ok {
            return Route::drop(DropReason::BadChecksum, "");
        }
        let mut route = match (info.fragment, info.transport) {
            (Some(_), _) => Route::to(Verdict::FragmentQueued, None),
            (None, Transport::Tcp { .. }) => self.route_tcp(&info, packet, caps),
            (None, Transport::Udp { .. }) => self.route_udp(&info),
            (None, Transport::Icmp { .. }) => self.route_icmp(&info, packet),
            (None, Transport::Fragment | Transport::Other(_)) => {
                return Route::drop(DropReason::UnknownProtocol, "");
            }
        };
        route.upper = upper;
        route.info = Some(info);
        self.limit_icmp_error(route)
    }

    /// The route of a packet its extension headers refuse: dropped, maybe answered.
    fn refuse(&mut self, refusal: Refusal, info: PacketInfo, packet: &[u8]) -> Route {
        let mut route = match refusal {
            Refusal::Drop(reason) => Route::drop(reason, String::new()),
            Refusal::Problem(problem) => {
                let reason = match problem.kind {
                    extension::ProblemKind::Option { .. } => DropReason::Ipv6Option,
                    _ => DropReason::Ipv6Header,
                };
                if extension::carries_icmpv6_error(packet) {
                    return Route::drop(reason, String::new());
                }
                self.meter.stats.drop(reason);
                let verdict = Verdict::ParameterProblem(problem);
                Route::answered(verdict, Answer::ParameterProblem(problem))
            }
        };
        route.info = Some(info);
        self.limit_icmp_error(route)
    }

    /// An IPv6 packet etherparse refuses for its extension headers (a Hop-by-Hop header
    /// that is not first) still gets the answer RFC 8200 asks for, if it is for us.
    fn unparsed_extensions(&mut self, packet: &[u8]) -> Option<Route> {
        if !extension::has_extensions(packet) {
            return None;
        }
        let header = etherparse::Ipv6HeaderSlice::from_slice(packet).ok()?;
        let info = PacketInfo {
            src: IpAddress::Ipv6(header.source_addr()),
            dst: IpAddress::Ipv6(header.destination_addr()),
            hop_limit: header.hop_limit(),
            transport: Transport::Other(header.next_header().0),
            fragment: None,
            len: packet.len(),
            checksum_ok: true,
        };
        let for_us = self.is_local(info.dst) || info.dst.is_multicast();
        if self.is_bad_source(info.src) || !for_us {
            return None;
        }
        let Err(refusal) = extension_headers(&info, packet) else {
            return None;
        };
        Some(self.refuse(refusal, info, packet))
    }

    /// ICMP: an error about one of our packets is noted; echo requests are answered (by
    /// smoltcp, or here when they carry a Record Route), unless sent to broadcast.
    fn route_icmp(&mut self, info: &PacketInfo, packet: &[u8]) -> Route {
        let Transport::Icmp {
            icmp_type,
            code,
            quoted,
        } = info.transport
        else {
            return Route::drop(DropReason::Malformed, "not icmp");
        };
        if let Some(quoted) = quoted {
            self.icmp_error(info, icmp_type, code, &quoted);
        }
        let too_big = match info.src {
            IpAddress::Ipv4(_) => icmp_type == 3 && code == 4,
            IpAddress::Ipv6(_) => icmp_type == 2,
        };
        if too_big && let Some(verdict) = self.path_mtu_message(packet) {
            return Route::to(verdict, None);
        }
        let v4_echo = icmp_type == 8 && matches!(info.src, IpAddress::Ipv4(_));
        if v4_echo && !self.is_local(info.dst) && !self.config.echo_broadcast {
            return Route::drop(DropReason::BroadcastEcho, "");
        }
        if v4_echo && ipv4_options::record_route(packet).is_some() {
            return Route::answered(Verdict::Icmp, Answer::EchoWithRecordRoute);
        }
        Route::to(Verdict::Icmp, None)
    }

    fn route_tcp(&mut self, info: &PacketInfo, packet: &[u8], caps: &DeviceCapabilities) -> Route {
        let Transport::Tcp {
            src_port,
            dst_port,
            flags,
            seq,
            ack,
            window,
            ..
        } = info.transport
        else {
            return Route::drop(DropReason::Malformed, "not tcp");
        };
        let pair = pair_of(info, src_port, dst_port);
        if let Some(id) = self.flows.tcp(&pair) {
            let mut route = Route::to(Verdict::DataSocket(pair), Some(id));
            route.seq_offset = self.seq_offset(id);
            return route;
        }
        if flags.rst {
            return Route::to(Verdict::StrayRst, None);
        }
        let is_syn = flags.syn && !flags.ack;
        let cookie_ack = flags.ack && !flags.syn;
        let listener = self.flows.listener(info.dst, dst_port);
        let arrival = Arrival {
            packet,
            pair,
            seq,
            ack,
            window,
        };
        match listener {
            Some(listener) if is_syn => return self.admit_syn(listener, &arrival, caps),
            Some(listener) if cookie_ack => {
                if let Some(route) = self.accept_cookie(listener, &arrival, caps) {
                    return route;
                }
            }
            _ => {}
        }
        Route::to(Verdict::NoSocketRst { syn: is_syn }, None)
    }

    fn route_udp(&mut self, info: &PacketInfo) -> Route {
        let Transport::Udp {
            src_port,
            dst_port,
            payload_len,
        } = info.transport
        else {
            return Route::drop(DropReason::Malformed, "not udp");
        };
        let udp = self
            .flows
            .udp(info.dst, dst_port)
            .and_then(|id| Some((id, self.sockets.get_mut(id.0)?.udp_mut()?)));
        let from = IpEndpoint::new(info.src, src_port);
        // A connected socket takes datagrams from its peer only, like Linux's.
        let Some((id, udp)) = udp.filter(|(_, u)| u.peer.is_none_or(|peer| peer == from)) else {
            if !self.is_local(info.dst) {
                // No ICMP error about a datagram to a broadcast or multicast address
                // (RFC 1122 §3.2.2, RFC 4443 §2.4(e)).
                return Route::drop(DropReason::NotForUs, "");
            }
            return Route::answered(Verdict::PortUnreachable, Answer::PortUnreachable);
        };
        let endpoint = udp.endpoint;
        if let Some(socket) = udp.socket.as_ref()
            && socket.payload_recv_capacity() - socket.recv_queue() < payload_len
        {
            return Route::drop(DropReason::UdpBufferFull, format!("port {dst_port}"));
        }
        Route::to(Verdict::UdpSocket(endpoint), Some(id))
    }

    /// An ICMP destination-unreachable about one of our packets: it aborts a connection
    /// attempt, and a connected UDP socket reports it (refused for port unreachable).
    fn icmp_error(&mut self, info: &PacketInfo, icmp_type: u8, code: u8, quoted: &QuotedFlow) {
        let (unreachable, port) = match info.src {
            IpAddress::Ipv4(_) => (icmp_type == 3, code == 3),
            IpAddress::Ipv6(_) => (icmp_type == 1, code == 4),
        };
        if !unreachable {
            return;
        }
        let pair = SocketPair {
            local: IpEndpoint::new(quoted.src, quoted.src_port),
            remote: IpEndpoint::new(quoted.dst, quoted.dst_port),
        };
        match quoted.protocol {
            6 => self.tcp_unreachable(&pair),
            17 => self.udp_unreachable(&pair, port),
            _ => {}
        }
    }

    fn udp_unreachable(&mut self, pair: &SocketPair, port: bool) {
        let Some(id) = self.flows.udp(pair.local.addr, pair.local.port) else {
            return;
        };
        let Some(udp) = self.sockets.get_mut(id.0).and_then(|e| e.udp_mut()) else {
            return;
        };
        if udp.peer != Some(pair.remote) {
            return; // Linux reports ICMP errors on connected UDP sockets only.
        }
        udp.error = Some(match port {
            true => ErrorCause::Refused,
            false => ErrorCause::Unreachable,
        });
        log::info!("udp: {pair}: destination unreachable");
        self.meter.stats.icmp_errors += 1;
        self.mark_ready(id);
    }

    fn tcp_unreachable(&mut self, pair: &SocketPair) {
        let Some(id) = self.flows.tcp(pair) else {
            return;
        };
        if let Some(entry) = self.sockets.get_mut(id.0).and_then(|e| e.tcp_mut())
            && let Some(socket) = entry.socket.as_mut()
            && socket.state() == tcp::State::SynSent
        {
            log::info!("tcp: {pair}: destination unreachable");
            socket.abort();
            entry.error = Some(ErrorCause::Unreachable);
            self.meter.stats.icmp_errors += 1;
            self.mark_dirty(id);
            self.mark_ready(id);
        }
    }

    fn is_bad_source(&self, src: IpAddress) -> bool {
        let martian = match src {
            IpAddress::Ipv4(a) => a.is_unspecified() || a.is_broadcast() || a.is_loopback(),
            IpAddress::Ipv6(a) => a.is_unspecified() || a.is_loopback(),
        };
        martian || src.is_multicast() || self.is_local(src) || self.is_broadcast(src)
    }

    /// The limited broadcast or the directed broadcast of one of our IPv4 subnets.
    fn is_broadcast(&self, addr: IpAddress) -> bool {
        let IpAddress::Ipv4(a) = addr else {
            return false;
        };
        a.is_broadcast()
            || self.iface.ip_addrs().iter().any(|cidr| match cidr {
                smoltcp::wire::IpCidr::Ipv4(c) => c.prefix_len() < 31 && c.broadcast() == Some(a),
                _ => false,
            })
    }
}

/// Why a packet's IPv6 extension headers refuse it.
enum Refusal {
    /// Dropped, counted under this reason, unanswered.
    Drop(DropReason),
    /// Dropped and answered with a Parameter Problem.
    Problem(HeaderProblem),
}

/// The extension headers of an IPv6 packet, by RFC 8200's rules: where the upper-layer
/// header is (`None`: right after the fixed header), or why the packet is refused.
fn extension_headers(info: &PacketInfo, packet: &[u8]) -> Result<Option<(u8, usize)>, Refusal> {
    if info.fragment.is_some() || !extension::has_extensions(packet) {
        return Ok(None);
    }
    match extension::walk(packet) {
        Extensions::Upper { protocol, start } if matches!(protocol, 6 | 17 | 58) => {
            Ok(Some((protocol, start)))
        }
        Extensions::Upper { .. } => Err(Refusal::Drop(DropReason::UnknownProtocol)),
        Extensions::Discard(Discard::Option { .. }) => Err(Refusal::Drop(DropReason::Ipv6Option)),
        Extensions::Discard(Discard::Truncated | Discard::Fragment) => {
            Err(Refusal::Drop(DropReason::Malformed))
        }
        Extensions::Problem(problem) => Err(Refusal::Problem(problem)),
    }
}

fn pair_of(info: &PacketInfo, src_port: u16, dst_port: u16) -> SocketPair {
    SocketPair {
        local: IpEndpoint::new(info.dst, dst_port),
        remote: IpEndpoint::new(info.src, src_port),
    }
}
