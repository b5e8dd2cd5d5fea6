//! Routing: which socket one classified packet is for — a data socket by its socket pair,
//! else a listener or UDP socket by `<ip, port>` — or why it is dropped or answered.

use super::handshake::Arrival;
use super::{ErrorCause, Inner, Verdict};
use crate::flow::{SocketId, SocketPair};
use crate::packet::{PacketInfo, QuotedFlow, Transport, TransportChecksum, classify_with};
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
}

impl Route {
    pub fn to(verdict: Verdict, target: Option<SocketId>) -> Route {
        Route {
            verdict,
            target,
            info: None,
            seq_offset: 0,
        }
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
            Err(err) => return Route::drop(DropReason::Malformed, err.0),
        };
        if !info.checksum_ok {
            return Route::drop(DropReason::BadChecksum, "");
        }
        if info.hop_limit == 0 {
            return Route::drop(DropReason::TtlZero, "");
        }
        if self.is_bad_source(info.src) {
            return Route::drop(DropReason::BadSource, format!("source {}", info.src));
        }
        if !self.is_local(info.dst) && !info.dst.is_multicast() && !self.is_broadcast(info.dst) {
            return Route::drop(DropReason::NotForUs, format!("destination {}", info.dst));
        }
        let mut route = match (info.fragment, info.transport) {
            (Some(_), _) => Route::to(Verdict::FragmentQueued, None),
            (None, Transport::Tcp { .. }) => self.route_tcp(&info, packet, caps),
            (
                None,
                Transport::Udp {
                    dst_port,
                    payload_len,
                    ..
                },
            ) => self.route_udp(info.dst, dst_port, payload_len),
            (
                None,
                Transport::Icmp {
                    icmp_type, quoted, ..
                },
            ) => {
                if let Some(quoted) = quoted {
                    self.icmp_error(&info, icmp_type, &quoted);
                }
                let verdict = self.path_mtu_message(packet).unwrap_or(Verdict::Icmp);
                Route::to(verdict, None)
            }
            (None, Transport::Fragment | Transport::Other(_)) => {
                return Route::drop(DropReason::UnknownProtocol, "");
            }
        };
        route.info = Some(info);
        route
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

    fn route_udp(&mut self, dst: IpAddress, dst_port: u16, payload_len: usize) -> Route {
        let Some(id) = self.flows.udp(dst, dst_port) else {
            return Route::to(Verdict::PortUnreachable, None);
        };
        let Some(udp) = self.sockets.get_mut(id.0).and_then(|e| e.udp_mut()) else {
            return Route::to(Verdict::PortUnreachable, None);
        };
        let endpoint = udp.endpoint;
        if let Some(socket) = udp.socket.as_ref()
            && socket.payload_recv_capacity() - socket.recv_queue() < payload_len
        {
            return Route::drop(DropReason::UdpBufferFull, format!("port {dst_port}"));
        }
        Route::to(Verdict::UdpSocket(endpoint), Some(id))
    }

    /// An ICMP destination-unreachable about one of our connection attempts aborts it.
    fn icmp_error(&mut self, info: &PacketInfo, icmp_type: u8, quoted: &QuotedFlow) {
        let unreachable = match info.src {
            IpAddress::Ipv4(_) => icmp_type == 3,
            IpAddress::Ipv6(_) => icmp_type == 1,
        };
        if !unreachable || quoted.protocol != 6 {
            return;
        }
        let pair = SocketPair {
            local: IpEndpoint::new(quoted.src, quoted.src_port),
            remote: IpEndpoint::new(quoted.dst, quoted.dst_port),
        };
        let Some(id) = self.flows.tcp(&pair) else {
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

fn pair_of(info: &PacketInfo, src_port: u16, dst_port: u16) -> SocketPair {
    SocketPair {
        local: IpEndpoint::new(info.dst, dst_port),
        remote: IpEndpoint::new(info.src, src_port),
    }
}
