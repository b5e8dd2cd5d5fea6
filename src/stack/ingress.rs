//! Ingress: each packet read from the device is reassembled if it is a fragment, routed
//! ([`super::route`]: which socket, or why not), and handed to the interface together with
//! a socket set that holds only that one socket — so the interface's linear scan is over
//! one item.

use super::device::{OnePacket, TapTx};
use super::fragmenter;
use super::guard::Decision;
use super::inject::guarded_verdict;
use super::reassembly::Reassembly;
use super::sack::PeerSegment;
use super::{Entry, EntryKind, ErrorCause, Inner, Verdict};
use crate::flow::SocketId;
use crate::packet::{PacketInfo, SeqField, TcpFlags, Transport, shift_tcp};
use crate::phy::META_PARTIAL_CHECKSUM;
use crate::phy::vnet::fill_transport_checksum;
use crate::stats::DropReason;
use smoltcp::phy::{self, Device, DeviceCapabilities};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;

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
            // A big reply (echo of a fragmented ping) may have left fragments behind.
            if !fragmenter::drain_ipv4_fragments(&mut self.iface, &mut self.meter, device, now) {
                break;
            }
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
                self.deliver(now, packet, &whole, tx, caps);
                self.reassembler.recycle(whole);
            }
            Reassembly::Queued => self.observe(now, packet, &Verdict::FragmentQueued),
            Reassembly::Refused(reason, verdict) => {
                self.observe(now, packet, &verdict);
                self.meter.stats.drop(reason);
            }
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
        let mut route = self.route(packet, caps);
        // A data socket's segment (or the SYN that made one), read once for the guard and
        // the repairs.
        let seg = match route.verdict {
            Verdict::DataSocket(_) | Verdict::NewConnection { .. } => route.target.and_then(|id| {
                PeerSegment::read(id, packet, route.info.as_ref(), caps, route.seq_offset)
            }),
            _ => None,
        };
        let decision = match (&route.verdict, seg.as_ref()) {
            (Verdict::DataSocket(_), Some(seg)) => self.guard_check(seg, now),
            _ => Decision::Deliver,
        };
        if let Verdict::DataSocket(pair) = route.verdict
            && let Some(guarded) = guarded_verdict(pair, decision)
        {
            route.verdict = guarded;
        }
        if wire.len() == packet.len() {
            self.observe(now, wire, &route.verdict);
        } else {
            let verdict = Verdict::Reassembled {
                len: packet.len(),
                verdict: Box::new(route.verdict.clone()),
            };
            self.observe(now, wire, &verdict);
        }
        if let Some(seg) = seg.as_ref()
            && decision != Decision::Deliver
        {
            self.apply_guard(now, seg, decision, tx, caps);
            return;
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
        // ICMP the stack answers itself; IPv6 extension headers taken out (super::icmp).
        let Some(tx) = self.answer(now, packet, &route, tx, caps.max_transmission_unit) else {
            return;
        };
        let stripped = self.strip_extensions(packet, &route);
        let packet = stripped.as_deref().unwrap_or(packet);
        let before = route.target.map(|id| self.tcp_receive_state(id));
        let lent = route.target.and_then(|id| self.lend(id).map(|h| (id, h)));
        let udp_queue_before = lent.and_then(|(id, _)| self.udp_recv_queue(id));
        self.feed(now, packet, tx, caps, route.target, route.seq_offset);
        if let Some((id, handle)) = lent {
            if let (Some(seg), Some(before)) = (seg.as_ref(), before) {
                self.guard_learn(seg, before, now);
                self.note_peer_ack(now, seg);
                self.report_sack_hole(now, seg);
                self.ack_at_zero_window(now, seg);
            }
            self.unlend(id, handle);
            self.after_ingress(id, route.info.as_ref(), udp_queue_before, now);
        }
        self.return_scratch(stripped);
    }

    /// Applies what the guard decided about `seg` (anything but delivering it as it is).
    fn apply_guard<T: phy::TxToken>(
        &mut self,
        now: Instant,
        seg: &PeerSegment<'_>,
        decision: Decision,
        tx: T,
        caps: &DeviceCapabilities,
    ) {
        let id = seg.id;
        match decision {
            Decision::Deliver | Decision::Drop(_) | Decision::Answer { limited: true, .. } => {}
            Decision::Answer { limited: false, .. } => {
                if let Some(handle) = self.lend(id) {
                    self.answer_with_ack(now, seg);
                    self.unlend(id, handle);
                }
            }
            Decision::IgnoreAck { ack } => {
                let before = self.tcp_receive_state(id);
                let copy = self.with_ack(seg, ack);
                let Some(handle) = self.lend(id) else {
                    self.rewrite = copy;
                    return;
                };
                self.feed(now, &copy, tx, caps, Some(id), seg.seq_offset);
                self.rewrite = copy;
                self.guard_learn(seg, before, now);
                self.unlend(id, handle);
                self.after_ingress(id, None, None, now);
            }
        }
    }

    /// A TCP socket's receive queue and state before a segment is fed to it.
    fn tcp_receive_state(&self, id: SocketId) -> (usize, Option<tcp::State>) {
        let socket = self
            .sockets
            .get(id.0)
            .and_then(|e| e.tcp())
            .and_then(|t| t.socket.as_ref());
        (
            socket.map_or(0, |s| s.recv_queue()),
            socket.map(|s| s.state()),
        )
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
                seq_offset,
                sent,
                ..TapTx::counting(tx, meter, now)
            }),
            caps: caps.clone(),
        };
        iface.poll_ingress_single(now, &mut one, scratch);
        self.rewrite = rewritten;
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
                tcp.abort_on_orphan_data();
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
}
