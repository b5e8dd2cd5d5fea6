//! IPv6 TCP segments joined into super-packets on the way out (what GRO does on the way in).
//!
//! smoltcp 0.14 cannot send an IPv6 segment longer than the MTU (its IPv6 dispatch drops it
//! even when it asked the device to segment it), so over IPv6 it sends MSS-sized segments,
//! one TUN write and one pass of the kernel's receive path each. Consecutive segments of
//! one flow that it sends in one turn are the pieces of one super-packet: same addresses,
//! ports, ACK, window and options, contiguous sequence numbers, all but the last exactly
//! MSS long. Joined, they cross the TUN as one write that the kernel cuts back at the MSS
//! (`GSO_TCPV6`), as it does for IPv4 segments smoltcp makes long itself.

/// Bytes of the IPv6 header.
const IPV6_HEADER: usize = 40;
const PROTO_TCP: u8 = 6;
const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;
/// The IPv6 payload length field is 16 bits.
const MAX_PAYLOAD_LEN: usize = 65535;

/// One super-packet being put together: `room` bytes for the device header, then the IPv6
/// packet (the first segment's headers, every segment's payload).
pub struct Coalescer {
    buf: Vec<u8>,
    room: usize,
    /// Segments in it; 0 when empty.
    segments: usize,
    /// Payload length of the first segment: the size the kernel cuts at.
    segment_size: usize,
    /// Payload length of the last segment.
    last_size: usize,
    /// Where the TCP header ends (and the payload starts) in the packet.
    payload_at: usize,
    /// The last segment had PSH: nothing may follow it.
    closed: bool,
}

impl Coalescer {
    /// A coalescer whose packets have `room` bytes free in front of them.
    pub fn new(room: usize) -> Coalescer {
        Coalescer {
            buf: Vec::with_capacity(room + IPV6_HEADER + MAX_PAYLOAD_LEN),
            room,
            segments: 0,
            segment_size: 0,
            last_size: 0,
            payload_at: 0,
            closed: false,
        }
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.segments == 0
    }

    /// Takes `packet` in, starting a super-packet or extending the one waiting. False if
    /// it cannot be part of it (then write what is waiting, and try again) or is not an
    /// IPv6 TCP data segment at all.
    pub fn push(&mut self, packet: &[u8]) -> bool {
        let Some(segment) = Segment::parse(packet) else {
            return false;
        };
        if self.segments == 0 {
            self.buf.clear();
            self.buf.resize(self.room, 0);
            self.buf.extend_from_slice(packet);
            self.segments = 1;
            self.segment_size = segment.payload_len;
            self.last_size = segment.payload_len;
            self.payload_at = segment.payload_at;
            self.closed = segment.flags & TCP_PSH != 0;
            return true;
        }
        if !self.joins(packet, &segment) {
            return false;
        }
        self.buf.extend_from_slice(&packet[segment.payload_at..]);
        self.segments += 1;
        self.last_size = segment.payload_len;
        if segment.flags & TCP_PSH != 0 {
            let flags = self.room + IPV6_HEADER + 13;
            self.buf[flags] |= TCP_PSH;
            self.closed = true;
        }
        let payload_len = (self.buf.len() - self.room - IPV6_HEADER) as u16;
        self.buf[self.room + 4..self.room + 6].copy_from_slice(&payload_len.to_be_bytes());
        true
    }

    fn joins(&self, packet: &[u8], segment: &Segment) -> bool {
        let first = &self.buf[self.room..];
        let (tcp, first_tcp) = (&packet[IPV6_HEADER..], &first[IPV6_HEADER..]);
        let payload_so_far = self.buf.len() - self.room - self.payload_at;
        let first_seq =
            u32::from_be_bytes([first_tcp[4], first_tcp[5], first_tcp[6], first_tcp[7]]);
        let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
        !self.closed
            && self.last_size == self.segment_size
            && segment.payload_len <= self.segment_size
            && segment.payload_at == self.payload_at
            && self.buf.len() - self.room - IPV6_HEADER + segment.payload_len <= MAX_PAYLOAD_LEN
            && seq == first_seq.wrapping_add(payload_so_far as u32)
            // Version, class, flow label; next header, hop limit; both addresses.
            && packet[..4] == first[..4]
            && packet[6..IPV6_HEADER] == first[6..IPV6_HEADER]
            // Ports; ACK number; header length; window; urgent pointer; options.
            && tcp[..4] == first_tcp[..4]
            && tcp[8..13] == first_tcp[8..13]
            && segment.flags & !TCP_PSH == first_tcp[13]
            && tcp[14..16] == first_tcp[14..16]
            && tcp[18..segment.payload_at - IPV6_HEADER]
                == first_tcp[18..segment.payload_at - IPV6_HEADER]
    }

    /// The waiting super-packet (with `room` bytes in front) and the size the kernel is to
    /// cut its payload at (`None` for a lone segment); empties the coalescer.
    pub fn take(&mut self) -> Option<(&mut [u8], Option<u16>)> {
        if self.segments == 0 {
            return None;
        }
        let size = (self.segments > 1).then_some(self.segment_size as u16);
        self.segments = 0;
        Some((&mut self.buf[..], size))
    }
}

/// What [`Coalescer::push`] needs of a segment.
struct Segment {
    payload_at: usize,
    payload_len: usize,
    flags: u8,
}

impl Segment {
    /// An IPv6 TCP segment with data and no extension headers, flags ACK (and maybe PSH).
    fn parse(packet: &[u8]) -> Option<Segment> {
        if packet.len() < IPV6_HEADER + 20 || packet[0] >> 4 != 6 || packet[6] != PROTO_TCP {
            return None;
        }
        let declared = usize::from(u16::from_be_bytes([packet[4], packet[5]]));
        let header_len = usize::from(packet[IPV6_HEADER + 12] >> 4) * 4;
        let payload_at = IPV6_HEADER + header_len;
        let flags = packet[IPV6_HEADER + 13];
        let ok = declared == packet.len() - IPV6_HEADER
            && header_len >= 20
            && payload_at < packet.len()
            && flags & !TCP_PSH == TCP_ACK
            // An urgent pointer is not cut by segmentation offload.
            && packet[IPV6_HEADER + 18..IPV6_HEADER + 20] == [0, 0];
        ok.then_some(Segment {
            payload_at,
            payload_len: packet.len() - payload_at,
            flags,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

    const MSS: usize = 1440;

    fn segment(seq: u32, len: usize, psh: bool) -> Vec<u8> {
        let mut builder = PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64)
            .tcp(7, 40000, seq, 1000)
            .ack(77);
        if psh {
            builder = builder.psh();
        }
        let payload: Vec<u8> = (0..len).map(|i| (seq as usize + i) as u8).collect();
        let mut out = Vec::new();
        builder.write(&mut out, &payload).unwrap();
        out
    }

    fn parsed(packet: &[u8]) -> (u32, Vec<u8>, bool) {
        let sliced = SlicedPacket::from_ip(packet).unwrap();
        let Some(TransportSlice::Tcp(tcp)) = sliced.transport else {
            panic!("not TCP");
        };
        (tcp.sequence_number(), tcp.payload().to_vec(), tcp.psh())
    }

    #[test]
    fn consecutive_segments_become_one_packet_with_every_byte_in_order() {
        let mut c = Coalescer::new(10);
        assert!(c.push(&segment(1000, MSS, false)));
        assert!(c.push(&segment(1000 + MSS as u32, MSS, false)));
        assert!(c.push(&segment(1000 + 2 * MSS as u32, 100, true)));
        // PSH ends it.
        assert!(!c.push(&segment(1000 + 2 * MSS as u32 + 100, MSS, false)));
        let (frame, size) = c.take().unwrap();
        assert_eq!(size, Some(MSS as u16));
        let (seq, payload, psh) = parsed(&frame[10..]);
        assert_eq!(seq, 1000);
        assert!(psh);
        let expected: Vec<u8> = (0..2 * MSS + 100).map(|i| (1000 + i) as u8).collect();
        assert_eq!(payload, expected);
        assert!(c.is_empty() && c.take().is_none());
    }

    #[test]
    fn a_lone_segment_is_written_as_it_is() {
        let mut c = Coalescer::new(0);
        let one = segment(5, 300, true);
        assert!(c.push(&one));
        let (frame, size) = c.take().unwrap();
        assert_eq!(size, None);
        assert_eq!(&frame[..], &one[..]);
    }

    #[test]
    fn what_does_not_fit_is_refused() {
        let mut c = Coalescer::new(0);
        assert!(!c.push(&segment(1, 0, false)), "no data");
        let mut ipv4 = Vec::new();
        PacketBuilder::ipv4([1; 4], [2; 4], 64)
            .tcp(7, 9, 1, 100)
            .ack(1)
            .write(&mut ipv4, &[1; 10])
            .unwrap();
        assert!(!c.push(&ipv4), "IPv4");
        assert!(c.push(&segment(1000, MSS, false)));
        assert!(
            !c.push(&segment(1000 + MSS as u32 + 1, MSS, false)),
            "a gap"
        );
        assert!(!c.push(&segment(1000, MSS, false)), "a repeat");
        assert!(
            !c.push(&segment(1000 + MSS as u32, MSS + 1, false)),
            "longer"
        );
        let mut other_ack = segment(1000 + MSS as u32, MSS, false);
        other_ack[IPV6_HEADER + 11] ^= 1;
        assert!(!c.push(&other_ack), "another ACK number");
        assert!(c.push(&segment(1000 + MSS as u32, 10, false)));
        assert!(
            !c.push(&segment(1000 + MSS as u32 + 10, 10, false)),
            "after a short one"
        );
    }

    /// Segments one turn sends back to back, as TunTx pushes them: what leaves, as the
    /// number of segments the kernel cuts each written packet into (1: written as it is).
    fn turn(segments: usize, last_len: usize) -> Vec<usize> {
        let mut c = Coalescer::new(0);
        let mut written = Vec::new();
        let mut write = |c: &mut Coalescer| {
            if let Some((frame, size)) = c.take() {
                let payload = frame.len() - IPV6_HEADER - 20;
                written.push(size.map_or(1, |s| payload.div_ceil(usize::from(s))));
            }
        };
        for i in 0..segments {
            let len = if i + 1 == segments { last_len } else { MSS };
            let packet = segment(1000 + (i * MSS) as u32, len, i + 1 == segments);
            if !c.push(&packet) {
                write(&mut c);
                assert!(c.push(&packet), "an empty coalescer takes any data segment");
            }
        }
        write(&mut c);
        written
    }

    #[test]
    fn a_turn_leaves_in_as_few_packets_as_the_length_field_allows() {
        assert_eq!(turn(1, 100), [1], "a lone segment is not a super-packet");
        assert_eq!(turn(2, MSS), [2]);
        assert_eq!(turn(3, 100), [3]);
        assert_eq!(turn(45, MSS), [45]);
        // 45 MSS-long segments nearly fill the 16-bit length field: a short one still fits,
        // a long one starts the next packet.
        assert_eq!(turn(46, 100), [46]);
        assert_eq!(turn(46, MSS), [45, 1]);
        assert_eq!(turn(47, MSS), [45, 2]);
        assert_eq!(turn(100, 7), [45, 45, 10]);
    }

    #[test]
    fn a_super_packet_stays_within_the_ipv6_length_field() {
        let mut c = Coalescer::new(0);
        let mut seq = 0u32;
        let mut taken = 0;
        while c.push(&segment(seq, MSS, false)) {
            seq += MSS as u32;
            taken += 1;
            assert!(taken < 100, "never full");
        }
        assert_eq!(taken, MAX_PAYLOAD_LEN / MSS);
        let (frame, _) = c.take().unwrap();
        assert!(frame.len() - IPV6_HEADER <= MAX_PAYLOAD_LEN);
    }
}
