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
use super::fragmentation::fragment_v6;
pub(crate) use super::fragmentation::udp_v6_fragments;
use crate::packet::FragmentKey;
use crate::stats::DropReason;
use etherparse::defrag::{IpDefragBuf, IpFragRange};
use etherparse::{
    IcmpEchoHeader, Icmpv6Type, IpFragOffset, IpNumber, Ipv4Header, Ipv6ExtensionSlice, Ipv6Header,
    NetSlice, PacketBuilder, SlicedPacket, TransportSlice,
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

    /// Starts the train `key` unless it is under way, evicting the oldest if there are
    /// too many.
    fn open_train(&mut self, now: Instant, key: FragmentKey) {
        if self.trains.contains_key(&key) {
            return;
        }
        if self.trains.len() >= MAX_TRAINS {
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
        let data = self.spare.pop().unwrap_or_default();
        let sections = self.spare_sections.pop().unwrap_or_default();
        let train = IpDefragBuf::new(IpNumber(key.protocol), data, sections);
        self.trains.insert(key, (train, now));
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
        self.open_train(now, piece.key);
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
    let sliced = match SlicedPacket::from_ip(packet) {
        Ok(sliced) => sliced,
        // IPv6 whose extension headers etherparse refuses: the route applies RFC 8200.
        Err(_) if packet.first().map(|b| b >> 4) == Some(6) => return Ok(None),
        Err(err) => return Err(err.to_string()),
    };
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
        Some(NetSlice::Ipv6(ip)) if ip.is_payload_fragmented() => piece_of_v6(&ip),
        _ => Ok(None),
    }
}

/// The fragment fields of a fragmented IPv6 packet.
fn piece_of_v6<'a>(ip: &etherparse::Ipv6Slice<'a>) -> Result<Option<Piece<'a>>, String> {
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
            let mut whole = Ipv4Header::new(
                u16::try_from(payload.len()).ok()?,
                h.time_to_live,
                protocol,
                h.source,
                h.destination,
            )
            .ok()?;
            whole.header_checksum = whole.calc_header_checksum();
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

#[cfg(test)]
mod tests;
