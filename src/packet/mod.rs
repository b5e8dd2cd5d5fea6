//! Packet classification: turns untrusted IP bytes into a [`PacketInfo`] (addresses, ports,
//! TCP flags, fragment identity, checksum validity) with etherparse's checked parsers.
//! The flow table, the counters and the packet trace all read this one description.
//! `segment` builds and rewrites the few TCP segments the stack makes itself (SYN cookies);
//! `extension` walks IPv6 extension headers and `ipv4_options` finds IPv4 options, by the
//! rules a host keeps.

pub mod extension;
pub(crate) mod ipv4_options;
mod segment;
mod transport;

use etherparse::{Ipv6ExtensionSlice, NetSlice, SlicedPacket, checksum::Sum16BitWords};
use smoltcp::wire::{IpAddress, Ipv4Address, Ipv6Address};
use transport::{first_fragment_transport, whole_transport};

pub(crate) use segment::{
    Segment, SeqField, SynOptions, fixed_transport_start, shift_tcp, syn_options, syn_segment,
    tcp_ack_window, tcp_extent, tcp_header_start, tcp_numbers,
};

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
    classify_with(bytes, TransportChecksum::Verify)
}

/// What to do with the transport (TCP/UDP/ICMP) checksum while classifying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportChecksum {
    /// Verify it: the packet may come from anywhere.
    Verify,
    /// Skip it: the packet was made on this host and its checksum left partial for the
    /// device to finish (TUN offloads, `NEEDS_CSUM`); there is nothing to verify.
    Partial,
}

/// [`classify`], with the transport checksum verified or not.
pub fn classify_with(bytes: &[u8], sum: TransportChecksum) -> Result<PacketInfo, Malformed> {
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
            let verify = sum == TransportChecksum::Verify;
            let (transport, ok) =
                whole_transport(sliced.transport.as_ref(), protocol, src, dst, verify)?;
            info.transport = transport;
            info.checksum_ok &= ok;
        }
    }
    Ok(info)
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
    fn tcp_options_smoltcp_rejects_are_malformed() {
        let mut header = etherparse::TcpHeader::new(40000, 7, 1000, 64240);
        header.syn = true;
        header.set_options_raw(&[3, 2, 0, 0]).unwrap(); // window scale with length 2
        let mut packet = Vec::new();
        PacketBuilder::ipv4([192, 168, 69, 1], [192, 168, 69, 2], 64)
            .tcp_header(header)
            .write(&mut packet, &[])
            .unwrap();
        let err = classify(&packet).unwrap_err();
        assert!(err.0.contains("options"), "{err}");
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
