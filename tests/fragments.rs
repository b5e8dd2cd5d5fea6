//! Datagrams bigger than the link leave whole, in order, however many come back to back:
//! echo replies to fragmented pings, UDP echoes of big datagrams and an app's burst of big
//! `send_to`s, over IPv4 and IPv6. The peer is scripted on the in-memory link and puts the
//! stack's fragments back together with etherparse's reassembler.

use etherparse::defrag::IpDefragPool;
use etherparse::{IpNumber, Ipv4Header, NetSlice, PacketBuilder, SlicedPacket};
use std::net::{IpAddr, SocketAddr};
use tunstack::app::EchoServer;
use tunstack::phy::MemoryLink;
use tunstack::smoltcp::time::{Duration, Instant};
use tunstack::{Error, Stack, StackConfig, UdpSocket};

const MTU: usize = 1500;
const PEER4: [u8; 4] = [192, 168, 69, 1];
const US4: [u8; 4] = [192, 168, 69, 2];
const PEER6: [u8; 16] = [0xfd, 0x69, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const US6: [u8; 16] = [0xfd, 0x69, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// The stack with an echo server on port 7, and the peer's end of the link.
struct Link {
    stack: Stack,
    device: MemoryLink,
    wire: MemoryLink,
    echo: EchoServer,
    now: Instant,
}

/// What reached the peer once fragments were put together.
#[derive(Debug, PartialEq)]
struct Datagram {
    protocol: IpNumber,
    /// The transport header and its payload.
    body: Vec<u8>,
}

impl Link {
    fn new() -> Link {
        let (mut device, wire) = MemoryLink::pair(MTU);
        let stack = Stack::new(StackConfig::default(), &mut device, Instant::ZERO);
        let echo = EchoServer::bind(&stack, "[::]:7".parse().unwrap(), 16).unwrap();
        Link {
            stack,
            device,
            wire,
            echo,
            now: Instant::ZERO,
        }
    }

    /// Polls (letting the echo serve) until the stack goes quiet; returns every packet it
    /// sent, in order.
    fn run(&mut self) -> Vec<Vec<u8>> {
        let mut sent = Vec::new();
        let mut ready = Vec::new();
        for _ in 0..1000 {
            self.stack.poll(self.now, &mut self.device);
            ready.clear();
            self.stack.take_ready(&mut ready);
            self.echo.on_ready(&ready);
            self.stack.poll(self.now, &mut self.device);
            let before = sent.len();
            while let Some(packet) = self.wire.recv_raw() {
                sent.push(packet);
            }
            let busy = self.stack.poll_delay(self.now) == Some(Duration::ZERO);
            if sent.len() == before && !busy && self.wire.pending() == 0 {
                return sent;
            }
            self.now += Duration::from_millis(1);
        }
        panic!("the stack never went quiet ({} packets sent)", sent.len());
    }

    fn send_fragmented(&self, packet: Vec<u8>) {
        for fragment in fragment(&packet, MTU) {
            self.wire.send_raw(fragment);
        }
    }
}

/// Splits an IPv4 packet the way a host would (IPv6 packets go whole: the stack reads
/// them reassembled either way, and only what it sends is under test here).
fn fragment(packet: &[u8], mtu: usize) -> Vec<Vec<u8>> {
    let Ok((header, body)) = Ipv4Header::from_slice(packet) else {
        return vec![packet.to_vec()];
    };
    let chunk = (mtu - Ipv4Header::MIN_LEN) / 8 * 8;
    body.chunks(chunk)
        .enumerate()
        .map(|(i, part)| {
            let mut h = header.clone();
            h.fragment_offset = etherparse::IpFragOffset::try_new((i * chunk / 8) as u16).unwrap();
            h.more_fragments = (i + 1) * chunk < body.len();
            h.set_payload_len(part.len()).unwrap();
            h.header_checksum = h.calc_header_checksum();
            let mut out = h.to_bytes().to_vec();
            out.extend_from_slice(part);
            out
        })
        .collect()
}

/// Puts the stack's fragments back together; every packet must fit the link.
fn reassemble(packets: &[Vec<u8>]) -> Vec<Datagram> {
    let mut pool: IpDefragPool = IpDefragPool::new();
    let mut whole = Vec::new();
    for packet in packets {
        assert!(
            packet.len() <= MTU,
            "a {}-byte packet on a {MTU} link",
            packet.len()
        );
        let sliced = SlicedPacket::from_ip(packet).expect("the stack sends valid packets");
        if let Some(done) = pool.process_sliced_packet(&sliced, (), ()).unwrap() {
            whole.push(Datagram {
                protocol: done.ip_number,
                body: done.payload.clone(),
            });
            pool.return_buf(done);
            continue;
        }
        let fragmented = match &sliced.net {
            Some(NetSlice::Ipv4(ip)) => ip.is_payload_fragmented(),
            Some(NetSlice::Ipv6(ip)) => ip.is_payload_fragmented(),
            _ => false,
        };
        if !fragmented {
            let payload = sliced.net.as_ref().unwrap().ip_payload_ref().unwrap();
            whole.push(Datagram {
                protocol: payload.ip_number,
                body: payload.payload.to_vec(),
            });
        }
    }
    whole
}

/// Each payload as (first byte, length): enough to tell them apart in a failure message.
fn summary(payloads: &[Vec<u8>]) -> Vec<(u8, usize)> {
    payloads
        .iter()
        .map(|p| (p.first().copied().unwrap_or(0), p.len()))
        .collect()
}

/// `len` bytes numbered from `tag`, so each datagram is told apart.
fn data(tag: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| tag.wrapping_add(i as u8)).collect()
}

fn echo_request(v6: bool, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut packet = Vec::new();
    if v6 {
        PacketBuilder::ipv6(PEER6, US6, 64)
            .icmpv6_echo_request(1, seq)
            .write(&mut packet, payload)
    } else {
        PacketBuilder::ipv4(PEER4, US4, 64)
            .icmpv4_echo_request(1, seq)
            .write(&mut packet, payload)
    }
    .unwrap();
    packet
}

fn udp(v6: bool, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut packet = Vec::new();
    let builder = if v6 {
        PacketBuilder::ipv6(PEER6, US6, 64).udp(sport, dport)
    } else {
        PacketBuilder::ipv4(PEER4, US4, 64).udp(sport, dport)
    };
    builder.write(&mut packet, payload).unwrap();
    packet
}

/// The payloads of the echo replies among `datagrams`, in order.
fn echo_replies(datagrams: &[Datagram]) -> Vec<Vec<u8>> {
    datagrams
        .iter()
        .filter(|d| matches!(d.protocol, IpNumber::ICMP | IpNumber::IPV6_ICMP))
        .filter(|d| matches!(d.body.first(), Some(0 | 129)))
        .map(|d| d.body[8..].to_vec())
        .collect()
}

/// The payloads of the UDP datagrams among `datagrams`, in order.
fn udp_payloads(datagrams: &[Datagram]) -> Vec<Vec<u8>> {
    datagrams
        .iter()
        .filter(|d| d.protocol == IpNumber::UDP)
        .map(|d| d.body[8..].to_vec())
        .collect()
}

/// `ping -c 5 -l 5 -s 3000`: five requests in one burst, five whole replies.
fn back_to_back_pings(v6: bool) {
    let mut link = Link::new();
    let requests: Vec<Vec<u8>> = (0..5).map(|i| data(i, 3000)).collect();
    for (seq, payload) in requests.iter().enumerate() {
        link.send_fragmented(echo_request(v6, seq as u16, payload));
    }
    let sent = link.run();
    let replies = echo_replies(&reassemble(&sent));
    assert_eq!(
        summary(&replies),
        summary(&requests),
        "{} packets",
        sent.len()
    );
    assert!(
        replies == requests,
        "the replies' bytes differ from the requests'"
    );
    assert_eq!(link.stack.stats().tx_unsent, 0);
}

#[test]
fn back_to_back_fragmented_pings_get_whole_replies_v4() {
    back_to_back_pings(false);
}

#[test]
fn back_to_back_fragmented_pings_get_whole_replies_v6() {
    back_to_back_pings(true);
}

/// Two 8,000-byte datagrams to the UDP echo in a row: both come back whole, in order.
fn two_big_udp_echoes(v6: bool) {
    let mut link = Link::new();
    let datagrams = [data(1, 8000), data(2, 8000)];
    for payload in &datagrams {
        link.send_fragmented(udp(v6, 5353, 7, payload));
    }
    let sent = link.run();
    let echoed = udp_payloads(&reassemble(&sent));
    assert_eq!(
        summary(&echoed),
        summary(&datagrams),
        "{} packets",
        sent.len()
    );
    assert!(
        echoed == datagrams,
        "the echoes' bytes differ from the datagrams'"
    );
}

#[test]
fn two_big_udp_datagrams_in_a_row_are_both_echoed_v4() {
    two_big_udp_echoes(false);
}

#[test]
fn two_big_udp_datagrams_in_a_row_are_both_echoed_v6() {
    two_big_udp_echoes(true);
}

/// `tunstack connect -u` with 200,000 bytes of stdin: an app sends big datagrams as fast as
/// `send_to` takes them (retrying on `WouldBlock` once the stack has polled); every one
/// leaves whole and in order, mixed with small ones.
fn app_burst(v6: bool) {
    let mut link = Link::new();
    let any: IpAddr = if v6 { "::" } else { "0.0.0.0" }.parse().unwrap();
    let socket = UdpSocket::bind(&link.stack, SocketAddr::new(any, 0)).unwrap();
    let peer = if v6 {
        SocketAddr::new(IpAddr::from(PEER6), 5000)
    } else {
        SocketAddr::new(IpAddr::from(PEER4), 5000)
    };
    let datagrams: Vec<Vec<u8>> = (0..40)
        .map(|i| data(i, if i % 5 == 4 { 100 } else { 8000 }))
        .collect();
    let mut sent = Vec::new();
    let mut next = 0;
    for _ in 0..1000 {
        while next < datagrams.len() {
            match socket.send_to(&datagrams[next], peer) {
                Ok(n) => {
                    assert_eq!(n, datagrams[next].len());
                    next += 1;
                }
                Err(Error::WouldBlock) => break,
                Err(err) => panic!("send_to failed: {err}"),
            }
        }
        sent.extend(link.run());
        if next == datagrams.len() {
            break;
        }
    }
    assert_eq!(next, datagrams.len(), "send_to never took them all");
    let received = udp_payloads(&reassemble(&sent));
    assert_eq!(summary(&received), summary(&datagrams));
    assert!(
        received == datagrams,
        "the bytes received differ from the bytes sent"
    );
    assert_eq!(link.stack.stats().tx_unsent, 0);
}

#[test]
fn a_burst_of_big_datagrams_leaves_whole_and_in_order_v4() {
    app_burst(false);
}

#[test]
fn a_burst_of_big_datagrams_leaves_whole_and_in_order_v6() {
    app_burst(true);
}
