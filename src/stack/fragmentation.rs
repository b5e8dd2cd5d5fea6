//! The IP fragments the stack sends itself: smoltcp 0.14 fragments no IPv6, so a UDP
//! datagram or an ICMPv6 echo reply too big for the link is split here.

use etherparse::{IpFragOffset, IpNumber, Ipv6FragmentHeader, Ipv6Header, PacketBuilder};

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
pub(super) fn fragment_v6(packet: &[u8], mtu: usize, id: u32) -> Option<Vec<Vec<u8>>> {
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
