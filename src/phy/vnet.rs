//! The virtio-net header that precedes every packet on a TUN opened with `IFF_VNET_HDR`
//! (the layout is tun-rs's [`VirtioNetHdr`]). It is what lets one read or write carry a
//! whole 64 KiB TCP segment instead of one MTU-sized packet:
//! - inbound, the kernel hands over GSO "super-packets" (one TCP segment the kernel would
//!   otherwise have cut into MSS-sized pieces), and packets made on this host whose
//!   checksum it left partial (`NEEDS_CSUM`: the field holds only the pseudo-header sum).
//!   [`read_inbound`] says which; a partial TCP/UDP checksum is left as it is (there is
//!   nothing to verify in what the kernel made, and summing 64 KiB costs), any other
//!   partial checksum is completed here;
//! - outbound, smoltcp (with segmentation offload) emits TCP segments up to 64 KiB with the
//!   MSS to cut them at, and leaves the TCP checksum to the device; [`outbound_header`]
//!   describes such a segment so the kernel takes it whole (`GSO_TCPV4`, `NEEDS_CSUM`).
//!
//! [`fill_transport_checksum`] computes what a partial checksum stands for, for the trace
//! and the pcap: they show packets as the peer gets them.

use crate::packet::fixed_transport_start;
use etherparse::checksum::Sum16BitWords;
use tun_rs::{VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VirtioNetHdr};

/// Length of the header in front of every packet.
pub const HEADER_LEN: usize = tun_rs::VIRTIO_NET_HDR_LEN;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start + csum_offset` holds only the
/// pseudo-header sum; the rest is to be summed from `csum_start` to the end.
const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_NONE`.
const GSO_NONE: u8 = 0;
/// The ECN bit that may be or-ed into `gso_type`.
const GSO_ECN: u8 = 0x80;
const PROTO_TCP: u8 = 6;
/// Offsets of the checksum field in a TCP and a UDP header.
const TCP_CSUM_OFFSET: u16 = 16;
const UDP_CSUM_OFFSET: u16 = 6;

/// What the header of an inbound packet said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inbound {
    /// A TCP super-packet: one segment longer than the MTU.
    pub super_packet: bool,
    /// What became of the checksum.
    pub checksum: RxChecksum,
}

/// The transport checksum of an inbound packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxChecksum {
    /// As the sender wrote it (to be verified).
    AsSent,
    /// Made on this host and left partial: a TCP or UDP checksum field holding the
    /// pseudo-header sum. Not to be verified.
    Partial,
    /// Was partial somewhere unusual and has been completed here (to be verified).
    Completed,
}

/// Reads the header in front of `frame`: what the packet behind it (`frame[HEADER_LEN..]`)
/// is. `Err` names why a frame cannot be taken (truncated, a checksum range outside the
/// packet, or a kind of super-packet the device did not ask for).
pub fn read_inbound(frame: &mut [u8]) -> Result<Inbound, &'static str> {
    if frame.len() < HEADER_LEN {
        return Err("frame shorter than its virtio-net header");
    }
    let header = VirtioNetHdr::decode(frame).map_err(|_| "unreadable virtio-net header")?;
    let packet = &mut frame[HEADER_LEN..];
    let super_packet = match header.gso_type & !GSO_ECN {
        GSO_NONE => false,
        VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_TCPV6 => true,
        _ => return Err("super-packet of a kind not enabled (UDP GSO?)"),
    };
    let checksum = if header.flags & F_NEEDS_CSUM == 0 {
        RxChecksum::AsSent
    } else if transport_at(packet).is_some_and(|(start, proto)| {
        (start, csum_offset(proto)) == (header.csum_start, header.csum_offset)
    }) {
        RxChecksum::Partial
    } else {
        complete_checksum(packet, header.csum_start, header.csum_offset)?;
        RxChecksum::Completed
    };
    Ok(Inbound {
        super_packet,
        checksum,
    })
}

/// Computes in place the TCP or UDP checksum of `packet` from scratch — what a device
/// computes for a partial one — so a trace or pcap shows the packet as the peer gets it.
/// Anything else is left alone.
pub fn fill_transport_checksum(packet: &mut [u8]) {
    if let Some((start, proto)) = transport_at(packet) {
        write_pseudo_sum(packet, usize::from(start), proto);
        // The range was checked by `transport_at`.
        let _ = complete_checksum(packet, start, csum_offset(proto));
    }
}

/// The header for an outbound `packet`. A TCP segment (smoltcp left its checksum to the
/// device) gets the pseudo-header sum in its checksum field and `NEEDS_CSUM`, so the kernel
/// neither computes nor verifies the rest; one whose payload is longer than `mss` also gets
/// `GSO_TCPV4/6` with that MSS, so the kernel takes it whole and cuts it only if it must
/// (forwarding). Anything else goes as it is.
pub fn outbound_header(packet: &mut [u8], mss: Option<u16>) -> VirtioNetHdr {
    let plain = VirtioNetHdr::default();
    let Some((start, PROTO_TCP)) = transport_at(packet) else {
        return plain;
    };
    let ip_len = usize::from(start);
    write_pseudo_sum(packet, ip_len, PROTO_TCP);
    let tcp_header_len = usize::from(packet[ip_len + 12] >> 4) * 4;
    let payload = (packet.len() - ip_len).saturating_sub(tcp_header_len);
    let mut header = VirtioNetHdr {
        flags: F_NEEDS_CSUM,
        csum_start: start,
        csum_offset: TCP_CSUM_OFFSET,
        ..plain
    };
    if let Some(mss) = mss.filter(|&m| m > 0 && payload > usize::from(m)) {
        header.gso_type = match packet[0] >> 4 {
            4 => VIRTIO_NET_HDR_GSO_TCPV4,
            _ => VIRTIO_NET_HDR_GSO_TCPV6,
        };
        header.gso_size = mss;
        header.hdr_len = (ip_len + tcp_header_len) as u16;
    }
    header
}

fn csum_offset(proto: u8) -> u16 {
    match proto {
        PROTO_TCP => TCP_CSUM_OFFSET,
        _ => UDP_CSUM_OFFSET,
    }
}

/// Where the TCP or UDP header of an unfragmented `packet` starts (right after the IP
/// header; IPv6 extension headers are not looked through), and which it is.
fn transport_at(packet: &[u8]) -> Option<(u16, u8)> {
    let (start, protocol) = fixed_transport_start(packet)?;
    Some((u16::try_from(start).ok()?, protocol))
}

/// Puts the folded pseudo-header sum of the TCP/UDP segment at `start` into its checksum
/// field — not its complement: what the kernel's own partial checksums hold.
fn write_pseudo_sum(packet: &mut [u8], start: usize, proto: u8) {
    let len = packet.len() - start;
    let pseudo = match packet[0] >> 4 {
        4 => Sum16BitWords::new()
            .add_slice(&packet[12..20])
            .add_2bytes([0, proto])
            .add_2bytes((len as u16).to_be_bytes()),
        _ => Sum16BitWords::new()
            .add_slice(&packet[8..40])
            .add_4bytes((len as u32).to_be_bytes())
            .add_4bytes([0, 0, 0, proto]),
    };
    // etherparse sums native-endian words: its results are written back as native bytes.
    let partial = !pseudo.ones_complement();
    let field = start + usize::from(csum_offset(proto));
    packet[field..field + 2].copy_from_slice(&partial.to_ne_bytes());
}

/// Finishes a partial checksum: sums `packet` from `start` (the checksum field at
/// `start + offset` holds the pseudo-header sum) and stores the complement.
fn complete_checksum(packet: &mut [u8], start: u16, offset: u16) -> Result<(), &'static str> {
    let start = usize::from(start);
    let at = start + usize::from(offset);
    if at + 2 > packet.len() {
        return Err("checksum range outside the packet");
    }
    let sum = Sum16BitWords::new().add_slice(&packet[start..]);
    // A UDP checksum of 0 means "none": a computed 0 is sent as its equal 0xffff.
    let checksum = if offset == UDP_CSUM_OFFSET {
        sum.to_ones_complement_with_no_zero()
    } else {
        sum.ones_complement()
    };
    packet[at..at + 2].copy_from_slice(&checksum.to_ne_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::classify;
    use etherparse::PacketBuilder;

    fn tcp_v4(payload: usize) -> Vec<u8> {
        let builder = PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 7, 1000, 65535)
            .ack(1);
        let data: Vec<u8> = (0..payload).map(|i| (i * 7) as u8).collect();
        let mut out = Vec::new();
        builder.write(&mut out, &data).unwrap();
        out
    }

    fn tcp_v6(payload: usize) -> Vec<u8> {
        let builder = PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64)
            .tcp(40000, 7, 1000, 65535)
            .ack(1);
        let data: Vec<u8> = (0..payload).map(|i| (i * 13) as u8).collect();
        let mut out = Vec::new();
        builder.write(&mut out, &data).unwrap();
        out
    }

    fn udp_v4(payload: usize) -> Vec<u8> {
        let builder = PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).udp(5000, 7);
        let mut out = Vec::new();
        builder.write(&mut out, &vec![0x5a; payload]).unwrap();
        out
    }

    fn frame(header: &VirtioNetHdr, packet: &[u8]) -> Vec<u8> {
        let mut frame = vec![0; HEADER_LEN];
        header.encode(&mut frame).unwrap();
        frame.extend_from_slice(packet);
        frame
    }

    /// What the kernel sends for a packet it left the checksum of to us: the field holds
    /// the pseudo-header sum, the header says where it is.
    fn as_kernel_partial(packet: &[u8], super_packet: bool) -> Vec<u8> {
        let mut partial = packet.to_vec();
        let (start, proto) = transport_at(&partial).unwrap();
        write_pseudo_sum(&mut partial, usize::from(start), proto);
        let header = VirtioNetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: start,
            csum_offset: csum_offset(proto),
            gso_type: if super_packet {
                VIRTIO_NET_HDR_GSO_TCPV4
            } else {
                GSO_NONE
            },
            gso_size: if super_packet { 1448 } else { 0 },
            ..Default::default()
        };
        frame(&header, &partial)
    }

    fn inbound(super_packet: bool, checksum: RxChecksum) -> Inbound {
        Inbound {
            super_packet,
            checksum,
        }
    }

    #[test]
    fn a_partial_checksum_is_left_partial_and_stands_for_the_real_one() {
        for packet in [tcp_v4(0), tcp_v4(1), tcp_v4(1460), tcp_v6(777), udp_v4(100)] {
            let mut frame = as_kernel_partial(&packet, false);
            let kind = read_inbound(&mut frame).unwrap();
            assert_eq!(kind, inbound(false, RxChecksum::Partial));
            let partial = &mut frame[HEADER_LEN..];
            assert!(
                !classify(partial).unwrap().checksum_ok,
                "partial sum verified"
            );
            fill_transport_checksum(partial);
            assert_eq!(
                partial,
                &packet[..],
                "filled checksum differs from the real one"
            );
        }
    }

    #[test]
    fn a_tcp_super_packet_is_taken_whole() {
        for packet in [tcp_v4(60000), tcp_v6(65000)] {
            let mut frame = as_kernel_partial(&packet, true);
            assert_eq!(
                read_inbound(&mut frame).unwrap(),
                inbound(true, RxChecksum::Partial)
            );
            assert_eq!(frame.len() - HEADER_LEN, packet.len());
        }
    }

    #[test]
    fn a_partial_checksum_behind_an_extension_header_is_completed() {
        // TCP over IPv6 behind an 8-byte hop-by-hop header (PadN): the checksum is the same.
        let plain = tcp_v6(300);
        let mut packet = plain[..40].to_vec();
        packet[6] = 0;
        let payload_len = u16::from_be_bytes([packet[4], packet[5]]) + 8;
        packet[4..6].copy_from_slice(&payload_len.to_be_bytes());
        packet.extend_from_slice(&[PROTO_TCP, 0, 1, 4, 0, 0, 0, 0]);
        packet.extend_from_slice(&plain[40..]);
        assert!(classify(&packet).unwrap().checksum_ok);

        let mut partial = packet.clone();
        write_pseudo_sum(&mut partial, 48, PROTO_TCP);
        let header = VirtioNetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 48,
            csum_offset: TCP_CSUM_OFFSET,
            ..Default::default()
        };
        let mut frame = frame(&header, &partial);
        let kind = read_inbound(&mut frame).unwrap();
        assert_eq!(kind, inbound(false, RxChecksum::Completed));
        assert_eq!(&frame[HEADER_LEN..], &packet[..]);
    }

    #[test]
    fn a_left_out_tcp_checksum_is_filled_in() {
        for packet in [tcp_v4(3), tcp_v6(5000)] {
            let mut zeroed = packet.clone();
            let at = if packet[0] >> 4 == 4 { 36 } else { 56 };
            zeroed[at..at + 2].copy_from_slice(&[0, 0]);
            fill_transport_checksum(&mut zeroed);
            assert_eq!(zeroed, packet);
        }
    }

    #[test]
    fn a_plain_frame_is_left_alone_and_bad_ones_are_refused() {
        let packet = tcp_v4(10);
        let mut plain = frame(&VirtioNetHdr::default(), &packet);
        let kind = read_inbound(&mut plain).unwrap();
        assert_eq!(kind, inbound(false, RxChecksum::AsSent));
        assert_eq!(&plain[HEADER_LEN..], &packet[..]);
        assert!(read_inbound(&mut [0u8; 4]).is_err());
        let outside = VirtioNetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 50,
            csum_offset: 16,
            ..Default::default()
        };
        assert!(read_inbound(&mut frame(&outside, &packet)).is_err());
        let udp_gso = VirtioNetHdr {
            gso_type: 5,
            ..Default::default()
        };
        assert!(read_inbound(&mut frame(&udp_gso, &packet)).is_err());
    }

    #[test]
    fn only_a_tcp_segment_longer_than_the_mss_is_a_super_packet() {
        let mut big = tcp_v4(4000);
        let header = outbound_header(&mut big, Some(1448));
        assert_eq!(header.gso_type, VIRTIO_NET_HDR_GSO_TCPV4);
        assert_eq!((header.gso_size, header.hdr_len), (1448, 40));
        assert_eq!((header.flags, header.csum_start), (F_NEEDS_CSUM, 20));

        let mut small = tcp_v6(1000);
        let header = outbound_header(&mut small, Some(1448));
        assert_eq!(header.gso_type, GSO_NONE);
        assert_eq!((header.flags, header.csum_start), (F_NEEDS_CSUM, 40));

        let mut unsegmented = tcp_v4(4000);
        assert_eq!(outbound_header(&mut unsegmented, None).gso_type, GSO_NONE);

        let mut udp = udp_v4(100);
        let before = udp.clone();
        let header = outbound_header(&mut udp, Some(1448));
        assert_eq!((header.flags, header.gso_type), (0, GSO_NONE));
        assert_eq!(udp, before, "a UDP packet is not touched");
    }
}
