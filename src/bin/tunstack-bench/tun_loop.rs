//! The floor under any TUN stack: a bare loop that reads a packet from the TUN, turns an
//! IPv4 ICMP echo request or UDP datagram around (addresses and ports swapped, type 8 → 0)
//! and writes it back — no sockets, no timers, no stack. What ping and the UDP round trip
//! cost through it is what the TUN itself costs; tunstack cannot be faster.

use std::io;
use std::os::fd::AsRawFd;
use tun_tap::{Iface, Mode};
use tunstack::phy::tun::clear_offloads;

const ICMP: u8 = 1;
const UDP: u8 = 17;
const ECHO_REQUEST: u8 = 8;

/// Serves `tun` until killed; `spin`: poll the TUN without sleeping (a whole CPU).
pub fn run(tun: &str, spin: bool) -> io::Result<()> {
    let iface = Iface::without_packet_info(tun, Mode::Tun)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open TUN {tun}: {e}")))?;
    // A tunstack run before may have left checksum offload on: UDP would come in with a
    // partial checksum and go back out with it.
    clear_offloads(iface.as_raw_fd()).map_err(|e| {
        io::Error::new(e.kind(), format!("cannot clear the offloads of {tun}: {e}"))
    })?;
    if spin {
        iface.set_non_blocking()?;
    }
    eprintln!(
        "tun-loop: echoing ICMP and UDP on {tun} ({})",
        if spin { "spinning" } else { "blocking reads" }
    );
    let mut buf = vec![0u8; 65536];
    loop {
        let n = match iface.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if turn_around(&mut buf[..n]) {
            iface.send(&buf[..n])?;
        }
    }
}

/// Makes `packet` its own answer if it is an unfragmented IPv4 echo request or UDP
/// datagram; false for anything else (dropped).
fn turn_around(packet: &mut [u8]) -> bool {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return false;
    }
    let header = usize::from(packet[0] & 0x0f) * 4;
    let fragmented = u16::from_be_bytes([packet[6], packet[7]]) & 0x3fff != 0;
    if header < 20 || packet.len() < header + 8 || fragmented {
        return false;
    }
    match packet[9] {
        ICMP if packet[header] == ECHO_REQUEST => {
            packet[header] = 0;
            // Type 8 → 0 lowers the first 16-bit word by 0x0800 (RFC 1624 update).
            let sum = u16::from_be_bytes([packet[header + 2], packet[header + 3]]);
            let (sum, carry) = sum.overflowing_add(0x0800);
            let sum = sum + u16::from(carry);
            packet[header + 2..header + 4].copy_from_slice(&sum.to_be_bytes());
        }
        // Swapping the ports, like the addresses below, leaves every checksum valid.
        UDP => {
            let (src, dst) = packet[header..header + 4].split_at_mut(2);
            src.swap_with_slice(dst);
        }
        _ => return false,
    }
    let (src, dst) = packet[12..20].split_at_mut(4);
    src.swap_with_slice(dst);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

    #[test]
    fn echo_request_becomes_a_valid_reply() {
        let mut packet = Vec::new();
        PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .icmpv4_echo_request(7, 9)
            .write(&mut packet, b"hello")
            .unwrap();
        assert!(turn_around(&mut packet));
        let mut expected = Vec::new();
        PacketBuilder::ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64)
            .icmpv4_echo_reply(7, 9)
            .write(&mut expected, b"hello")
            .unwrap();
        assert_eq!(packet, expected);
    }

    #[test]
    fn udp_datagram_goes_back_with_valid_checksums() {
        let mut packet = Vec::new();
        PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(40000, 7)
            .write(&mut packet, b"abc")
            .unwrap();
        assert!(turn_around(&mut packet));
        let sliced = SlicedPacket::from_ip(&packet).unwrap();
        let Some(TransportSlice::Udp(udp)) = sliced.transport else {
            panic!("not UDP");
        };
        assert_eq!((udp.source_port(), udp.destination_port()), (7, 40000));
        let ip = sliced.net.unwrap();
        let etherparse::NetSlice::Ipv4(ip) = ip else {
            panic!("not IPv4");
        };
        let header = ip.header().to_header();
        assert_eq!(header.source, [10, 0, 0, 2]);
        assert_eq!(header.calc_header_checksum(), header.header_checksum);
        let checksum = udp
            .to_header()
            .calc_checksum_ipv4(&header, udp.payload())
            .unwrap();
        assert_eq!(checksum, udp.checksum());
    }

    #[test]
    fn other_packets_are_dropped() {
        let mut packet = Vec::new();
        PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1, 2, 3, 4)
            .write(&mut packet, b"")
            .unwrap();
        assert!(!turn_around(&mut packet));
        assert!(!turn_around(&mut [0x60; 40]));
        assert!(!turn_around(&mut [0x45; 10]));
    }
}
