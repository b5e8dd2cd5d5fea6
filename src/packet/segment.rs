//! TCP segments the stack makes or changes itself, outside smoltcp: the handshake options of
//! a SYN, SYN and SYN-ACK segments built with etherparse, and the sequence or acknowledgment
//! number shifted in place with the checksum updated incrementally (RFC 1624).

use etherparse::{PacketBuilder, SlicedPacket, TcpHeader, TcpOptionElement, TransportSlice};
use smoltcp::wire::{IpAddress, IpEndpoint};

/// The handshake options of a SYN that outlive it: what the peer may receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynOptions {
    /// Maximum segment size, `None` when the option is absent.
    pub mss: Option<u16>,
    /// Window-scale shift, `None` when the option is absent (no scaling either way).
    pub window_scale: Option<u8>,
    /// SACK permitted.
    pub sack: bool,
}

/// The fields of one segment to build.
#[derive(Debug, Clone, Copy)]
pub struct Segment {
    /// Source address and port.
    pub src: IpEndpoint,
    /// Destination address and port.
    pub dst: IpEndpoint,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number; `Some` sets the ACK flag.
    pub ack: Option<u32>,
    /// Window field, as on the wire.
    pub window: u16,
}

/// The handshake options of a TCP SYN in `packet` (an IP packet). `None` if it is not a
/// well-formed TCP segment; unknown or broken options are skipped.
pub fn syn_options(packet: &[u8]) -> Option<SynOptions> {
    let sliced = SlicedPacket::from_ip(packet).ok()?;
    let Some(TransportSlice::Tcp(tcp)) = sliced.transport else {
        return None;
    };
    let mut options = SynOptions {
        mss: None,
        window_scale: None,
        sack: false,
    };
    for option in tcp.options_iterator().flatten() {
        match option {
            TcpOptionElement::MaximumSegmentSize(mss) => options.mss = Some(mss),
            TcpOptionElement::WindowScale(shift) => options.window_scale = Some(shift.min(14)),
            TcpOptionElement::SelectiveAcknowledgementPermitted => options.sack = true,
            _ => {}
        }
    }
    Some(options)
}

/// A SYN (or, with `segment.ack`, a SYN-ACK) carrying `options`, as an IP packet with hop
/// limit 64. `None` if the two addresses are of different families.
pub fn syn_segment(segment: &Segment, options: &SynOptions) -> Option<Vec<u8>> {
    let mut header = TcpHeader::new(
        segment.src.port,
        segment.dst.port,
        segment.seq,
        segment.window,
    );
    header.syn = true;
    if let Some(ack) = segment.ack {
        header.ack = true;
        header.acknowledgment_number = ack;
    }
    let mut elements = Vec::with_capacity(4);
    if let Some(mss) = options.mss {
        elements.push(TcpOptionElement::MaximumSegmentSize(mss));
    }
    if options.sack {
        elements.push(TcpOptionElement::SelectiveAcknowledgementPermitted);
    }
    if let Some(shift) = options.window_scale {
        elements.push(TcpOptionElement::Noop);
        elements.push(TcpOptionElement::WindowScale(shift));
    }
    header.set_options(&elements).ok()?;
    let builder = match (segment.src.addr, segment.dst.addr) {
        (IpAddress::Ipv4(src), IpAddress::Ipv4(dst)) => {
            PacketBuilder::ipv4(src.octets(), dst.octets(), 64)
        }
        (IpAddress::Ipv6(src), IpAddress::Ipv6(dst)) => {
            PacketBuilder::ipv6(src.octets(), dst.octets(), 64)
        }
        _ => return None,
    };
    let mut packet = Vec::with_capacity(80);
    builder.tcp_header(header).write(&mut packet, &[]).ok()?;
    Some(packet)
}

/// Sequence number, acknowledgment number and whether SYN and ACK are set, of the TCP
/// segment in `packet`; `None` if it is not an unfragmented TCP segment.
pub fn tcp_numbers(packet: &[u8]) -> Option<(u32, u32, bool, bool)> {
    let sliced = SlicedPacket::from_ip(packet).ok()?;
    match sliced.transport {
        Some(TransportSlice::Tcp(tcp)) => Some((
            tcp.sequence_number(),
            tcp.acknowledgment_number(),
            tcp.syn(),
            tcp.ack(),
        )),
        _ => None,
    }
}

/// Where a TCP segment sits in sequence space: its first sequence number and how many it
/// takes (payload bytes, plus one each for SYN and FIN); `None` if not a TCP segment.
/// Reads fixed header fields: it runs for every segment a socket sends.
pub fn tcp_extent(packet: &[u8]) -> Option<(u32, u32)> {
    let start = tcp_header_start(packet)?;
    let header_len = usize::from(packet.get(start + 12)? >> 4) * 4;
    let flags = *packet.get(start + 13)?;
    let ip_end = match packet.first()? >> 4 {
        4 => usize::from(read_u16(packet.get(2..4)?)),
        _ => 40 + usize::from(read_u16(packet.get(4..6)?)),
    };
    let payload = ip_end.min(packet.len()).checked_sub(start + header_len)?;
    let seq = read_u32(packet.get(start + 4..start + 8)?);
    Some((
        seq,
        payload as u32 + u32::from(flags & 0x02 != 0) + u32::from(flags & 0x01 != 0),
    ))
}

/// The 32-bit field of a TCP header to shift.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqField {
    /// The sequence number (bytes 4..8).
    Seq,
    /// The acknowledgment number (bytes 8..12).
    Ack,
}

/// Adds `delta` (wrapping) to a sequence-number field of the TCP segment in `packet` and
/// updates its checksum. Returns false, leaving the packet alone, if `packet` is not an
/// unfragmented TCP segment.
pub fn shift_tcp(packet: &mut [u8], field: SeqField, delta: u32) -> bool {
    let Some(start) = tcp_header_start(packet) else {
        return false;
    };
    let at = start
        + match field {
            SeqField::Seq => 4,
            SeqField::Ack => 8,
        };
    let (Some(value), Some(checksum)) = (
        packet.get(at..at + 4).map(read_u32),
        packet.get(start + 16..start + 18).map(read_u16),
    ) else {
        return false;
    };
    let shifted = value.wrapping_add(delta);
    let checksum = checksum_update(checksum, value, shifted);
    packet[at..at + 4].copy_from_slice(&shifted.to_be_bytes());
    packet[start + 16..start + 18].copy_from_slice(&checksum.to_be_bytes());
    true
}

/// Where the TCP header of an unfragmented TCP segment starts. The fixed IP header says so
/// for everything smoltcp sends; IPv6 extension headers take the full parse.
pub(crate) fn tcp_header_start(packet: &[u8]) -> Option<usize> {
    match fixed_transport_start(packet) {
        Some((start, PROTO_TCP)) => Some(start),
        Some(_) => None,
        None if packet.first()? >> 4 == 6 => tcp_header_start_parsed(packet),
        None => None,
    }
}

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

/// Where the TCP or UDP header of an unfragmented packet starts when it follows the fixed
/// IP header (no IPv6 extension headers), and which protocol it is; `None` for anything
/// else, or when the packet is too short for a minimal header of that protocol.
pub fn fixed_transport_start(packet: &[u8]) -> Option<(usize, u8)> {
    let version_ihl = *packet.first()?;
    let (start, protocol) = match version_ihl >> 4 {
        4 => {
            let ihl = usize::from(version_ihl & 0x0f) * 4;
            let unfragmented = packet.get(6)? & 0x3f == 0 && *packet.get(7)? == 0;
            if ihl < 20 || !unfragmented {
                return None;
            }
            (ihl, *packet.get(9)?)
        }
        6 => (40, *packet.get(6)?),
        _ => return None,
    };
    let header = match protocol {
        PROTO_TCP => 20,
        PROTO_UDP => 8,
        _ => return None,
    };
    (packet.len() >= start + header).then_some((start, protocol))
}

/// The ACK number and (unscaled) window of a TCP segment that has ACK set.
pub(crate) fn tcp_ack_window(packet: &[u8]) -> Option<(u32, u16)> {
    let start = tcp_header_start(packet)?;
    let tcp = packet.get(start..start + 20)?;
    (tcp[13] & 0x10 != 0).then(|| {
        (
            u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]),
            u16::from_be_bytes([tcp[14], tcp[15]]),
        )
    })
}

/// [`tcp_header_start`] by a full parse, for IPv6 with extension headers.
fn tcp_header_start_parsed(packet: &[u8]) -> Option<usize> {
    let sliced = SlicedPacket::from_ip(packet).ok()?;
    let Some(TransportSlice::Tcp(tcp)) = sliced.transport else {
        return None;
    };
    // The slice points into `packet`: its distance from the start is the header offset.
    (tcp.slice().as_ptr() as usize).checked_sub(packet.as_ptr() as usize)
}

fn read_u32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0, |acc, b| (acc << 8) | u32::from(*b))
}

fn read_u16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0, |acc, b| (acc << 8) | u16::from(*b))
}

/// RFC 1624 eqn. 3: the checksum after a 32-bit field changed from `old` to `new`,
/// HC' = ~(~HC + ~m + m'), summed in ones' complement over both 16-bit halves.
fn checksum_update(checksum: u16, old: u32, new: u32) -> u16 {
    let mut sum = u32::from(!checksum);
    for (old, new) in [(old >> 16, new >> 16), (old & 0xffff, new & 0xffff)] {
        sum += u32::from(!(old as u16)) + new;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{Transport, classify};
    use proptest::prelude::*;
    use smoltcp::wire::{Ipv4Address, Ipv6Address};

    /// `tcp_extent` by a full etherparse parse, to check the fixed-offset reading against.
    fn extent_parsed(packet: &[u8]) -> Option<(u32, u32)> {
        let sliced = SlicedPacket::from_ip(packet).ok()?;
        let Some(TransportSlice::Tcp(tcp)) = sliced.transport else {
            return None;
        };
        let len = tcp.payload().len() as u32 + u32::from(tcp.syn()) + u32::from(tcp.fin());
        Some((tcp.sequence_number(), len))
    }

    #[test]
    fn extent_and_header_start_agree_with_a_full_parse() {
        for v6 in [false, true] {
            for (syn, fin, payload) in [
                (true, false, 0usize),
                (false, false, 1448),
                (false, true, 3),
                (false, false, 0),
            ] {
                let builder = if v6 {
                    PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64)
                } else {
                    PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                };
                let mut tcp = builder.tcp(1, 2, 0xffff_fff0, 100);
                if syn {
                    tcp = tcp.syn();
                }
                if fin {
                    tcp = tcp.fin();
                }
                let mut packet = Vec::new();
                tcp.write(&mut packet, &vec![7; payload]).unwrap();
                assert_eq!(
                    tcp_extent(&packet),
                    extent_parsed(&packet),
                    "v6 {v6} syn {syn} fin {fin} {payload}"
                );
                assert_eq!(tcp_header_start(&packet), tcp_header_start_parsed(&packet));
            }
        }
        let mut udp = Vec::new();
        PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1, 2)
            .write(&mut udp, &[0; 30])
            .unwrap();
        assert_eq!(tcp_extent(&udp), None);
        assert_eq!(tcp_extent(&[0x45, 0, 0]), None);
    }

    fn v4(last: u8, port: u16) -> IpEndpoint {
        IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::new(192, 168, 69, last)), port)
    }

    fn v6(last: u16, port: u16) -> IpEndpoint {
        let addr = Ipv6Address::new(0xfd69, 0, 0, 0, 0, 0, 0, last);
        IpEndpoint::new(IpAddress::Ipv6(addr), port)
    }

    fn data_segment(seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
        let mut packet = Vec::new();
        PacketBuilder::ipv4([192, 168, 69, 1], [192, 168, 69, 2], 64)
            .tcp(40000, 7, seq, 1024)
            .ack(ack)
            .write(&mut packet, payload)
            .unwrap();
        packet
    }

    fn numbers(packet: &[u8]) -> (u32, u32) {
        match classify(packet).unwrap().transport {
            Transport::Tcp { seq, ack, .. } => (seq, ack),
            other => panic!("not tcp: {other:?}"),
        }
    }

    #[test]
    fn syn_ack_round_trips_its_options_in_both_families() {
        let options = SynOptions {
            mss: Some(1440),
            window_scale: Some(7),
            sack: true,
        };
        for (src, dst) in [(v4(2, 7), v4(1, 40000)), (v6(2, 7), v6(1, 40000))] {
            let segment = Segment {
                src,
                dst,
                seq: 0xdead_beef,
                ack: Some(1001),
                window: 65535,
            };
            let packet = syn_segment(&segment, &options).unwrap();
            let info = classify(&packet).unwrap();
            assert!(info.checksum_ok);
            assert_eq!(syn_options(&packet), Some(options));
            assert_eq!(tcp_numbers(&packet), Some((0xdead_beef, 1001, true, true)));
        }
        let bare = SynOptions {
            mss: None,
            window_scale: None,
            sack: false,
        };
        let segment = Segment {
            src: v4(1, 40000),
            dst: v4(2, 7),
            seq: 5,
            ack: None,
            window: 512,
        };
        let packet = syn_segment(&segment, &bare).unwrap();
        assert_eq!(syn_options(&packet), Some(bare));
        assert_eq!(tcp_numbers(&packet), Some((5, 0, true, false)));
        let mixed = Segment {
            dst: v6(2, 7),
            ..segment
        };
        assert!(syn_segment(&mixed, &bare).is_none());
    }

    #[test]
    fn shifting_wraps_and_keeps_the_checksum_valid() {
        let mut packet = data_segment(0xffff_fff0, 0x0000_0010, b"hello");
        assert!(shift_tcp(&mut packet, SeqField::Seq, 0x20));
        assert!(shift_tcp(
            &mut packet,
            SeqField::Ack,
            0u32.wrapping_sub(0x11)
        ));
        assert_eq!(numbers(&packet), (0x10, 0xffff_ffff));
        assert!(classify(&packet).unwrap().checksum_ok);
    }

    #[test]
    fn non_tcp_packets_are_left_alone() {
        let mut packet = Vec::new();
        PacketBuilder::ipv4([192, 168, 69, 1], [192, 168, 69, 2], 64)
            .udp(5000, 7)
            .write(&mut packet, b"datagram")
            .unwrap();
        let before = packet.clone();
        assert!(!shift_tcp(&mut packet, SeqField::Seq, 1));
        assert!(!shift_tcp(&mut packet[..10], SeqField::Seq, 1));
        assert_eq!(packet, before);
    }

    proptest! {
        #[test]
        fn incremental_checksum_equals_a_recomputed_one(
            seq in any::<u32>(),
            ack in any::<u32>(),
            delta in any::<u32>(),
            payload in proptest::collection::vec(any::<u8>(), 0..40),
            ack_field in any::<bool>(),
        ) {
            let mut shifted = data_segment(seq, ack, &payload);
            let field = if ack_field { SeqField::Ack } else { SeqField::Seq };
            prop_assert!(shift_tcp(&mut shifted, field, delta));
            let expected = if ack_field {
                data_segment(seq, ack.wrapping_add(delta), &payload)
            } else {
                data_segment(seq.wrapping_add(delta), ack, &payload)
            };
            prop_assert_eq!(shifted, expected);
        }
    }
}
