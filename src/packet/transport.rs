//! The transport layer of a classified packet: TCP/UDP/ICMP fields, the flow an ICMP error
//! quotes, and transport checksums (with the pseudo-header) verified with etherparse's sums.

use super::{Malformed, QuotedFlow, TcpFlags, Transport};
use etherparse::{IpNumber, TcpHeaderSlice, TransportSlice, UdpSlice, checksum::Sum16BitWords};
use smoltcp::wire::{IpAddress, Ipv4Address, Ipv6Address};

/// Transport view of an unfragmented packet, and whether its checksum verifies (true
/// without looking unless `verify`).
pub(super) fn whole_transport(
    transport: Option<&TransportSlice<'_>>,
    protocol: u8,
    src: IpAddress,
    dst: IpAddress,
    verify: bool,
) -> Result<(Transport, bool), Malformed> {
    let Some(transport) = transport else {
        return match protocol {
            6 | 17 | 1 | 58 => Err(Malformed(format!(
                "truncated ip protocol {protocol} header"
            ))),
            other => Ok((Transport::Other(other), true)),
        };
    };
    let segment = match transport {
        TransportSlice::Tcp(tcp) => tcp.slice(),
        TransportSlice::Udp(udp) => udp.slice(),
        TransportSlice::Icmpv4(icmp) => icmp.slice(),
        TransportSlice::Icmpv6(icmp) => icmp.slice(),
        TransportSlice::Igmp(igmp) => igmp.slice(),
    };
    let view = match transport {
        TransportSlice::Tcp(tcp) => {
            smoltcp_accepts_tcp(tcp.slice(), src, dst)?;
            match TcpHeaderSlice::from_slice(tcp.header_slice()) {
                Ok(header) => tcp_view(&header, tcp.payload().len()),
                Err(err) => return Err(Malformed(err.to_string())),
            }
        }
        TransportSlice::Udp(udp) => Transport::Udp {
            src_port: udp.source_port(),
            dst_port: udp.destination_port(),
            payload_len: udp.payload().len(),
        },
        TransportSlice::Icmpv4(icmp) => icmp_view(icmp.type_u8(), icmp.code_u8(), icmp.payload()),
        TransportSlice::Icmpv6(icmp) => icmp_view(icmp.type_u8(), icmp.code_u8(), icmp.payload()),
        TransportSlice::Igmp(_) => Transport::Other(protocol),
    };
    let ok = match transport {
        _ if !verify => true,
        TransportSlice::Udp(udp)
            if udp.checksum() == 0 && src.version() == smoltcp::wire::IpVersion::Ipv4 =>
        {
            true
        }
        TransportSlice::Icmpv4(_) | TransportSlice::Igmp(_) => {
            Sum16BitWords::new().add_slice(segment).ones_complement() == 0
        }
        _ => {
            pseudo_header_sum(src, dst, protocol, segment.len())
                .add_slice(segment)
                .ones_complement()
                == 0
        }
    };
    Ok((view, ok))
}

/// smoltcp silently ignores a segment its parser rejects (bad options, ...): run that
/// same parser here, so such a segment is counted and described instead of costing a socket.
fn smoltcp_accepts_tcp(segment: &[u8], src: IpAddress, dst: IpAddress) -> Result<(), Malformed> {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{TcpPacket, TcpRepr};
    let packet =
        TcpPacket::new_checked(segment).map_err(|_| Malformed("tcp header truncated".into()))?;
    TcpRepr::parse(&packet, &src, &dst, &ChecksumCapabilities::ignored())
        .map(|_| ())
        .map_err(|_| Malformed("tcp header or options rejected".into()))
}

fn tcp_view(tcp: &TcpHeaderSlice<'_>, payload_len: usize) -> Transport {
    Transport::Tcp {
        src_port: tcp.source_port(),
        dst_port: tcp.destination_port(),
        flags: TcpFlags {
            syn: tcp.syn(),
            ack: tcp.ack(),
            fin: tcp.fin(),
            rst: tcp.rst(),
            psh: tcp.psh(),
        },
        seq: tcp.sequence_number(),
        ack: tcp.acknowledgment_number(),
        window: tcp.window_size(),
        payload_len,
    }
}

/// Transport view of a first fragment: ports only, no checksum (it covers the whole datagram).
pub(super) fn first_fragment_transport(protocol: u8, payload: &[u8]) -> Transport {
    match protocol {
        6 => match TcpHeaderSlice::from_slice(payload) {
            Ok(tcp) => tcp_view(&tcp, payload.len().saturating_sub(tcp.slice().len())),
            Err(_) => Transport::Fragment,
        },
        17 => match UdpSlice::from_slice_lax(payload) {
            Ok(udp) => Transport::Udp {
                src_port: udp.source_port(),
                dst_port: udp.destination_port(),
                payload_len: usize::from(udp.length()).saturating_sub(8),
            },
            Err(_) => Transport::Fragment,
        },
        _ => Transport::Fragment,
    }
}

fn icmp_view(icmp_type: u8, code: u8, payload: &[u8]) -> Transport {
    // Destination unreachable (v4: 3, v6: 1) and time exceeded (11 / 3) quote our packet.
    let is_error = matches!(icmp_type, 1 | 3 | 11);
    Transport::Icmp {
        icmp_type,
        code,
        quoted: if is_error { quoted_flow(payload) } else { None },
    }
}

/// Reads the socket pair out of the packet an ICMP error quotes (header + 8 bytes).
fn quoted_flow(quoted: &[u8]) -> Option<QuotedFlow> {
    let (src, dst, protocol, rest): (IpAddress, IpAddress, u8, &[u8]) = match quoted.first()? >> 4 {
        4 => {
            let header = etherparse::Ipv4HeaderSlice::from_slice(quoted).ok()?;
            let rest = quoted.get(header.slice().len()..)?;
            (
                Ipv4Address::from(header.source()).into(),
                Ipv4Address::from(header.destination()).into(),
                header.protocol().0,
                rest,
            )
        }
        6 => {
            let header = etherparse::Ipv6HeaderSlice::from_slice(quoted).ok()?;
            let rest = quoted.get(header.slice().len()..)?;
            (
                Ipv6Address::from(header.source()).into(),
                Ipv6Address::from(header.destination()).into(),
                header.next_header().0,
                rest,
            )
        }
        _ => return None,
    };
    if protocol != IpNumber::TCP.0 && protocol != IpNumber::UDP.0 {
        return None;
    }
    let ports = rest.get(0..4)?;
    Some(QuotedFlow {
        protocol,
        src,
        src_port: u16::from_be_bytes([ports[0], ports[1]]),
        dst,
        dst_port: u16::from_be_bytes([ports[2], ports[3]]),
    })
}

/// The ones-complement sum of the TCP/UDP/ICMPv6 pseudo-header.
fn pseudo_header_sum(src: IpAddress, dst: IpAddress, protocol: u8, len: usize) -> Sum16BitWords {
    let mut sum = Sum16BitWords::new();
    match (src, dst) {
        (IpAddress::Ipv4(s), IpAddress::Ipv4(d)) => {
            sum = sum.add_4bytes(s.octets()).add_4bytes(d.octets());
            sum = sum.add_2bytes([0, protocol]);
            sum.add_2bytes((len as u16).to_be_bytes())
        }
        (IpAddress::Ipv6(s), IpAddress::Ipv6(d)) => {
            sum = sum.add_16bytes(s.octets()).add_16bytes(d.octets());
            sum = sum.add_4bytes((len as u32).to_be_bytes());
            sum.add_4bytes([0, 0, 0, protocol])
        }
        _ => sum,
    }
}
