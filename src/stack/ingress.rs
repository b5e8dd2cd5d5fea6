//! Ingress: each packet read from the device is classified, given a verdict by the flow
//! table (which socket, or why not), and handed to the interface together with a socket set
//! that holds only that one socket — so the interface's linear scan is over one item.

use super::device::{OnePacket, TapTx};
use super::handshake::Arrival;
use super::reassembly::Reassembly;
use super::sack::PeerSegment;
use super::{Entry, EntryKind, ErrorCause, Inner, Verdict};
use crate::flow::{SocketId, SocketPair};
use crate::packet::{
    PacketInfo, QuotedFlow, SeqField, TcpFlags, Transport, TransportChecksum, classify_with,
    shift_tcp,
};
use crate::phy::META_PARTIAL_CHECKSUM;
use crate::phy::vnet::fill_transport_checksum;
use crate::stats::DropReason;
use smoltcp::phy::{self, Device, DeviceCapabilities};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
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
    /// Reads and processes up to `budget` packets. Returns how many were read.
    pub fn ingress<D: Device>(&mut self, now: Instant, device: &mut D, budget: usize) -> usize {
        let caps = device.capabilities();
        let mut count = 0;
        while count < budget {
            let Some((rx, tx)) = phy::Device::receive(device, now) else {
                break;
            };
            count += 1;
            self.partial_checksum = phy::RxToken::meta(&rx).id & META_PARTIAL_CHECKSUM != 0;
            phy::RxToken::consume(rx, |packet| self.ingress_packet(now, packet, tx, &caps));
        }
        self.partial_checksum = false;
        count
    }

    fn ingress_packet<T: phy::TxToken>(
        &mut self,
        now: Instant,
        packet: &[u8],
        tx: T,
        caps: &DeviceCapabilities,
    ) {
        self.meter.stats.rx_packets += 1;
        self.meter.stats.rx_bytes += packet.len() as u64;
        match self.reassembler.push(now, packet) {
            Reassembly::Whole => self.deliver(now, packet, packet, tx, caps),
            Reassembly::Complete(whole) => {
                // Only whole packets come with a partial checksum; not a fragment train.
                self.partial_checksum = false;
                self.deliver(now, packet, &whole, tx, caps)
            }
            Reassembly::Queued => self.observe(now, packet, &Verdict::FragmentQueued),
            Reassembly::Invalid(why) => {
                let verdict = Verdict::dropped(DropReason::Malformed, why);
                self.observe(now, packet, &verdict);
                self.meter.stats.drop(DropReason::Malformed);
            }
        }
    }

    fn observe(&mut self, now: Instant, packet: &[u8], verdict: &Verdict) {
        if let Some(observer) = self.meter.observer.as_mut() {
            if self.partial_checksum {
                // Show the checksum the partial one stands for, as the peer sent it.
                let mut whole = packet.to_vec();
                fill_transport_checksum(&mut whole);
                observer.inbound(now, &whole, verdict);
            } else {
                observer.inbound(now, packet, verdict);
            }
        }
        log::trace!("ingress: {} bytes: {verdict}", packet.len());
    }

    /// Hands one whole `packet` to its socket. `wire` is what was read: the packet itself,
    /// or the fragment that completed it.
    fn deliver<T: phy::TxToken>(
        &mut self,
        now: Instant,
        wire: &[u8],
        packet: &[u8],
        tx: T,
        caps: &DeviceCapabilities,
    ) {
        let route = self.route(packet, caps);
        if wire.len() == packet.len() {
            self.observe(now, wire, &route.verdict);
        } else {
            let verdict = Verdict::Reassembled {
                len: packet.len(),
                verdict: Box::new(route.verdict.clone()),
            };
            self.observe(now, wire, &verdict);
        }
        match &route.verdict {
            Verdict::Dropped { reason, detail } => {
                self.meter.stats.drop(*reason);
                log::debug!(
                    "ingress: dropped {} byte packet: {} {detail}",
                    packet.len(),
                    reason.name()
                );
                return;
            }
            Verdict::StrayRst | Verdict::SynCookie { .. } => return,
            Verdict::NoSocketRst { .. } => self.meter.stats.rst_sent += 1,
            Verdict::Icmp if packet.len() > caps.max_transmission_unit => {
                // smoltcp cannot fragment IPv6: a big echo reply is made and split here.
                if let Some(fragments) = self
                    .reassembler
                    .echo_reply_fragments(packet, caps.max_transmission_unit)
                {
                    self.queue_raw(fragments);
                    return;
                }
            }
            _ => {}
        }
        let lent = route.target.and_then(|id| self.lend(id).map(|h| (id, h)));
        let udp_queue_before = lent.and_then(|(id, _)| self.udp_recv_queue(id));
        self.feed(now, packet, tx, caps, route.target, route.seq_offset);
        if let Some((id, handle)) = lent {
            let info = route.info.as_ref();
            if let Some(seg) = PeerSegment::read(id, packet, info, caps, route.seq_offset) {
                self.note_peer_ack(now, &seg);
                self.report_sack_hole(now, &seg);
                self.ack_at_zero_window(now, &seg);
            }
            self.unlend(id, handle);
            self.after_ingress(id, route.info.as_ref(), udp_queue_before, now);
        }
    }

    /// Runs the interface on `packet` with the sockets lent to the scratch set; replies go
    /// out through `tx`. For a SYN-cookie connection (`seq_offset` not 0) the socket sees
    /// the ACK number in its own sequence space, and the peer sees ours in the cookie's.
    fn feed<T: phy::TxToken>(
        &mut self,
        now: Instant,
        packet: &[u8],
        tx: T,
        caps: &DeviceCapabilities,
        target: Option<SocketId>,
        seq_offset: u32,
    ) {
        let mut rewritten = std::mem::take(&mut self.rewrite);
        let packet = if seq_offset != 0 {
            rewritten.clear();
            rewritten.extend_from_slice(packet);
            shift_tcp(&mut rewritten, SeqField::Ack, seq_offset);
            &rewritten[..]
        } else {
            packet
        };
        let Inner {
            iface,
            scratch,
            meter,
            sockets,
            ..
        } = self;
        let sent = target
            .and_then(|id| sockets.get_mut(id.0))
            .and_then(Entry::sent_mut);
        let mut one = OnePacket {
            packet,
            tx: Some(TapTx {
                sent,
                inner: tx,
                meter,
                now,
                seq_offset,
            }),
            caps: caps.clone(),
        };
        iface.poll_ingress_single(now, &mut one, scratch);
        self.rewrite = rewritten;
    }

    fn route(&mut self, packet: &[u8], caps: &DeviceCapabilities) -> Route {
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
                Route::to(Verdict::Icmp, None)
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

    fn after_ingress(
        &mut self,
        id: SocketId,
        info: Option<&PacketInfo>,
        udp_before: Option<usize>,
        now: Instant,
    ) {
        let rst = matches!(
            info.map(|i| i.transport),
            Some(Transport::Tcp {
                flags: TcpFlags { rst: true, .. },
                ..
            })
        );
        let Some(entry) = self.sockets.get_mut(id.0) else {
            return;
        };
        match &mut entry.kind {
            EntryKind::Tcp(tcp) => {
                tcp.last_heard = now;
                let closed = tcp
                    .socket
                    .as_ref()
                    .is_some_and(|s| s.state() == tcp::State::Closed);
                if rst && closed && tcp.error.is_none() {
                    tcp.error = Some(ErrorCause::Reset);
                    log::info!("tcp: {}: reset by peer", tcp.pair);
                }
                self.mark_dirty(id);
                self.refresh_tcp(id, true);
            }
            EntryKind::Udp(_) => {
                if let (Some(before), Some(after)) = (udp_before, self.udp_recv_queue(id))
                    && after == before
                    && matches!(
                        info.map(|i| i.transport),
                        Some(Transport::Udp {
                            payload_len: 1..,
                            ..
                        })
                    )
                {
                    self.meter.stats.drop(DropReason::UdpBufferFull);
                }
                self.mark_ready(id);
            }
            EntryKind::Listener(_) => {}
        }
    }

    fn udp_recv_queue(&self, id: SocketId) -> Option<usize> {
        match &self.sockets.get(id.0)?.kind {
            EntryKind::Udp(udp) => udp.socket.as_ref().map(|s| s.recv_queue()),
            _ => None,
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
