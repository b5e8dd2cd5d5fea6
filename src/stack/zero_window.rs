//! The peer's ACKs while our receive window is closed (RFC 9293 §3.10.7.4: "special
//! allowance should be made to accept valid ACKs").
//!
//! smoltcp reads a segment's ACK only if the segment is acceptable, and with a zero window
//! only a zero-length segment exactly at RCV.NXT is. A peer whose next sequence number is
//! past that — it sent up to a window edge that smoltcp then pulled back by a few bytes
//! (window scaling rounds the free space down) — can then never tell us that its own window
//! opened: we wait for its window, it waits for ours, each probing the other forever. Such
//! a segment's ACK goes to the socket again, in a copy without data that starts at RCV.NXT
//! (the ACK number we last sent).

use smoltcp::time::Instant;

use super::Inner;
use super::sack::{PeerSegment, duplicate_ack};
use crate::packet::TcpFlags;

impl Inner {
    /// After the lent socket saw `seg`: if our last segment closed the window and smoltcp
    /// could not have taken this one's ACK, hands the ACK over again at RCV.NXT.
    pub(super) fn ack_at_zero_window(&mut self, now: Instant, seg: &PeerSegment<'_>) {
        let TcpFlags {
            ack: true,
            syn: false,
            rst: false,
            fin,
            ..
        } = seg.flags
        else {
            return;
        };
        let Some(tcp) = self.sockets.get(seg.id.0).and_then(|e| e.tcp()) else {
            return;
        };
        let Some((rcv_nxt, true)) = tcp.sent.ack else {
            return;
        };
        if seg.payload_len == 0 && !fin && seg.seq == rcv_nxt {
            return; // acceptable as it is
        }
        let Some(copy) = duplicate_ack(seg.packet, Some(rcv_nxt)) else {
            return;
        };
        log::debug!(
            "tcp: {}: our window is closed; the peer's ACK taken at {rcv_nxt} (its segment starts at {})",
            tcp.pair,
            seg.seq
        );
        self.inject(now, copy, 1, seg.caps, seg.seq_offset);
    }
}
