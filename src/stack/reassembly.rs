//! IP reassembly in front of the interface, for both families: smoltcp 0.14 reassembles no
//! IPv6, and the flow table needs ports that only a whole packet has. Each train is an
//! etherparse `IpDefragBuf`; trains are bounded in number and age, and their buffers are
//! reused. A fragment that overlaps another of its train discards the whole train, for
//! both families (RFC 5722 §4, RFC 8200 §4.5; for IPv4 it closes the RFC 1858 §4 attack,
//! as Linux does); one that only repeats bytes already held is a duplicate, dropped alone.
//! An atomic IPv6 fragment (offset 0, M clear) is no train at all: a whole packet
//! (RFC 6946 §4), its Fragment header skipped with the other extension headers. Also
//! builds the fragments of an ICMPv6 echo reply too big for the link, which smoltcp would
//! drop.

use super::Verdict;
use crate::packet::FragmentKey;
use crate::stats::DropReason;
use etherparse::defrag::{IpDefragBuf, IpFragRange};
use etherparse::{
    IcmpEchoHeader, Icmpv6Type, IpFragOffset, IpNumber, Ipv4Header, Ipv6ExtensionSlice,
    Ipv6FragmentHeader, Ipv6Header, NetSlice, PacketBuilder, SlicedPacket, TransportSlice,
};
use smoltcp::time::{Duration, Instant};
use std::collections::HashMap;

/// Trains under reassembly at once; a new train beyond this evicts the oldest.
const MAX_TRAINS: usize = 64;

/// Buffers kept for reuse once their train is done (each up to 64 KiB).
const SPARE_BUFFERS: usize = 4;

/// What became of one inbound packet.
pub(crate) enum Reassembly {
    /// Not a fragment: process as it is.
    Whole,
    /// A fragment, held until its train is complete.
    Queued,
    /// This fragment completed a train: the whole packet (hand the buffer back with
    /// [`Reassembler::recycle`]).
    Complete(Vec<u8>),
    /// A fragment refused by rule: counted under the reason, traced with the verdict.
    Refused(DropReason, Verdict),
    /// A fragment that cannot be reassembled, and why.
    Invalid(String),
}

pub(crate) struct Reassembler {
    trains: HashMap<FragmentKey, (IpDefragBuf, Instant)>,
    timeout: Duration,
    /// Identification for fragments we send.
    next_id: u32,
    /// Payload and section buffers of finished trains, for the next ones.
    spare: Vec<Vec<u8>>,
    spare_sections: Vec<Vec<IpFragRange>>,
}

/// One fragment's place in its train, and the header to rebuild the whole packet from.
struct Piece<'a> {
    key: FragmentKey,
    offset: IpFragOffset,
    more: bool,
    payload: &'a [u8],
    header: Header,
}

enum Header {
    V4(Ipv4Header),
    V6(Ipv6Header),
}

impl Reassembler {
    pub fn new(timeout: Duration) -> Reassembler {
        Reassembler {
            trains: HashMap::with_capacity(MAX_TRAINS + 1),
            timeout,
            next_id: 0x7475_0000,
            spare: Vec::with_capacity(SPARE_BUFFERS),
            spare_sections: Vec::with_capacity(SPARE_BUFFERS),
        }
    }

    /// Takes back the buffer of a [`Reassembly::Complete`] packet.
    pub fn recycle(&mut self, mut buffer: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS {
            buffer.clear();
            self.spare.push(buffer);
        }
    }

    fn give_back(&mut self, train: IpDefragBuf) {
        let (data, mut sections) = train.take_bufs();
        self.recycle(data);
        if self.spare_sections.len() < SPARE_BUFFERS {
            sections.clear();
            self.spare_sections.push(sections);
        }
    }

    /// Adds `packet` to its train if it is a fragment.
    pub fn push(&mut self, now: Instant, packet: &[u8]) -> Reassembly {
        if !may_be_fragment(packet) {
            return Reassembly::Whole;
        }
        let piece = match piece_of(packet) {
            Ok(Some(piece)) => piece,
            Ok(None) => return Reassembly::Whole,
            Err(why) => return Reassembly::Invalid(why),
        };
        self.expire(now);
        if !self.trains.contains_key(&piece.key) && self.trains.len() >= MAX_TRAINS {
            let oldest = self
                .trains
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| *k);
            if let Some(train) = oldest.and_then(|oldest| self.trains.remove(&oldest)) {
                self.give_back(train.0);
                log::debug!("reassembly: too many trains, dropped the oldest");
            }
        }
        if !self.trains.contains_key(&piece.key) {
            let protocol = IpNumber(piece.key.protocol);
            let data = self.spare.pop().unwrap_or_default();
            let sections = self.spare_sections.pop().unwrap_or_default();
            let train = IpDefragBuf::new(protocol, data, sections);
            self.trains.insert(piece.key, (train, now));
        }
        let Some((train, _)) = self.trains.get_mut(&piece.key) else {
            return Reassembly::Queued;
        };
        if let Some(refused) = overlap(train, &piece) {
            if matches!(refused, Reassembly::Refused(DropReason::FragmentOverlap, _))
                && let Some((train, _)) = self.trains.remove(&piece.key)
            {
                self.give_back(train);
            }
            return refused;
        }
        if let Err(err) = train.add(piece.offset, piece.more, piece.payload) {
            if let Some((train, _)) = self.trains.remove(&piece.key) {
                self.give_back(train);
            }
            return Reassembly::Invalid(format!("fragment rejected: {err}"));
        }
        if !train.is_complete() {
            return Reassembly::Queued;
        }
        let Some((train, _)) = self.trains.remove(&piece.key) else {
            return Reassembly::Queued;
        };
        let mut whole = self.spare.pop().unwrap_or_default();
        let rebuilt = rebuild(piece.header, train.ip_number(), train.data(), &mut whole);
        self.give_back(train);
        match rebuilt {
            Some(()) => Reassembly::Complete(whole),
            None => {
                self.recycle(whole);
                Reassembly::Invalid("reassembled packet too large".into())
            }
        }
    }

    /// Forgets trains older than the timeout.
    pub fn expire(&mut self, now: Instant) {
        let timeout = self.timeout;
        let expired = |started: &Instant| now >= *started + timeout;
        while let Some(key) = self
            .trains
            .iter()
            .find(|(_, (_, started))| expired(started))
            .map(|(key, _)| *key)
        {
            if let Some((train, _)) = self.trains.remove(&key) {
                self.give_back(train);
            }
        }
    }

    /// If `request` is an ICMPv6 echo request larger than `mtu`, the fragments of its reply.
    pub fn echo_reply_fragments(&mut self, request: &[u8], mtu: usize) -> Option<Vec<Vec<u8>>> {
        let sliced = SlicedPacket::from_ip(request).ok()?;
        let (Some(NetSlice::Ipv6(ip)), Some(TransportSlice::Icmpv6(icmp))) =
            (&sliced.net, &sliced.transport)
        else {
            return None;
        };
        let Icmpv6Type::EchoRequest(IcmpEchoHeader { id, seq }) = icmp.icmp_type() else {
            return None;
        };
        if request.len() <= mtu {
            return None;
        }
        let header = ip.header();
        let mut reply = Vec::with_capacity(request.len());
        PacketBuilder::ipv6(header.destination(), header.source(), 64)
            .icmpv6_echo_reply(id, seq)
            .write(&mut reply, icmp.payload())
            .ok()?;
        fragment_v6(&reply, mtu, self.fragment_id())
    }

    /// A fresh identification for fragments we send.
    pub fn fragment_id(&mut self) -> u32 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }
}

/// A cheap look at the fixed header: false means surely not a fragment (the full parse
/// that follows decides otherwise). IPv4: MF set or offset non-zero; IPv6: a fragment
/// header right after the fixed header, or any extension header at all.
fn may_be_fragment(packet: &[u8]) -> bool {
    match (packet.first().map(|b| b >> 4), packet.get(6), packet.get(7)) {
        (Some(4), Some(&flags), Some(&offset_low)) => flags & 0x3f != 0 || offset_low != 0,
        (Some(6), Some(&next), _) => !matches!(next, 6 | 17 | 58),
        _ => false,
    }
}

/// The fragment fields of `packet`, `None` if it is not a fragment.
fn piece_of(packet: &[u8]) -> Result<Option<Piece<'_>>, String> {
    let sliced = SlicedPacket::from_ip(packet).map_err(|e| e.to_string())?;
    match sliced.net {
        Some(NetSlice::Ipv4(ip)) if ip.is_payload_fragmented() => {
            let h = ip.header();
            if etherparse::checksum::Sum16BitWords::new()
                .add_slice(h.slice())
                .ones_complement()
                != 0
            {
                return Err("bad ipv4 header checksum on a fragment".into());
            }
            let key = key(
                h.source().into(),
                h.destination().into(),
                h.protocol().0,
                h.identification().into(),
            );
            Ok(Some(Piece {
                key,
                offset: h.fragments_offset(),
                more: h.more_fragments(),
                payload: ip.payload().payload,
                header: Header::V4(h.to_header()),
            }))
        }
        Some(NetSlice::Ipv6(ip)) if ip.is_payload_fragmented() => {
            let h = ip.header();
            if h.next_header() != IpNumber::IPV6_FRAGMENTATION_HEADER {
                return Err("ipv6 fragment behind other extension headers".into());
            }
            let Some(frag) = ip
                .extensions()
                .clone()
                .into_iter()
                .find_map(|ext| match ext {
                    Ipv6ExtensionSlice::Fragment(f) => Some(f.to_header()),
                    _ => None,
                })
            else {
                return Err("ipv6 fragment header missing".into());
            };
            let protocol = ip.payload().ip_number.0;
            Ok(Some(Piece {
                key: key(
                    h.source().into(),
                    h.destination().into(),
                    protocol,
                    frag.identification,
                ),
                offset: frag.fragment_offset,
                more: frag.more_fragments,
                payload: ip.payload().payload,
                header: Header::V6(h.to_header()),
            }))
        }
        _ => Ok(None),
    }
}

fn key(src: std::net::IpAddr, dst: std::net::IpAddr, protocol: u8, id: u32) -> FragmentKey {
    FragmentKey {
        src: src.into(),
        dst: dst.into(),
        protocol,
        id,
    }
}

/// How a fragment relates to the bytes its train holds: `None` if it touches none of
/// them. Else a duplicate when it repeats held bytes exactly, an overlap otherwise.
fn overlap(train: &IpDefragBuf, piece: &Piece<'_>) -> Option<Reassembly> {
    let start = usize::from(piece.offset.byte_offset());
    let end = start + piece.payload.len();
    let held = train
        .sections()
        .iter()
        .find(|section| start < usize::from(section.end) && usize::from(section.start) < end)?;
    let inside = usize::from(held.start) <= start && end <= usize::from(held.end);
    if inside && train.data().get(start..end) == Some(piece.payload) {
        let verdict = Verdict::dropped(DropReason::FragmentDuplicate, String::new());
        return Some(Reassembly::Refused(DropReason::FragmentDuplicate, verdict));
    }
    Some(Reassembly::Refused(
        DropReason::FragmentOverlap,
        Verdict::FragmentOverlap,
    ))
}

/// A whole packet from a fragment's header and the reassembled payload, written to `out`.
fn rebuild(header: Header, protocol: IpNumber, payload: &[u8], out: &mut Vec<u8>) -> Option<()> {
    out.clear();
    match header {
        Header::V4(h) => {
            let whole = Ipv4Header::new(
                u16::try_from(payload.len()).ok()?,
                h.time_to_live,
                protocol,
                h.source,
                h.destination,
            )
            .ok()?;
            out.extend_from_slice(&whole.to_bytes());
        }
        Header::V6(mut h) => {
            // The only extension header was the fragment header: the payload follows.
            h.next_header = protocol;
            h.payload_length = u16::try_from(payload.len()).ok()?;
            out.extend_from_slice(&h.to_bytes());
        }
    }
    out.extend_from_slice(payload);
    Some(())
}

/// The fragments of a UDP datagram over IPv6 too big for `mtu` (smoltcp would drop it).
pub(crate) fn udp_v6_fragments(
    (src, sport): (std::net::Ipv6Addr, u16),
    (dst, dport): (std::net::Ipv6Addr, u16),
    payload: &[u8],
    mtu: usize,
    id: u32,
) -> Option<Vec<Vec<u8>>> {
    let mut packet = Vec::with_capacity(payload.len() + 48);
    PacketBuilder::ipv6(src.octets(), dst.octets(), 64)
        .udp(sport, dport)
        .write(&mut packet, payload)
        .ok()?;
    fragment_v6(&packet, mtu, id)
}

/// Splits a whole IPv6 packet (no extension headers) into fragments that fit `mtu`.
fn fragment_v6(packet: &[u8], mtu: usize, id: u32) -> Option<Vec<Vec<u8>>> {
    let (header, body) = etherparse::Ipv6Header::from_slice(packet).ok()?;
    let chunk = (mtu.checked_sub(Ipv6Header::LEN + Ipv6FragmentHeader::LEN)? / 8) * 8;
    if chunk == 0 {
        return None;
    }
    let mut fragments = Vec::new();
    for (i, part) in body.chunks(chunk).enumerate() {
        let offset = IpFragOffset::try_new(u16::try_from(i * chunk / 8).ok()?).ok()?;
        let more = (i + 1) * chunk < body.len();
        let frag = Ipv6FragmentHeader::new(header.next_header, offset, more, id);
        let mut h = header.clone();
        h.next_header = IpNumber::IPV6_FRAGMENTATION_HEADER;
        h.payload_length = u16::try_from(Ipv6FragmentHeader::LEN + part.len()).ok()?;
        let mut out = Vec::with_capacity(Ipv6Header::LEN + Ipv6FragmentHeader::LEN + part.len());
        h.write(&mut out).ok()?;
        out.extend_from_slice(&frag.to_bytes());
        out.extend_from_slice(part);
        fragments.push(out);
    }
    Some(fragments)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp6(payload_len: usize) -> Vec<u8> {
        let payload: Vec<u8> = (0..payload_len).map(|i| i as u8).collect();
        let mut packet = Vec::new();
        PacketBuilder::ipv6(
            [0xfd, 0x69, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            [0xfd, 0x69, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            64,
        )
        .udp(5000, 7)
        .write(&mut packet, &payload)
        .unwrap();
        packet
    }

    #[test]
    fn our_ipv6_fragments_reassemble_to_the_original_in_any_order() {
        let whole = udp6(4000);
        let mut fragments = fragment_v6(&whole, 1500, 9).unwrap();
        assert_eq!(fragments.len(), 3);
        assert!(fragments.iter().all(|f| f.len() <= 1500));
        fragments.reverse();
        let mut r = Reassembler::new(Duration::from_secs(10));
        let now = Instant::ZERO;
        assert!(matches!(r.push(now, &fragments[0]), Reassembly::Queued));
        assert!(matches!(r.push(now, &fragments[1]), Reassembly::Queued));
        match r.push(now, &fragments[2]) {
            Reassembly::Complete(packet) => assert_eq!(packet, whole),
            _ => panic!("not reassembled"),
        }
        assert!(r.trains.is_empty());
    }

    #[test]
    fn the_quick_check_never_misses_a_fragment() {
        let whole = udp6(4000);
        for f in fragment_v6(&whole, 1500, 3).unwrap() {
            assert!(may_be_fragment(&f));
        }
        assert!(!may_be_fragment(&udp6(10)));
        let mut v4 = Vec::new();
        PacketBuilder::ipv4([1, 2, 3, 4], [5, 6, 7, 8], 64)
            .udp(1, 2)
            .write(&mut v4, &[0; 8])
            .unwrap();
        assert!(!may_be_fragment(&v4));
        v4[6] |= 0x20; // MF
        assert!(may_be_fragment(&v4));
        let mut r = Reassembler::new(Duration::from_secs(10));
        assert!(
            matches!(r.push(Instant::ZERO, &v4), Reassembly::Invalid(_)),
            "header sum is now wrong"
        );
        v4[6] = 0;
        v4[7] = 1; // offset 8
        assert!(may_be_fragment(&v4));
        assert!(!may_be_fragment(&[]));
    }

    #[test]
    fn whole_packets_pass_and_trains_are_bounded_and_expire() {
        let mut r = Reassembler::new(Duration::from_secs(10));
        assert!(matches!(
            r.push(Instant::ZERO, &udp6(10)),
            Reassembly::Whole
        ));
        for id in 0..(MAX_TRAINS as u32 * 3) {
            let first = fragment_v6(&udp6(3000), 1500, id).unwrap().remove(0);
            assert!(matches!(r.push(Instant::ZERO, &first), Reassembly::Queued));
        }
        assert_eq!(r.trains.len(), MAX_TRAINS);
        let late = fragment_v6(&udp6(3000), 1500, 1_000_000).unwrap().remove(0);
        r.push(Instant::from_secs(11), &late);
        assert_eq!(r.trains.len(), 1, "expired trains must be forgotten");
    }

    #[test]
    fn big_echo_request_gets_a_fragmented_reply() {
        let mut request = Vec::new();
        PacketBuilder::ipv6([1; 16], [2; 16], 64)
            .icmpv6_echo_request(7, 1)
            .write(&mut request, &[0xab; 3000])
            .unwrap();
        let mut r = Reassembler::new(Duration::from_secs(10));
        let fragments = r.echo_reply_fragments(&request, 1500).unwrap();
        assert_eq!(fragments.len(), 3);
        let mut whole = None;
        for f in &fragments {
            if let Reassembly::Complete(p) = r.push(Instant::ZERO, f) {
                whole = Some(p);
            }
        }
        let whole = whole.expect("reply reassembles");
        let sliced = SlicedPacket::from_ip(&whole).unwrap();
        let Some(TransportSlice::Icmpv6(icmp)) = sliced.transport else {
            panic!("not icmpv6");
        };
        assert!(matches!(
            icmp.icmp_type(),
            Icmpv6Type::EchoReply(IcmpEchoHeader { id: 7, seq: 1 })
        ));
        assert_eq!(icmp.payload(), &[0xab; 3000][..]);
        assert!(
            r.echo_reply_fragments(&udp6(3000), 1500).is_none(),
            "only echo requests"
        );
    }
}
