//! The one path by which segments of our own making reach smoltcp, and where the guard's
//! decisions are applied.
//!
//! smoltcp's socket can be steered only through the segments it is given: it has no call
//! to send an ACK now, to take data while ignoring an old ACK number, or to count a
//! duplicate ACK. So the repairs ([`super::sack`], [`super::tail`], [`super::zero_window`])
//! and the guard ([`super::guard`]) say what they want, and this module makes the segment
//! that gets it and runs the interface on it ([`Inner::inject`]). Everything made here is
//! in the peer's numbers; a SYN-cookie connection's offset is applied here, nowhere else
//! on this path.

use super::device::{OnePacket, SinkTx};
use super::guard::{Arriving, Decision, GuardRule, Known};
use super::sack::{PeerSegment, same_ip};
use super::{Inner, Verdict};
use crate::flow::SocketPair;
use crate::packet::{SeqField, shift_tcp};
use etherparse::{SlicedPacket, TcpOptionElement, TransportSlice};
use smoltcp::phy::DeviceCapabilities;
use smoltcp::time::Instant;

/// How far below RCV.NXT an answer-eliciting segment starts: outside any window smoltcp
/// can have, so it answers with its ACK and changes nothing.
const FAR_BELOW: u32 = 0x4000_0000;

impl Inner {
    /// Runs the interface `times` on `packet`, a segment of our own making in the peer's
    /// numbers, for the lent socket (whose SYN-cookie offset is `seq_offset`). Nothing is
    /// observed or counted. What the socket answers (an ACK, to a segment outside its
    /// window) it believes sent, so it is sent.
    pub(super) fn inject(
        &mut self,
        now: Instant,
        mut packet: Vec<u8>,
        times: usize,
        caps: &DeviceCapabilities,
        seq_offset: u32,
    ) {
        if seq_offset != 0 {
            shift_tcp(&mut packet, SeqField::Ack, seq_offset);
        }
        let mut replies = Vec::new();
        for _ in 0..times {
            let Inner { iface, scratch, .. } = self;
            let mut one = OnePacket {
                packet: &packet,
                tx: Some(SinkTx(&mut replies)),
                caps: caps.clone(),
            };
            iface.poll_ingress_single(now, &mut one, scratch);
        }
        if seq_offset != 0 {
            for reply in &mut replies {
                shift_tcp(reply, SeqField::Seq, seq_offset.wrapping_neg());
            }
        }
        self.queue_raw(replies);
    }

    /// Asks the guard about `seg`, a segment for the data socket `seg.id` (not lent yet).
    pub(super) fn guard_check(&mut self, seg: &PeerSegment<'_>, now: Instant) -> Decision {
        let Some(tcp) = self.sockets.get_mut(seg.id.0).and_then(|e| e.tcp_mut()) else {
            return Decision::Deliver;
        };
        let Some(socket) = tcp.socket.as_ref() else {
            return Decision::Deliver;
        };
        let known = Known {
            state: socket.state(),
            rcv_wnd: (socket.recv_capacity() - socket.recv_queue()) as u32,
            last_ack_sent: tcp.sent.ack.map(|(ack, _)| ack),
        };
        let decision = tcp.guard.check(&arriving(seg), &known, now);
        let stats = &mut self.meter.stats;
        match decision {
            Decision::Deliver => {}
            Decision::Answer { limited: false, .. } => stats.tcp_guard_answers += 1,
            Decision::Answer { limited: true, .. } | Decision::Drop(_) => {
                stats.tcp_guard_drops += 1
            }
            Decision::IgnoreAck { .. } => stats.tcp_guard_acks_ignored += 1,
        }
        if decision != Decision::Deliver {
            log::debug!("tcp: {}: guard: {decision:?}", tcp.pair);
        }
        decision
    }

    /// Tells the guard what smoltcp made of `seg`, delivered to the lent socket.
    pub(super) fn guard_learn(
        &mut self,
        seg: &PeerSegment<'_>,
        before: (usize, Option<smoltcp::socket::tcp::State>),
        now: Instant,
    ) {
        let Some(tcp) = self.sockets.get_mut(seg.id.0).and_then(|e| e.tcp_mut()) else {
            return;
        };
        let Some(socket) = self.scratch.iter().find_map(|(_, s)| match s {
            smoltcp::socket::Socket::Tcp(t) => Some(t),
            _ => None,
        }) else {
            return;
        };
        let growth = socket.recv_queue().saturating_sub(before.0);
        let fin_taken = seg.flags.fin && before.1.is_some_and(|s| s != socket.state());
        let snd_max = tcp.sent.snd_max;
        tcp.guard
            .delivered(&arriving(seg), growth, fin_taken, snd_max, now);
    }

    /// Answers `seg` the way the guard decided: smoltcp is given a one-byte segment far
    /// below its window, with an acceptable ACK number (and TS.Recent as its TSval), and
    /// replies with its current ACK — SND.NXT, RCV.NXT, window, timestamps, SACK — as
    /// RFC 5961 §3.2 asks of a challenge ACK.
    pub(super) fn answer_with_ack(&mut self, now: Instant, seg: &PeerSegment<'_>) {
        let Some(tcp) = self.sockets.get(seg.id.0).and_then(|e| e.tcp()) else {
            return;
        };
        let (Some(rcv_nxt), Some(ack)) = (
            tcp.guard.rcv_nxt(),
            tcp.guard.snd_una().or(tcp.sent.snd_max),
        ) else {
            return;
        };
        let made = eliciting_segment(
            seg.packet,
            rcv_nxt.wrapping_sub(FAR_BELOW),
            ack,
            tcp.guard.ts_recent(),
        );
        if let Some(made) = made {
            self.inject(now, made, 1, seg.caps, seg.seq_offset);
        }
    }

    /// `seg` with its ACK number replaced by `ack`, into the scratch buffer (taken out
    /// of `self.rewrite`: give it back).
    pub(super) fn with_ack(&mut self, seg: &PeerSegment<'_>, ack: u32) -> Vec<u8> {
        let mut copy = std::mem::take(&mut self.rewrite);
        copy.clear();
        copy.extend_from_slice(seg.packet);
        shift_tcp(&mut copy, SeqField::Ack, ack.wrapping_sub(seg.ack));
        copy
    }
}

/// The verdict the trace shows for a segment the guard did not simply deliver.
pub(super) fn guarded_verdict(pair: SocketPair, decision: Decision) -> Option<Verdict> {
    let (rule, action) = match decision {
        Decision::Deliver => return None,
        Decision::Answer {
            rule,
            limited: false,
        } => (rule, answer_name(rule)),
        Decision::Answer {
            rule,
            limited: true,
        } => (rule, "dropped (answer rate-limited)"),
        Decision::Drop(rule) => (rule, "dropped"),
        Decision::IgnoreAck { .. } => (GuardRule::AckOld, "ACK ignored, text delivered"),
    };
    Some(Verdict::Guarded { pair, rule, action })
}

fn answer_name(rule: GuardRule) -> &'static str {
    match rule {
        GuardRule::RstNotExact | GuardRule::SynSynchronized => "dropped, challenge ACK",
        _ => "dropped, ACK",
    }
}

fn arriving(seg: &PeerSegment<'_>) -> Arriving {
    Arriving {
        flags: seg.flags,
        seq: seg.seq,
        ack: seg.ack,
        window: seg.window,
        payload_len: seg.payload_len,
        tsval: seg.options.tsval,
        wscale: seg.options.wscale,
    }
}

/// A one-byte ACK segment from the peer of `packet` (same addresses and ports) with
/// sequence number `seq`, ACK number `ack` and, when timestamps are in use, TSval `tsval`.
fn eliciting_segment(packet: &[u8], seq: u32, ack: u32, tsval: Option<u32>) -> Option<Vec<u8>> {
    let sliced = SlicedPacket::from_ip(packet).ok()?;
    let Some(TransportSlice::Tcp(tcp)) = &sliced.transport else {
        return None;
    };
    let ip = same_ip(sliced.net.as_ref()?)?;
    let ports = (tcp.source_port(), tcp.destination_port());
    let mut builder = ip.tcp(ports.0, ports.1, seq, tcp.window_size()).ack(ack);
    if let Some(tsval) = tsval {
        let timestamp = [
            TcpOptionElement::Noop,
            TcpOptionElement::Noop,
            TcpOptionElement::Timestamp(tsval, 0),
        ];
        builder = builder.options(&timestamp).ok()?;
    }
    let mut out = Vec::with_capacity(builder.size(1));
    builder.write(&mut out, &[0]).ok()?;
    Some(out)
}
