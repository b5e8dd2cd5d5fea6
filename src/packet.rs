//! Packet classification: turns untrusted IP bytes into a [`PacketInfo`] (addresses, ports,
//! TCP flags, fragment identity, checksum validity) with etherparse's checked parsers.
//! The flow table, the counters and the packet trace all read this one description.

use etherparse::{
    IpNumber, Ipv6ExtensionSlice, NetSlice, SlicedPacket, TcpHeaderSlice, TransportSlice, UdpSlice,
    checksum::Sum16BitWords,
};
use smoltcp::wire::{IpAddress, Ipv4Address, Ipv6Address};

/// TCP control flags of a segment, as carried on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct TcpFlags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
    pub psh: bool,
}

/// The transport-layer view of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A TCP segment.
    Tcp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// Control flags.
        flags: TcpFlags,
        /// Sequence number.
        seq: u32,
        /// Acknowledgment number (meaningful when `flags.ack`).
        ack: u32,
        /// Advertised window (unscaled, as on the wire).
        window: u16,
        /// Payload length in bytes.
        payload_len: usize,
    },
    /// A UDP datagram.
    Udp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// Payload length in bytes.
        payload_len: usize,
    },
    /// An ICMPv4 or ICMPv6 message.
    Icmp {
        /// ICMP type.
        icmp_type: u8,
        /// ICMP code.
        code: u8,
        /// For an error message (unreachable, ...): the socket pair of the packet it is about.
        quoted: Option<QuotedFlow>,
    },
    /// A fragment that does not carry the transport header (offset > 0).
    Fragment,
    /// Any other IP protocol number.
    Other(u8),
}

/// The flow an ICMP error message quotes (the offending packet's header, as we sent it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotedFlow {
    /// IP protocol of the quoted packet (6 = TCP, 17 = UDP).
    pub protocol: u8,
    /// Source address of the quoted packet (one of ours).
    pub src: IpAddress,
    /// Source port of the quoted packet.
    pub src_port: u16,
    /// Destination address of the quoted packet.
    pub dst: IpAddress,
    /// Destination port of the quoted packet.
    pub dst_port: u16,
}

/// Identity of an IP fragment train: `<src, dst, protocol, identification>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragmentKey {
    /// Source address.
    pub src: IpAddress,
    /// Destination address.
    pub dst: IpAddress,
    /// Upper-layer protocol number.
    pub protocol: u8,
    /// IPv4 identification or IPv6 fragment-header identification.
    pub id: u32,
}

/// Everything the stack needs to know about one inbound or outbound IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketInfo {
    /// Source address.
    pub src: IpAddress,
    /// Destination address.
    pub dst: IpAddress,
    /// Hop limit / TTL.
    pub hop_limit: u8,
    /// Transport view.
    pub transport: Transport,
    /// Fragment identity and byte offset, when the packet is a fragment.
    pub fragment: Option<(FragmentKey, u32)>,
    /// Total length of the IP packet.
    pub len: usize,
    /// False when a header or transport checksum does not verify.
    pub checksum_ok: bool,
}

/// Why a packet could not be classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

impl PacketInfo {
    /// The TCP/UDP ports `(src, dst)`, if the packet carries them.
    pub fn ports(&self) -> Option<(u16, u16)> {
        match self.transport {
            Transport::Tcp {
                src_port, dst_port, ..
            }
            | Transport::Udp {
                src_port, dst_port, ..
            } => Some((src_port, dst_port)),
            _ => None,
        }
    }
}

/// Parses an IP packet (IPv4 or IPv6, no link header). Never panics on any input.
pub fn classify(bytes: &[u8]) -> Result<PacketInfo, Malformed> {
    let sliced = SlicedPacket::from_ip(bytes).map_err(|e| Malformed(e.to_string()))?;
    let Some(net) = sliced.net else {
        return Err(Malformed("no ip header".into()));
    };
    let (src, dst, hop_limit, header_ok, protocol, payload, fragment) = match &net {
        NetSlice::Ipv4(v4) => {
            let header = v4.header();
            let src = IpAddress::Ipv4(Ipv4Address::from(header.source()));
            let dst = IpAddress::Ipv4(Ipv4Address::from(header.destination()));
            let protocol = header.protocol().0;
            let fragment = v4.is_payload_fragmented().then(|| {
                let key = FragmentKey {
                    src,
                    dst,
                    protocol,
                    id: u32::from(header.identification()),
                };
                (key, u32::from(header.fragments_offset().value()) * 8)
            });
            let header_ok = Sum16BitWords::new()
                .add_slice(header.slice())
                .ones_complement()
                == 0;
            let ttl = header.ttl();
            (
                src,
                dst,
                ttl,
                header_ok,
                protocol,
                v4.payload().payload,
                fragment,
            )
        }
        NetSlice::Ipv6(v6) => {
            let header = v6.header();
            let src = IpAddress::Ipv6(Ipv6Address::from(header.source()));
            let dst = IpAddress::Ipv6(Ipv6Address::from(header.destination()));
            let protocol = v6.payload().ip_number.0;
            let fragment = v6.is_payload_fragmented().then(|| {
                v6.extensions()
                    .clone()
                    .into_iter()
                    .find_map(|ext| match ext {
                        Ipv6ExtensionSlice::Fragment(frag) => Some((
                            FragmentKey {
                                src,
                                dst,
                                protocol,
                                id: frag.identification(),
                            },
                            u32::from(frag.fragment_offset().value()) * 8,
                        )),
                        _ => None,
                    })
                    .unwrap_or((
                        FragmentKey {
                            src,
                            dst,
                            protocol,
                            id: 0,
                        },
                        0,
                    ))
            });
            let hops = header.hop_limit();
            (
                src,
                dst,
                hops,
                true,
                protocol,
                v6.payload().payload,
                fragment,
            )
        }
        NetSlice::Arp(_) => return Err(Malformed("arp on an ip link".into())),
    };
    let mut info = PacketInfo {
        src,
        dst,
        hop_limit,
        transport: Transport::Other(protocol),
        fragment,
        len: bytes.len(),
        checksum_ok: header_ok,
    };
    match fragment {
        Some((_, offset)) if offset > 0 => info.transport = Transport::Fragment,
        Some(_) => info.transport = first_fragment_transport(protocol, payload),
        None => {
            let (transport, ok) = whole_transport(sliced.transport.as_ref(), protocol, src, dst)?;
            info.transport = transport;
            info.checksum_ok &= ok;
        }
    }
    Ok(info)
}

/// Transport view of an unfragmented packet, and whether its checksum verifies.
fn whole_transport(
    transport: Option<&TransportSlice<'_>>,
    protocol: u8,
    src: IpAddress,
    dst: IpAddress,
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
        TransportSlice::Tcp(tcp) => tcp_view(
            tcp.source_port(),
            tcp.destination_port(),
            &TcpFlags {
                syn: tcp.syn(),
                ack: tcp.ack(),
                fin: tcp.fin(),
                rst: tcp.rst(),
                psh: tcp.psh(),
            },
            (tcp.sequence_number(), tcp.acknowledgment_number()),
            tcp.window_size(),
            tcp.payload().len(),
        ),
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

fn tcp_view(
    src_port: u16,
    dst_port: u16,
    flags: &TcpFlags,
    (seq, ack): (u32, u32),
    window: u16,
    payload_len: usize,
) -> Transport {
    Transport::Tcp {
        src_port,
        dst_port,
        flags: *flags,
        seq,
        ack,
        window,
        payload_len,
    }
}

/// Transport view of a first fragment: ports only, no checksum (it covers the whole datagram).
fn first_fragment_transport(protocol: u8, payload: &[u8]) -> Transport {
    match protocol {
        6 => match TcpHeaderSlice::from_slice(payload) {
            Ok(tcp) => tcp_view(
                tcp.source_port(),
                tcp.destination_port(),
                &TcpFlags {
                    syn: tcp.syn(),
                    ack: tcp.ack(),
                    fin: tcp.fin(),
                    rst: tcp.rst(),
                    psh: tcp.psh(),
                },
                (tcp.sequence_number(), tcp.acknowledgment_number()),
                tcp.window_size(),
                payload.len().saturating_sub(tcp.slice().len()),
            ),
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

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn tcp_syn_v4(payload: &[u8]) -> Vec<u8> {
        let builder = PacketBuilder::ipv4([192, 168, 69, 1], [192, 168, 69, 2], 64)
            .tcp(40000, 7, 1000, 64240)
            .syn();
        let mut out = Vec::new();
        builder.write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn tcp_syn_is_described() {
        let info = classify(&tcp_syn_v4(&[])).unwrap();
        assert!(info.checksum_ok);
        assert_eq!(info.ports(), Some((40000, 7)));
        match info.transport {
            Transport::Tcp { flags, seq, .. } => {
                assert!(flags.syn && !flags.ack);
                assert_eq!(seq, 1000);
            }
            other => panic!("not tcp: {other:?}"),
        }
    }

    #[test]
    fn corrupted_tcp_checksum_is_detected() {
        let mut packet = tcp_syn_v4(b"hello");
        let last = packet.len() - 1;
        packet[last] ^= 0xff;
        assert!(!classify(&packet).unwrap().checksum_ok);
    }

    #[test]
    fn corrupted_ipv4_header_checksum_is_detected() {
        let mut packet = tcp_syn_v4(&[]);
        packet[8] ^= 0x01; // TTL
        assert!(!classify(&packet).unwrap().checksum_ok);
    }

    #[test]
    fn udp_v6_checksum_verifies() {
        let builder = PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64).udp(5000, 7);
        let mut out = Vec::new();
        builder.write(&mut out, b"ping").unwrap();
        let info = classify(&out).unwrap();
        assert!(info.checksum_ok);
        assert_eq!(info.ports(), Some((5000, 7)));
        out[50] ^= 0x55;
        assert!(!classify(&out).unwrap().checksum_ok);
    }

    #[test]
    fn lying_total_length_is_malformed() {
        let mut packet = tcp_syn_v4(&[]);
        packet[2] = 0xff;
        assert!(classify(&packet).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        for len in 0..64 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
            let _ = classify(&bytes);
        }
    }
}
