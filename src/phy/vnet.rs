//! The virtio-net header that precedes every packet on a TUN opened with `IFF_VNET_HDR`
//! (the layout is tun-rs's [`VirtioNetHdr`]). It is what lets one read or write carry a
//! whole 64 KiB TCP segment instead of one MTU-sized packet:
//! - inbound, the kernel hands over a GSO "super-packet" (one TCP segment the kernel would
//!   otherwise have cut into MSS-sized pieces) and locally made packets whose checksum is
//!   still partial (`NEEDS_CSUM`); [`complete_inbound`] finishes the checksum, so the rest of
//!   the stack sees an ordinary, verifiable IP packet — only bigger than the MTU;
//! - outbound, smoltcp (with segmentation offload) emits TCP segments up to 64 KiB with the
//!   MSS to cut them at, and leaves the TCP checksum to the device; [`outbound_header`]
//!   describes such a segment so the kernel takes it whole (`GSO_TCPV4/6`, `NEEDS_CSUM`).

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

/// What the header of an inbound packet said, once dealt with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// A plain packet.
    Plain,
    /// A packet whose partial checksum was completed here.
    ChecksumCompleted,
    /// A TCP super-packet (one segment longer than the MTU), checksum completed here.
    TcpSuperPacket,
}

/// Reads the header in front of `frame` and makes the packet behind it whole: a partial
/// checksum is completed in place. Returns the packet and what it was; `Err` names why a
/// frame cannot be taken (truncated, a checksum range outside the packet, or a kind of
/// super-packet the device did not ask for).
pub fn complete_inbound(frame: &mut [u8]) -> Result<(&mut [u8], Inbound), &'static str> {
    if frame.len() < HEADER_LEN {
        return Err("frame shorter than its virtio-net header");
    }
    let header = VirtioNetHdr::decode(frame).map_err(|_| "unreadable virtio-net header")?;
    let packet = &mut frame[HEADER_LEN..];
    let kind = match header.gso_type & !GSO_ECN {
        GSO_NONE => Inbound::Plain,
        VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_TCPV6 => Inbound::TcpSuperPacket,
        _ => return Err("super-packet of a kind not enabled (UDP GSO?)"),
    };
    if header.flags & F_NEEDS_CSUM == 0 {
        return Ok((packet, kind));
    }
    complete_checksum(packet, header.csum_start, header.csum_offset)?;
    let kind = match kind {
        Inbound::Plain => Inbound::ChecksumCompleted,
        other => other,
    };
    Ok((packet, kind))
}

/// Finishes a partial checksum: sums `packet` from `start` (the checksum field at
/// `start + offset` holds the pseudo-header sum) and stores the complement.
fn complete_checksum(packet: &mut [u8], start: u16, offset: u16) -> Result<(), &'static str> {
    let start = usize::from(start);
    let at = start + usize::from(offset);
    if at + 2 > packet.len() {
        return Err("checksum range outside the packet");
    }
    // etherparse sums native-endian words: its results are written back as native bytes.
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

/// Computes in place the TCP checksum smoltcp left to the device — what the kernel will
/// compute — so that a trace or pcap shows the packet as the peer gets it.
pub fn fill_tcp_checksum(packet: &mut [u8]) {
    let header = outbound_header(packet, None);
    if header.flags & F_NEEDS_CSUM != 0 {
        // The range was checked by `outbound_header`.
        let _ = complete_checksum(packet, header.csum_start, header.csum_offset);
    }
}

/// The header for an outbound `packet`. A TCP segment (smoltcp left its checksum to the
/// device) gets the pseudo-header sum in its checksum field and `NEEDS_CSUM`, so the kernel
/// neither computes nor verifies the rest; one whose payload is longer than `mss` also gets
/// `GSO_TCPV4/6` with that MSS, so the kernel takes it whole and cuts it only if it must
/// (forwarding). Anything else goes as it is.
pub fn outbound_header(packet: &mut [u8], mss: Option<u16>) -> VirtioNetHdr {
    let plain = VirtioNetHdr::default();
    let Some((ip_len, gso_type)) = tcp_offset(packet) else {
        return plain;
    };
    let tcp_len = packet.len() - ip_len;
    if tcp_len < 20 {
        return plain;
    }
    let pseudo = match gso_type {
        VIRTIO_NET_HDR_GSO_TCPV4 => Sum16BitWords::new()
            .add_slice(&packet[12..20])
            .add_2bytes([0, PROTO_TCP])
            .add_2bytes((tcp_len as u16).to_be_bytes()),
        _ => Sum16BitWords::new()
            .add_slice(&packet[8..40])
            .add_4bytes((tcp_len as u32).to_be_bytes())
            .add_4bytes([0, 0, 0, PROTO_TCP]),
    };
    // The field holds the folded pseudo-header sum, not its complement (as the kernel's own
    // CHECKSUM_PARTIAL packets do).
    let partial = !pseudo.ones_complement();
    let field = ip_len + usize::from(TCP_CSUM_OFFSET);
    packet[field..field + 2].copy_from_slice(&partial.to_ne_bytes());
    let tcp_header_len = usize::from(packet[ip_len + 12] >> 4) * 4;
    let payload = tcp_len.saturating_sub(tcp_header_len);
    let mut header = VirtioNetHdr {
        flags: F_NEEDS_CSUM,
        csum_start: ip_len as u16,
        csum_offset: TCP_CSUM_OFFSET,
        ..plain
    };
    if let Some(mss) = mss.filter(|&m| m > 0 && payload > usize::from(m)) {
        header.gso_type = gso_type;
        header.gso_size = mss;
        header.hdr_len = (ip_len + tcp_header_len) as u16;
    }
    header
}

/// Where the TCP header of an unfragmented `packet` starts, and the GSO type for its IP
/// version; `None` for anything that is not TCP.
fn tcp_offset(packet: &[u8]) -> Option<(usize, u8)> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => {
            let ip_len = usize::from(packet[0] & 0x0f) * 4;
            let fragmented = u16::from_be_bytes([packet[6], packet[7]]) & 0x3fff != 0;
            (packet[9] == PROTO_TCP && !fragmented && packet.len() >= ip_len + 20)
                .then_some((ip_len, VIRTIO_NET_HDR_GSO_TCPV4))
        }
        6 if packet.len() >= 60 => {
            (packet[6] == PROTO_TCP).then_some((40, VIRTIO_NET_HDR_GSO_TCPV6))
        }
        _ => None,
    }
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
    /// the pseudo-header sum. `outbound_header` makes exactly that from a finished packet.
    fn as_kernel_partial(mut packet: Vec<u8>, gso: bool) -> Vec<u8> {
        let mut header = outbound_header(&mut packet, gso.then_some(1448));
        if !gso {
            header.gso_type = GSO_NONE;
        }
        frame(&header, &packet)
    }

    #[test]
    fn a_partial_tcp_checksum_is_completed_to_the_real_one() {
        for packet in [tcp_v4(0), tcp_v4(1), tcp_v4(1460), tcp_v6(777)] {
            let mut frame = as_kernel_partial(packet.clone(), false);
            let (whole, kind) = complete_inbound(&mut frame).unwrap();
            assert_eq!(kind, Inbound::ChecksumCompleted);
            assert_eq!(
                whole,
                &packet[..],
                "completed checksum differs from the real one"
            );
            assert!(classify(whole).unwrap().checksum_ok);
        }
    }

    #[test]
    fn a_tcp_super_packet_is_taken_whole() {
        for packet in [tcp_v4(60000), tcp_v6(65000)] {
            let mut frame = as_kernel_partial(packet.clone(), true);
            let (whole, kind) = complete_inbound(&mut frame).unwrap();
            assert_eq!(kind, Inbound::TcpSuperPacket);
            assert_eq!(whole, &packet[..]);
        }
    }

    #[test]
    fn a_left_out_tcp_checksum_is_filled_in() {
        for packet in [tcp_v4(3), tcp_v6(5000)] {
            let mut zeroed = packet.clone();
            let at = if packet[0] >> 4 == 4 { 36 } else { 56 };
            zeroed[at..at + 2].copy_from_slice(&[0, 0]);
            fill_tcp_checksum(&mut zeroed);
            assert_eq!(zeroed, packet);
        }
    }

    #[test]
    fn a_partial_udp_checksum_is_completed() {
        let packet = udp_v4(100);
        let mut partial = packet.clone();
        // The kernel's partial UDP packet: the pseudo-header sum in the checksum field.
        let pseudo = Sum16BitWords::new()
            .add_slice(&partial[12..20])
            .add_2bytes([0, 17])
            .add_2bytes(108u16.to_be_bytes());
        partial[26..28].copy_from_slice(&(!pseudo.ones_complement()).to_ne_bytes());
        let header = VirtioNetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 20,
            csum_offset: UDP_CSUM_OFFSET,
            ..Default::default()
        };
        let mut frame = frame(&header, &partial);
        let (whole, _) = complete_inbound(&mut frame).unwrap();
        assert_eq!(whole, &packet[..]);
    }

    #[test]
    fn a_plain_frame_is_left_alone_and_bad_ones_are_refused() {
        let packet = tcp_v4(10);
        let mut plain = frame(&VirtioNetHdr::default(), &packet);
        assert_eq!(
            complete_inbound(&mut plain).unwrap(),
            (&mut packet.clone()[..], Inbound::Plain)
        );
        assert!(complete_inbound(&mut [0u8; 4]).is_err());
        let outside = VirtioNetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 50,
            csum_offset: 16,
            ..Default::default()
        };
        assert!(complete_inbound(&mut frame(&outside, &packet)).is_err());
        let udp_gso = VirtioNetHdr {
            gso_type: 5,
            ..Default::default()
        };
        assert!(complete_inbound(&mut frame(&udp_gso, &packet)).is_err());
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
