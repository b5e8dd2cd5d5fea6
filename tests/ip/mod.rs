//! The harness of tests/ip_conformance.rs: the echo stack on the in-memory link with a
//! virtual clock, a test playing the host on the other end with exact packets built by
//! etherparse, and the builders for what etherparse does not make itself (IPv6 extension
//! headers, fragments).
#![allow(dead_code)]

use etherparse::icmpv4::DestUnreachableHeader;
use etherparse::icmpv6::{DestUnreachableCode, ParameterProblemCode, ParameterProblemHeader};
use etherparse::{Icmpv4Type, Icmpv6Type, Ipv4Header, Ipv4Options, PacketBuilder};
use tunstack::app::EchoServer;
use tunstack::phy::MemoryLink;
use tunstack::smoltcp::time::{Duration, Instant};
use tunstack::trace::{TraceLines, Tracer};
use tunstack::{SocketId, Stack, StackConfig};

pub const PEER4: [u8; 4] = [192, 168, 69, 1];
pub const US4: [u8; 4] = [192, 168, 69, 2];
pub const PEER6: [u8; 16] = [0xfd, 0x69, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const US6: [u8; 16] = [0xfd, 0x69, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
/// All nodes on the link.
pub const ALL_NODES: [u8; 16] = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// The stack under test, its echo app on port 7, and the host's end of the link.
pub struct Host {
    pub stack: Stack,
    device: MemoryLink,
    wire: MemoryLink,
    echo: EchoServer,
    pub now: Instant,
    pub trace: TraceLines,
    /// Every socket id the stack reported ready.
    pub ready: Vec<SocketId>,
}

impl Host {
    pub fn new() -> Host {
        Host::with_config(StackConfig::default())
    }

    pub fn with_config(config: StackConfig) -> Host {
        let (mut device, wire) = MemoryLink::pair(1500);
        let stack = Stack::new(config, &mut device, Instant::ZERO);
        let (tracer, trace) = Tracer::capture();
        stack.set_observer(Box::new(tracer));
        let echo = EchoServer::bind(&stack, "[::]:7".parse().unwrap(), 8).unwrap();
        Host {
            stack,
            device,
            wire,
            echo,
            now: Instant::ZERO,
            trace,
            ready: Vec::new(),
        }
    }

    /// Sends `packet` to the stack, which polls and serves; returns every packet it sent.
    pub fn send(&mut self, packet: Vec<u8>) -> Vec<Vec<u8>> {
        self.wire.send_raw(packet);
        self.poll()
    }

    /// Polls the stack, lets the echo app serve, and returns what the stack sent.
    pub fn poll(&mut self) -> Vec<Vec<u8>> {
        let mut ready = Vec::new();
        for _ in 0..4 {
            self.stack.poll(self.now, &mut self.device);
            self.stack.take_ready(&mut ready);
            self.echo.on_ready(&ready);
            self.ready.append(&mut ready);
        }
        std::iter::from_fn(|| self.wire.recv_raw()).collect()
    }

    /// Moves the virtual clock on.
    pub fn wait(&mut self, how_long: Duration) {
        self.now += how_long;
    }

    /// The verdict part (after `=> `) of each inbound trace line so far.
    pub fn verdicts(&self) -> Vec<String> {
        self.trace
            .take()
            .iter()
            .filter_map(|line| Some(line.split_once("=> ")?.1.to_string()))
            .collect()
    }
}

pub fn echo_request4(ttl: u8, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(PEER4, US4, ttl)
        .icmpv4_echo_request(0x77, seq)
        .write(&mut out, payload)
        .unwrap();
    out
}

pub fn echo_reply4(to: [u8; 4], seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(US4, to, 64)
        .icmpv4_echo_reply(0x77, seq)
        .write(&mut out, payload)
        .unwrap();
    out
}

pub fn echo_request6(hop_limit: u8, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv6(PEER6, US6, hop_limit)
        .icmpv6_echo_request(0x77, seq)
        .write(&mut out, payload)
        .unwrap();
    out
}

pub fn echo_reply6(seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv6(US6, PEER6, 64)
        .icmpv6_echo_reply(0x77, seq)
        .write(&mut out, payload)
        .unwrap();
    out
}

pub fn udp4(src: [u8; 4], dst: [u8; 4], ports: (u16, u16), payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(src, dst, 64)
        .udp(ports.0, ports.1)
        .write(&mut out, payload)
        .unwrap();
    out
}

pub fn udp6(src: [u8; 16], dst: [u8; 16], ports: (u16, u16), payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv6(src, dst, 64)
        .udp(ports.0, ports.1)
        .write(&mut out, payload)
        .unwrap();
    out
}

/// `packet` (IPv6 without extension headers) with `headers` put between the fixed header
/// and the upper-layer header: each given as `(type, bytes)`, its Next Header byte (the
/// first) filled in here. The upper-layer checksum stays right: it does not cover them.
pub fn with_extensions(packet: &[u8], headers: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let upper = packet[6];
    let mut out = packet[..40].to_vec();
    out[6] = headers.first().map_or(upper, |h| h.0);
    for (i, (_, bytes)) in headers.iter().enumerate() {
        assert_eq!(
            bytes.len() % 8,
            0,
            "extension headers are whole 8-byte units"
        );
        let mut bytes = bytes.clone();
        bytes[0] = headers.get(i + 1).map_or(upper, |h| h.0);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(&packet[40..]);
    let payload_len = (out.len() - 40) as u16;
    out[4..6].copy_from_slice(&payload_len.to_be_bytes());
    out
}

pub const HOP_BY_HOP: u8 = 0;
pub const ROUTING: u8 = 43;
pub const FRAGMENT: u8 = 44;
pub const DESTINATION_OPTIONS: u8 = 60;

/// An IPv6 fragment of `whole` (a packet without extension headers): `part` of its
/// payload at byte `offset` (a multiple of 8), with the more-fragments flag `more`.
pub fn fragment6(whole: &[u8], id: u32, offset: usize, part: &[u8], more: bool) -> Vec<u8> {
    let mut out = whole[..40].to_vec();
    out[6] = FRAGMENT;
    let field = ((offset / 8) as u16) << 3 | u16::from(more);
    out.extend_from_slice(&[whole[6], 0]);
    out.extend_from_slice(&field.to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(part);
    let payload_len = (out.len() - 40) as u16;
    out[4..6].copy_from_slice(&payload_len.to_be_bytes());
    out
}

/// An IPv4 fragment of `whole` (20-byte header): `part` of its payload at byte `offset`.
pub fn fragment4(whole: &[u8], id: u16, offset: usize, part: &[u8], more: bool) -> Vec<u8> {
    let mut out = whole[..20].to_vec();
    out[2..4].copy_from_slice(&((20 + part.len()) as u16).to_be_bytes());
    out[4..6].copy_from_slice(&id.to_be_bytes());
    let field = (offset / 8) as u16 | if more { 0x2000 } else { 0 };
    out[6..8].copy_from_slice(&field.to_be_bytes());
    out[10..12].copy_from_slice(&[0, 0]);
    let sum = etherparse::checksum::Sum16BitWords::new()
        .add_slice(&out)
        .ones_complement();
    out[10..12].copy_from_slice(&sum.to_ne_bytes());
    out.extend_from_slice(part);
    out
}

// ---------------------------------------------------------------- the stack's answers

/// The ICMPv6 Parameter Problem the stack sends about `packet`.
pub fn parameter_problem(code: ParameterProblemCode, pointer: u32, packet: &[u8]) -> Vec<u8> {
    let problem = Icmpv6Type::ParameterProblem(ParameterProblemHeader { code, pointer });
    let mut out = Vec::new();
    PacketBuilder::ipv6(US6, PEER6, 64)
        .icmpv6(problem)
        .write(&mut out, packet)
        .unwrap();
    out
}

pub fn port_unreachable4(to: [u8; 4], packet: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(US4, to, 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(
            DestUnreachableHeader::Port,
        ))
        .write(&mut out, packet)
        .unwrap();
    out
}

pub fn port_unreachable6(from: [u8; 16], to: [u8; 16], packet: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv6(from, to, 64)
        .icmpv6(Icmpv6Type::DestinationUnreachable(
            DestUnreachableCode::Port,
        ))
        .write(&mut out, packet)
        .unwrap();
    out
}

/// A UDP datagram from the host to the echo port, with `headers` in front of it.
pub fn udp_with(headers: &[(u8, Vec<u8>)], dst: [u8; 16]) -> Vec<u8> {
    with_extensions(&udp6(PEER6, dst, (40000, 7), b"options"), headers)
}

pub fn echoed() -> Vec<u8> {
    udp6(US6, PEER6, (7, 40000), b"options")
}

/// A Routing header of type 0 with one address and `segments_left`.
pub fn routing_header(segments_left: u8) -> Vec<u8> {
    let mut header = vec![0, 2, 0, segments_left, 0, 0, 0, 0];
    header.extend_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]);
    header
}

/// An IPv4 header from `src` to `dst` with `options`, for an ICMP message.
pub fn header_with_options(src: [u8; 4], dst: [u8; 4], options: &[u8]) -> Ipv4Header {
    let mut header = Ipv4Header::new(0, 64, etherparse::IpNumber::ICMP, src, dst).unwrap();
    header.options = Ipv4Options::try_from(options).unwrap();
    header
}

pub fn port_unreachable_from_peer(datagram: &[u8]) -> Vec<u8> {
    let mut error = Vec::new();
    PacketBuilder::ipv4(PEER4, US4, 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(
            DestUnreachableHeader::Port,
        ))
        .write(&mut error, datagram)
        .unwrap();
    error
}
