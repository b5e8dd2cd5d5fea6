//! A tail-loss probe for smoltcp sockets (after RFC 8985 §7).
//!
//! When the last segments of a burst are lost, nothing after them reaches the peer, so no
//! SACK block reports the hole ([`super::sack`]) and smoltcp waits for its retransmission
//! timeout: one second at least, doubling. When the peer echoes our timestamps (so the
//! round trip is known) and has acknowledged nothing for two round trips plus its
//! delayed-ACK allowance while data of ours is outstanding, the socket is fed three
//! duplicates of the peer's last ACK and fast-retransmits from the first unacknowledged
//! byte.
//!
//! The same probe resends a lost retransmission: at once when the peer SACKs data sent
//! after it but not the retransmission itself ([`super::sack`] marks it lost); otherwise
//! when a fast retransmit (from a SACK hole or a probe) has not moved the peer's ACK after
//! that long, and after twice as long the next time. [`MAX_REPEATS`] times at most; then
//! smoltcp's own timeout (with its backoff) is left to act alone.

use etherparse::PacketBuilder;
use smoltcp::phy::DeviceCapabilities;
use smoltcp::socket::tcp::State;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::IpAddress;

use super::entry::{Recovery, tsval};
use super::sack::{DUP_THRESH, PeerSegment, after, pure_ack};
use super::{Inner, TcpEntry};
use crate::flow::SocketId;

/// What the peer may take to acknowledge one segment (Linux: 40–200 ms delayed ACK).
const DELAYED_ACK_ALLOWANCE: Duration = Duration::from_millis(200);
/// Two round trips, but never less than this.
const MIN_TWO_RTT: Duration = Duration::from_millis(10);
/// Round-trip samples above this are taken for stale echoes, not round trips.
const MAX_RTT_MS: u32 = 60_000;
/// Fast retransmits started again for one ACK number whose retransmission was lost.
const MAX_REPEATS: u32 = 3;

impl Inner {
    /// Notes the peer's ACK, window and timestamp echo from `seg`.
    pub(super) fn note_peer_ack(&mut self, now: Instant, seg: &PeerSegment<'_>) {
        let Some(tcp) = self.sockets.get_mut(seg.id.0).and_then(|e| e.tcp_mut()) else {
            return;
        };
        if !seg.flags.ack || seg.flags.syn || seg.flags.rst {
            return;
        }
        if tcp.peer_ack.is_none_or(|(last, _)| after(seg.ack, last)) {
            tcp.sent.progress_at = Some(now);
        }
        tcp.peer_ack = Some((seg.ack, seg.window));
        if let Some(echo) = seg.options.tsecr.filter(|&e| e != 0) {
            let sample = tsval().wrapping_sub(echo);
            if sample <= MAX_RTT_MS {
                tcp.srtt_ms = Some(tcp.srtt_ms.map_or(sample, |s| (7 * s + sample) / 8));
            }
        }
    }

    /// When the probe for socket `id` (not lent) is due, if one is armed.
    pub(super) fn probe_at(&self, id: SocketId) -> Option<Instant> {
        let tcp = self.sockets.get(id.0)?.tcp()?;
        if !counts_duplicates(tcp.socket.as_ref()?.state()) {
            return None;
        }
        probe_at(tcp)
    }

    /// If the probe for the lent socket `id` (in `state`) is due, starts the fast
    /// retransmit (it leaves in the egress that follows).
    pub(super) fn tail_probe(
        &mut self,
        now: Instant,
        id: SocketId,
        state: Option<State>,
        caps: &DeviceCapabilities,
        seq_offset: u32,
    ) {
        if !state.is_some_and(counts_duplicates) {
            return;
        }
        let Some(tcp) = self.sockets.get_mut(id.0).and_then(|e| e.tcp_mut()) else {
            return;
        };
        if probe_at(tcp).is_none_or(|at| at > now) {
            return;
        }
        let (Some((ack, window)), Some((rcv_nxt, _))) = (tcp.peer_ack, tcp.sent.ack) else {
            return;
        };
        let repeats = match tcp.recovery {
            Some(r) if r.ack == ack => r.repeats + 1,
            _ => 0,
        };
        tcp.recovery = Some(Recovery::new(ack, now, repeats, tcp.sent.snd_max));
        let (local, remote) = (tcp.pair.local, tcp.pair.remote);
        log::debug!(
            "tcp: {}: nothing acknowledged past {ack} for two round trips; fast retransmit{}",
            tcp.pair,
            if repeats > 0 { " again" } else { "" }
        );
        self.meter.stats.tail_probes += 1;
        let builder = match (remote.addr, local.addr) {
            (IpAddress::Ipv4(from), IpAddress::Ipv4(to)) => {
                PacketBuilder::ipv4(from.octets(), to.octets(), 64)
            }
            (IpAddress::Ipv6(from), IpAddress::Ipv6(to)) => {
                PacketBuilder::ipv6(from.octets(), to.octets(), 64)
            }
            _ => return,
        };
        // A repeat must first reset smoltcp's count of duplicates (still at 3 or more from
        // the last time if the peer sent nothing since): a window other than both the peer's
        // and the last repeat's is a window update, which does; the next three are
        // duplicates. The window reads a few units short until the peer's next segment.
        let (window, times) = match repeats {
            0 => (window, DUP_THRESH),
            n => (update_window(window, n), DUP_THRESH + 1),
        };
        if let Some(dup) = pure_ack(builder, (remote.port, local.port), rcv_nxt, ack, window) {
            self.inject(now, dup, times, caps, seq_offset);
        }
    }
}

/// smoltcp fast-retransmits on duplicate ACKs in these states; in LAST-ACK it answers
/// them with challenge ACKs (so [`super::entry::TcpEntry::close`] keeps data out of it).
fn counts_duplicates(state: State) -> bool {
    matches!(
        state,
        State::Established | State::FinWait1 | State::CloseWait | State::Closing
    )
}

/// A window field for the `repeat`th repeat: not `window`, and not the last repeat's.
fn update_window(window: u16, repeat: u32) -> u16 {
    let step = 1 + (repeat % 2) as u16;
    if window > 2 {
        window - step
    } else {
        window + step
    }
}

/// While data is outstanding and the peer's window is open: at once for a retransmission
/// known to be lost; otherwise, with the round trip known, two round trips plus the
/// delayed-ACK allowance after the last progress, or after a fast retransmit from the same
/// ACK number that long after it (doubled for each repeat).
fn probe_at(tcp: &TcpEntry) -> Option<Instant> {
    let (ack, window) = tcp.peer_ack?;
    let outstanding = tcp.sent.snd_max.is_some_and(|end| after(end, ack));
    if !outstanding || window == 0 || tcp.sent.ack.is_none() {
        return None;
    }
    // Two round trips and the delayed-ACK allowance, if the round trip is known.
    let wait = tcp.srtt_ms.map(|srtt| {
        Duration::from_millis(2 * u64::from(srtt)).max(MIN_TWO_RTT) + DELAYED_ACK_ALLOWANCE
    });
    match tcp.recovery {
        Some(r) if r.ack == ack && r.repeats >= MAX_REPEATS => None,
        // A retransmission known to be lost goes again now, round trip known or not.
        Some(r) if r.ack == ack && r.lost => Some(r.at),
        Some(r) if r.ack == ack => Some(r.at + wait? * 2u32.pow(r.repeats)),
        _ => Some(tcp.sent.progress_at? + wait?),
    }
}
