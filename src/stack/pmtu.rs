//! Path MTU discovery for TCP (RFC 1191 for IPv4, RFC 8201 for IPv6): an ICMP
//! "fragmentation needed" or ICMPv6 "packet too big" that quotes one of our segments
//! lowers the MTU towards that destination, and egress cuts that flow's segments to fit.
//!
//! smoltcp 0.14 ignores both messages and has no way to lower a live socket's MSS (it is
//! `remote_mss`, set from the SYN, `socket/tcp.rs`), so the cut happens below it: a device
//! with offloads is asked to segment at the smaller size, any other gets the segment
//! split here into several (same ACK, window and options; PSH and FIN on the last).

use super::sack::after;
use super::{Inner, Verdict};
use crate::flow::{SocketId, SocketPair};
use etherparse::{IpNumber, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{IpAddress, IpEndpoint};
use std::collections::HashMap;

/// Destinations remembered; a new one beyond this replaces the oldest.
const MAX_ENTRIES: usize = 1024;

/// An estimate is forgotten after this long (RFC 1191 §6.3 and RFC 8201 §4 suggest 10
/// minutes; Linux's `mtu_expires` is the same), so a path that grew is found again.
const LIFETIME: Duration = Duration::from_secs(600);

/// The lowest IPv4 path MTU taken from an ICMP message. RFC 1191 allows 68; Linux's
/// `min_pmtu` is 552, so that a forged message cannot make us send tiny segments.
pub(crate) const MIN_IPV4: u16 = 552;
/// IPv6 links carry at least 1280 bytes (RFC 8200 §5): a smaller "MTU" is not taken.
pub(crate) const MIN_IPV6: u16 = 1280;

/// What an ICMP error says about the path to `destination`, for the segment it quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooBig {
    /// The socket pair of our quoted segment.
    pub pair: SocketPair,
    /// The destination of our quoted packet.
    pub destination: IpAddress,
    /// The MTU the message reports, raised to the floor of its family.
    pub mtu: u16,
    /// The sequence number of our quoted TCP segment.
    pub seq: u32,
}

/// Reads an ICMP "fragmentation needed" (type 3 code 4) or ICMPv6 "packet too big"
/// (type 2) that quotes a TCP segment; `None` for anything else.
pub(crate) fn too_big(packet: &[u8]) -> Option<TooBig> {
    let sliced = SlicedPacket::from_ip(packet).ok()?;
    let (mtu, quoted, floor) = match sliced.transport.as_ref()? {
        TransportSlice::Icmpv4(icmp) => {
            let bytes = icmp.slice();
            if bytes.first() != Some(&3) || bytes.get(1) != Some(&4) {
                return None;
            }
            let mtu = u16::from_be_bytes([*bytes.get(6)?, *bytes.get(7)?]);
            (u32::from(mtu), icmp.payload(), MIN_IPV4)
        }
        TransportSlice::Icmpv6(icmp) => {
            let bytes = icmp.slice();
            if bytes.first() != Some(&2) {
                return None;
            }
            let mtu = u32::from_be_bytes([
                *bytes.get(4)?,
                *bytes.get(5)?,
                *bytes.get(6)?,
                *bytes.get(7)?,
            ]);
            (mtu, icmp.payload(), MIN_IPV6)
        }
        _ => return None,
    };
    let (source, destination, tcp) = quoted_tcp(quoted)?;
    let port = |at: usize| Some(u16::from_be_bytes([*tcp.get(at)?, *tcp.get(at + 1)?]));
    let seq = u32::from_be_bytes([*tcp.get(4)?, *tcp.get(5)?, *tcp.get(6)?, *tcp.get(7)?]);
    let mtu = u16::try_from(mtu).unwrap_or(u16::MAX).max(floor);
    Some(TooBig {
        pair: SocketPair {
            local: IpEndpoint::new(source, port(0)?),
            remote: IpEndpoint::new(destination, port(2)?),
        },
        destination,
        mtu,
        seq,
    })
}

/// The source, destination and TCP header bytes (at least 8) of a quoted packet.
fn quoted_tcp(quoted: &[u8]) -> Option<(IpAddress, IpAddress, &[u8])> {
    match quoted.first()? >> 4 {
        4 => {
            let header = etherparse::Ipv4HeaderSlice::from_slice(quoted).ok()?;
            let rest = quoted.get(header.slice().len()..)?;
            (header.protocol() == IpNumber::TCP && rest.len() >= 8).then(|| {
                let source = IpAddress::Ipv4(header.source().into());
                (source, IpAddress::Ipv4(header.destination().into()), rest)
            })
        }
        6 => {
            let header = etherparse::Ipv6HeaderSlice::from_slice(quoted).ok()?;
            let rest = quoted.get(header.slice().len()..)?;
            (header.next_header() == IpNumber::TCP && rest.len() >= 8).then(|| {
                let source = IpAddress::Ipv6(header.source().into());
                (source, IpAddress::Ipv6(header.destination().into()), rest)
            })
        }
        _ => None,
    }
}

impl Inner {
    /// An ICMP "fragmentation needed" / "packet too big" for one of our connections,
    /// quoting a segment still in flight (SND.UNA ≤ seq < SND.MAX: a forged or stale
    /// message changes nothing, RFC 5927 §4.1), lowers the path MTU towards its peer.
    /// Returns the verdict for the trace when the message was about TCP.
    pub(super) fn path_mtu_message(&mut self, packet: &[u8]) -> Option<Verdict> {
        let message = too_big(packet)?;
        let id = self.flows.tcp(&message.pair)?;
        let tcp = self.sockets.get(id.0)?.tcp()?;
        let in_flight = match (tcp.guard.snd_una(), tcp.sent.snd_max) {
            (Some(una), Some(max)) => !after(una, message.seq) && after(max, message.seq),
            (None, Some(max)) => after(max, message.seq),
            _ => false,
        };
        if !in_flight {
            return Some(Verdict::PathMtu {
                pair: message.pair,
                mtu: message.mtu,
                taken: false,
            });
        }
        let link = self.config.mtu;
        let taken = self
            .path_mtus
            .lower(message.destination, message.mtu, link, self.now);
        if taken {
            self.meter.stats.path_mtu_updates += 1;
            log::info!("tcp: {}: path MTU now {}", message.pair, message.mtu);
            self.mark_dirty(id);
        }
        Some(Verdict::PathMtu {
            pair: message.pair,
            mtu: message.mtu,
            taken,
        })
    }

    /// The path MTU towards the peer of TCP socket `id`, if lower than the link's.
    pub(super) fn path_mtu_of(&self, id: SocketId, now: Instant) -> Option<usize> {
        let tcp = self.sockets.get(id.0)?.tcp()?;
        let mtu = usize::from(self.path_mtus.get(tcp.pair.remote.addr, now)?);
        (mtu < self.config.mtu).then_some(mtu)
    }
}

/// The path MTU estimates: destination → (MTU, when learnt).
#[derive(Debug, Default)]
pub(crate) struct PathMtus {
    entries: HashMap<IpAddress, (u16, Instant)>,
}

impl PathMtus {
    /// Takes `mtu` for `destination` if it is lower than what the link (`link_mtu`) or an
    /// earlier message allows. Returns true if the estimate went down.
    pub fn lower(
        &mut self,
        destination: IpAddress,
        mtu: u16,
        link_mtu: usize,
        now: Instant,
    ) -> bool {
        let current = self.get(destination, now).map_or(link_mtu, usize::from);
        if usize::from(mtu) >= current {
            return false;
        }
        if !self.entries.contains_key(&destination) && self.entries.len() >= MAX_ENTRIES {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(destination, (mtu, now));
        true
    }

    /// The estimate towards `destination`, unless none was learnt or it expired.
    pub fn get(&self, destination: IpAddress, now: Instant) -> Option<u16> {
        let &(mtu, at) = self.entries.get(&destination)?;
        (now < at + LIFETIME).then_some(mtu)
    }
}

/// The length of the IP and TCP headers of the TCP segment `packet`.
pub(crate) fn tcp_headers_len(packet: &[u8]) -> Option<usize> {
    let start = crate::packet::tcp_header_start(packet)?;
    Some(start + usize::from(packet.get(start + 12)? >> 4) * 4)
}

/// The TCP segment `packet` cut into packets of at most `mtu` bytes: the same headers
/// with sequence numbers advanced, PSH and FIN only on the last. `None` if it is not a
/// TCP segment that needs (or allows) cutting: it then goes as it is.
pub(crate) fn split_segment(packet: &[u8], mtu: usize) -> Option<Vec<Vec<u8>>> {
    if packet.len() <= mtu {
        return None;
    }
    let sliced = SlicedPacket::from_ip(packet).ok()?;
    let Some(TransportSlice::Tcp(tcp)) = &sliced.transport else {
        return None;
    };
    let (ip_len, addresses) = match sliced.net.as_ref()? {
        NetSlice::Ipv4(ip) => {
            let h = ip.header();
            (
                h.slice().len(),
                Addresses::V4(h.source(), h.destination(), h.ttl()),
            )
        }
        NetSlice::Ipv6(ip) if ip.extensions().is_empty() => {
            let h = ip.header();
            let addresses = Addresses::V6(h.source(), h.destination(), h.hop_limit());
            (h.slice().len(), addresses)
        }
        _ => return None,
    };
    let chunk = mtu.checked_sub(ip_len + tcp.slice().len() - tcp.payload().len())?;
    if chunk == 0 || tcp.syn() {
        return None;
    }
    let payload = tcp.payload();
    let pieces = payload.len().div_ceil(chunk);
    let mut out = Vec::with_capacity(pieces);
    for (i, part) in payload.chunks(chunk).enumerate() {
        let last = i + 1 == pieces;
        let seq = tcp.sequence_number().wrapping_add((i * chunk) as u32);
        let mut step = addresses.builder().tcp(
            tcp.source_port(),
            tcp.destination_port(),
            seq,
            tcp.window_size(),
        );
        if tcp.ack() {
            step = step.ack(tcp.acknowledgment_number());
        }
        if last && tcp.psh() {
            step = step.psh();
        }
        if last && tcp.fin() {
            step = step.fin();
        }
        let step = step.options_raw(tcp.options()).ok()?;
        let mut piece = Vec::with_capacity(step.size(part.len()));
        step.write(&mut piece, part).ok()?;
        out.push(piece);
    }
    Some(out)
}

/// The IP header fields a cut piece repeats.
enum Addresses {
    V4([u8; 4], [u8; 4], u8),
    V6([u8; 16], [u8; 16], u8),
}

impl Addresses {
    fn builder(&self) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
        match *self {
            Addresses::V4(src, dst, ttl) => PacketBuilder::ipv4(src, dst, ttl),
            Addresses::V6(src, dst, hop_limit) => PacketBuilder::ipv6(src, dst, hop_limit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(payload_len: usize, fin: bool) -> Vec<u8> {
        let mut builder = PacketBuilder::ipv4([192, 168, 69, 2], [192, 168, 69, 1], 64)
            .tcp(7, 40000, 1000, 512)
            .ack(77)
            .psh();
        if fin {
            builder = builder.fin();
        }
        let payload: Vec<u8> = (0..payload_len).map(|i| i as u8).collect();
        let mut out = Vec::new();
        builder.write(&mut out, &payload).unwrap();
        out
    }

    #[test]
    fn a_segment_is_cut_to_the_path_mtu_with_psh_and_fin_on_the_last() {
        let pieces = split_segment(&segment(2000, true), 1000).unwrap();
        assert_eq!(pieces.len(), 3);
        let mut next = 1000u32;
        let mut data = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            assert!(piece.len() <= 1000);
            let sliced = SlicedPacket::from_ip(piece).unwrap();
            let Some(TransportSlice::Tcp(tcp)) = sliced.transport else {
                panic!("not tcp");
            };
            assert_eq!(tcp.sequence_number(), next);
            assert_eq!(tcp.acknowledgment_number(), 77);
            let last = i == 2;
            assert_eq!((tcp.psh(), tcp.fin()), (last, last));
            next += tcp.payload().len() as u32;
            data.extend_from_slice(tcp.payload());
        }
        assert_eq!(data, (0..2000).map(|i| i as u8).collect::<Vec<_>>());
        assert!(split_segment(&segment(900, false), 1000).is_none());
    }

    #[test]
    fn estimates_only_go_down_have_floors_and_expire() {
        let mut mtus = PathMtus::default();
        let dst = IpAddress::v4(192, 168, 69, 1);
        let now = Instant::from_secs(1);
        assert!(!mtus.lower(dst, 1500, 1500, now));
        assert!(mtus.lower(dst, 1000, 1500, now));
        assert!(!mtus.lower(dst, 1200, 1500, now));
        assert_eq!(mtus.get(dst, now), Some(1000));
        assert_eq!(mtus.get(dst, now + LIFETIME), None);
    }

    #[test]
    fn frag_needed_quoting_our_segment_is_read_with_the_floor_applied() {
        let ours = segment(100, false);
        let mut icmp = Vec::new();
        let header = etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 300 },
        );
        PacketBuilder::ipv4([192, 168, 69, 1], [192, 168, 69, 2], 64)
            .icmpv4(header)
            .write(&mut icmp, &ours[..48])
            .unwrap();
        let read = too_big(&icmp).unwrap();
        assert_eq!(read.destination, IpAddress::v4(192, 168, 69, 1));
        assert_eq!((read.mtu, read.seq), (MIN_IPV4, 1000));
    }
}
