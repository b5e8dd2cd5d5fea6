//! Fast retransmit from the peer's SACK blocks, for connections where both sides send.
//!
//! smoltcp counts a duplicate ACK only when it carries no data (RFC 5681's definition, made
//! so that a peer's own data cannot pass for loss). A peer that is sending too — any echo
//! client — puts its ACKs on data segments, so smoltcp never fast-retransmits to it: each
//! lost segment of ours waits out the retransmission timeout, one second at least. Linux
//! peers say exactly what they got, in SACK blocks on those segments (smoltcp offers SACK).
//! When the blocks show more than two full segments' worth of data above the ACK, RFC 6675
//! deems the segment at the ACK lost; so do we when they cover everything we sent after it (no
//! more evidence can come: RFC 5827's early retransmit, for the last segments of a burst).
//! We tell smoltcp so in the one way it listens to: three duplicate ACKs, made from the
//! peer's segment without its data. Once per hole: if the retransmission is lost too —
//! the peer SACKs data we sent after it, but still not the hole (RFC 8985's rule) —
//! [`super::tail`]'s probe starts another at once; without such evidence, after two round
//! trips (when they are known).

use etherparse::{
    IpHeaders, PacketBuilder, PacketBuilderStep, SlicedPacket, TcpHeaderSlice, TcpOptionElement,
    TransportSlice,
};
use smoltcp::phy::DeviceCapabilities;
use smoltcp::time::Instant;

use super::Inner;
use super::entry::Recovery;
use crate::flow::SocketId;
use crate::packet::{PacketInfo, TcpFlags, Transport, tcp_header_start};

/// Duplicate ACKs that start a fast retransmit (RFC 5681, RFC 6675's DupThresh).
pub(super) const DUP_THRESH: usize = 3;

/// What a peer segment's TCP options say, read in one pass: the SACK evidence above its
/// ACK number, the echo of our timestamp (for [`super::tail`]), its own timestamp and
/// window scale (for [`super::guard`]).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct PeerOptions {
    /// Bytes the SACK blocks above the ACK cover.
    sacked: u64,
    /// The highest right edge among those blocks.
    highest: Option<u32>,
    /// The peer's echo of our timestamp (TSecr), if the option is there.
    pub tsecr: Option<u32>,
    /// The peer's own timestamp (TSval), for PAWS ([`super::guard`]).
    pub tsval: Option<u32>,
    /// The window scale the peer offers (SYN and SYN-ACK only).
    pub wscale: Option<u8>,
}

impl PeerOptions {
    /// Reads the options of `packet`, a TCP segment whose ACK number is `ack`; nothing for
    /// a segment without options (the cheap test first: every segment goes through here).
    pub(super) fn read(packet: &[u8], ack: u32) -> PeerOptions {
        let mut options = PeerOptions::default();
        let Some(start) = tcp_header_start(packet) else {
            return options;
        };
        if packet.get(start + 12).is_none_or(|offset| offset >> 4 <= 5) {
            return options;
        }
        let Some(tcp) = packet
            .get(start..)
            .and_then(|h| TcpHeaderSlice::from_slice(h).ok())
        else {
            return options;
        };
        for option in tcp.options_iterator().filter_map(Result::ok) {
            match option {
                TcpOptionElement::Timestamp(value, echo) => {
                    options.tsval = Some(value);
                    options.tsecr = Some(echo);
                }
                TcpOptionElement::WindowScale(shift) => options.wscale = Some(shift),
                TcpOptionElement::SelectiveAcknowledgement(first, rest) => {
                    // A block at or below the ACK is a D-SACK (a duplicate), no evidence.
                    let blocks = std::iter::once(first).chain(rest.into_iter().flatten());
                    for (left, right) in blocks.filter(|&(l, r)| after(l, ack) && after(r, l)) {
                        options.sacked += u64::from(right.wrapping_sub(left));
                        if options.highest.is_none_or(|h| after(right, h)) {
                            options.highest = Some(right);
                        }
                    }
                }
                _ => {}
            }
        }
        options
    }
}

/// A segment from the peer of a lent TCP socket, as the repairs on top of smoltcp need it
/// (this module, [`super::zero_window`], [`super::tail`]): read once per segment.
pub(super) struct PeerSegment<'a> {
    pub id: SocketId,
    pub packet: &'a [u8],
    pub flags: TcpFlags,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    pub payload_len: usize,
    pub options: PeerOptions,
    pub caps: &'a DeviceCapabilities,
    /// The socket's SYN-cookie offset ([`super::TcpEntry::seq_offset`]).
    pub seq_offset: u32,
}

impl<'a> PeerSegment<'a> {
    /// `packet` for the lent socket `id`, if it is a TCP segment.
    pub(super) fn read(
        id: SocketId,
        packet: &'a [u8],
        info: Option<&PacketInfo>,
        caps: &'a DeviceCapabilities,
        seq_offset: u32,
    ) -> Option<PeerSegment<'a>> {
        let Transport::Tcp {
            flags,
            seq,
            ack,
            window,
            payload_len,
            ..
        } = info?.transport
        else {
            return None;
        };
        Some(PeerSegment {
            id,
            packet,
            flags,
            seq,
            ack,
            window,
            payload_len,
            options: PeerOptions::read(packet, ack),
            caps,
            seq_offset,
        })
    }
}

/// If a segment with `flags` and ACK number `ack` shows, by its `options`, a hole at that
/// ACK number — more than [`DUP_THRESH`] − 1 segments of `mss` bytes received above it
/// (RFC 6675's IsLost: three segments that carry timestamps are 3 × 1448 bytes, less than
/// three MSS), or everything up to `snd_max` (the end of what we have sent) — that ACK
/// number.
pub(super) fn hole(
    flags: TcpFlags,
    ack: u32,
    options: &PeerOptions,
    mss: usize,
    snd_max: Option<u32>,
) -> Option<u32> {
    if !flags.ack || flags.syn || flags.fin || flags.rst {
        return None;
    }
    let all_after_it = match (snd_max, options.highest) {
        (Some(end), Some(right)) => right == end || after(right, end),
        _ => false,
    };
    (options.sacked > ((DUP_THRESH - 1) * mss) as u64 || all_after_it).then_some(ack)
}

/// The duplicate ACK `packet` stands for: the same ACK and window, no data, no options;
/// sequence number `seq`, or by default just past the data (where the peer's next segment
/// starts).
pub(super) fn duplicate_ack(packet: &[u8], seq: Option<u32>) -> Option<Vec<u8>> {
    let sliced = SlicedPacket::from_ip(packet).ok()?;
    let Some(TransportSlice::Tcp(tcp)) = &sliced.transport else {
        return None;
    };
    let seq = seq.unwrap_or_else(|| {
        tcp.sequence_number()
            .wrapping_add(tcp.payload().len() as u32)
    });
    let builder = same_ip(sliced.net.as_ref()?)?;
    let ports = (tcp.source_port(), tcp.destination_port());
    let ack = tcp.acknowledgment_number();
    pure_ack(builder, ports, seq, ack, tcp.window_size())
}

/// A packet builder with the addresses and TTL (hop limit) of the IP header `net`: for
/// segments made in the name of the peer that sent it.
pub(super) fn same_ip(net: &etherparse::NetSlice<'_>) -> Option<PacketBuilderStep<IpHeaders>> {
    match net {
        etherparse::NetSlice::Ipv4(ip) => {
            let h = ip.header();
            Some(PacketBuilder::ipv4(h.source(), h.destination(), h.ttl()))
        }
        etherparse::NetSlice::Ipv6(ip) => {
            let h = ip.header();
            Some(PacketBuilder::ipv6(
                h.source(),
                h.destination(),
                h.hop_limit(),
            ))
        }
        etherparse::NetSlice::Arp(_) => None,
    }
}

/// A TCP segment with ACK set and nothing else (no data, no options) after the IP header
/// `ip`, from port `ports.0` to `ports.1`.
pub(super) fn pure_ack(
    ip: PacketBuilderStep<IpHeaders>,
    ports: (u16, u16),
    seq: u32,
    ack: u32,
    window: u16,
) -> Option<Vec<u8>> {
    let builder = ip.tcp(ports.0, ports.1, seq, window).ack(ack);
    let mut out = Vec::with_capacity(builder.size(0));
    builder.write(&mut out, &[]).ok()?;
    Some(out)
}

impl Inner {
    /// If the peer's segment shows a hole in what we sent (its SACK blocks), makes the
    /// lent socket fast-retransmit: see [`super::sack`].
    pub(super) fn report_sack_hole(&mut self, now: Instant, seg: &PeerSegment<'_>) {
        let Some(tcp) = self.sockets.get_mut(seg.id.0).and_then(|e| e.tcp_mut()) else {
            return;
        };
        let header = if seg.packet.first().is_some_and(|v| v >> 4 == 6) {
            60
        } else {
            40
        };
        let mss = seg.caps.max_transmission_unit.saturating_sub(header).max(1);
        // One hole, told once. If the peer then SACKs data sent after the retransmission
        // but still not the hole, the retransmission is lost: the probe
        // ([`super::tail`]) starts it again at once, in the egress that follows.
        if let Some(r) = tcp.recovery.as_mut().filter(|r| r.ack == seg.ack) {
            if !r.lost
                && let (Some(end), Some(highest)) = (r.sent_end, seg.options.highest)
                && after(highest, end)
            {
                r.lost = true;
                log::debug!(
                    "tcp: {}: the retransmission of {} is lost: SACK covers data sent after it",
                    tcp.pair,
                    r.ack
                );
            }
            return;
        }
        let Some(ack) = hole(seg.flags, seg.ack, &seg.options, mss, tcp.sent.snd_max) else {
            return;
        };
        tcp.recovery = Some(Recovery::new(ack, now, 0, tcp.sent.snd_max));
        self.meter.stats.sack_recoveries += 1;
        log::debug!("tcp: {}: SACK shows {ack} lost; fast retransmit", tcp.pair);
        // smoltcp answers none of them; the retransmission leaves in egress.
        if let Some(dup) = duplicate_ack(seg.packet, None) {
            self.inject(now, dup, DUP_THRESH, seg.caps, seg.seq_offset);
        }
    }
}

/// `a` comes after `b` in sequence space (RFC 1982 serial arithmetic).
pub(super) fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: usize = 1460;

    /// [`hole`] for a whole segment, as the stack reads it.
    fn hole_in(packet: &[u8], mss: usize, snd_max: Option<u32>) -> Option<u32> {
        let info = crate::packet::classify_with(packet, crate::packet::TransportChecksum::Partial)
            .unwrap();
        let Transport::Tcp { flags, ack, .. } = info.transport else {
            panic!("not TCP");
        };
        hole(flags, ack, &PeerOptions::read(packet, ack), mss, snd_max)
    }

    fn segment(ack: u32, payload: &[u8], sack: &[(u32, u32)]) -> Vec<u8> {
        let mut options = Vec::new();
        if let Some((&first, rest)) = sack.split_first() {
            let mut more = [None; 3];
            for (slot, block) in more.iter_mut().zip(rest) {
                *slot = Some(*block);
            }
            options.push(TcpOptionElement::Noop);
            options.push(TcpOptionElement::Noop);
            options.push(TcpOptionElement::SelectiveAcknowledgement(first, more));
        }
        let builder = PacketBuilder::ipv4([192, 168, 69, 1], [192, 168, 69, 2], 64)
            .tcp(40000, 7, 5000, 501)
            .ack(ack)
            .psh()
            .options(&options)
            .unwrap();
        let mut out = Vec::new();
        builder.write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn three_segments_sacked_above_the_ack_make_a_hole() {
        let ack = 1_000_000;
        let three = (ack + MSS as u32, ack + 4 * MSS as u32);
        assert_eq!(
            hole_in(&segment(ack, b"data", &[three]), MSS, None),
            Some(ack)
        );
        // Two blocks adding up to three segments count too.
        let blocks = [
            (ack + 1000, ack + 1000 + 2 * MSS as u32),
            (ack + 9000, ack + 9000 + MSS as u32),
        ];
        assert_eq!(
            hole_in(&segment(ack, b"data", &blocks), MSS, None),
            Some(ack)
        );
    }

    #[test]
    fn three_segments_that_carry_timestamps_make_a_hole() {
        // 1448 bytes each: three are less than three MSS, more than two (RFC 6675).
        let ack = 1_000_000;
        let three = (ack + 1448, ack + 4 * 1448);
        assert_eq!(
            hole_in(&segment(ack, b"data", &[three]), MSS, None),
            Some(ack)
        );
    }

    #[test]
    fn no_hole_without_enough_evidence() {
        let ack = 1_000_000;
        let two = (ack + MSS as u32, ack + 3 * MSS as u32);
        assert_eq!(hole_in(&segment(ack, b"data", &[two]), MSS, None), None);
        assert_eq!(hole_in(&segment(ack, b"data", &[]), MSS, None), None);
        // SYN, FIN or RST segments are not duplicate ACKs.
        let mut fin = segment(ack, b"data", &[(ack + MSS as u32, ack + 4 * MSS as u32)]);
        let flags_at = 20 + 13;
        fin[flags_at] |= 0x01;
        assert_eq!(hole_in(&fin, MSS, None), None);
        // A D-SACK block (below the ACK) is a duplicate the peer got, not a hole.
        let dsack = (ack - 4 * MSS as u32, ack);
        assert_eq!(hole_in(&segment(ack, b"data", &[dsack]), MSS, None), None);
    }

    #[test]
    fn a_hole_before_the_last_segments_sent_is_one_when_all_after_it_arrived() {
        let ack = 1_000_000;
        let sent_end = ack + 3 * MSS as u32;
        let last_two = (ack + MSS as u32, sent_end);
        assert_eq!(
            hole_in(&segment(ack, b"data", &[last_two]), MSS, None),
            None
        );
        assert_eq!(
            hole_in(&segment(ack, b"data", &[last_two]), MSS, Some(sent_end)),
            Some(ack)
        );
        // Pure ACKs too (smoltcp counts them, but they may be too few).
        assert_eq!(
            hole_in(&segment(ack, b"", &[last_two]), MSS, Some(sent_end)),
            Some(ack)
        );
        // More was sent than the peer has reported: wait for more evidence.
        assert_eq!(
            hole_in(&segment(ack, b"", &[last_two]), MSS, Some(sent_end + 1)),
            None
        );
    }

    #[test]
    fn sequence_numbers_wrap() {
        let ack = u32::MAX - 100;
        let three = (
            ack.wrapping_add(MSS as u32),
            ack.wrapping_add(4 * MSS as u32),
        );
        assert_eq!(
            hole_in(&segment(ack, b"data", &[three]), MSS, None),
            Some(ack)
        );
    }

    #[test]
    fn the_duplicate_ack_keeps_ack_and_window_and_drops_the_data() {
        let ack = 1_000_000;
        let original = segment(ack, b"four", &[(ack + 10, ack + 20)]);
        let dup = duplicate_ack(&original, None).unwrap();
        let sliced = SlicedPacket::from_ip(&dup).unwrap();
        let Some(TransportSlice::Tcp(tcp)) = sliced.transport else {
            panic!("not TCP: {dup:?}");
        };
        assert_eq!(tcp.acknowledgment_number(), ack);
        assert_eq!(tcp.sequence_number(), 5004);
        assert_eq!(tcp.window_size(), 501);
        assert!(tcp.ack() && !tcp.psh() && tcp.payload().is_empty());
        assert_eq!(tcp.options().len(), 0);
        let info = crate::packet::classify(&dup).unwrap();
        assert!(info.checksum_ok, "checksums of the duplicate ACK");
        let moved = duplicate_ack(&original, Some(77)).unwrap();
        assert_eq!(
            crate::packet::tcp_numbers(&moved),
            Some((77, ack, false, true))
        );
    }
}
