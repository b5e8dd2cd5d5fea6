//! Fuzzing ingress: random bytes and mutated valid packets (IPv4/IPv6, TCP/UDP/ICMP, options,
//! fragments, lying lengths) into a stack with sockets bound and the trace and pcap on. No
//! input may panic it, and afterwards it must still complete a handshake and an echo.

use etherparse::{IpNumber, PacketBuilder, SlicedPacket, TransportSlice};
use proptest::prelude::*;
use std::cell::Cell;
use std::rc::Rc;
use tunstack::app::EchoServer;
use tunstack::packet::classify;
use tunstack::pcap::PcapObserver;
use tunstack::phy::MemoryLink;
use tunstack::smoltcp::time::{Duration, Instant};
use tunstack::trace::{Observers, Tracer};
use tunstack::{Stack, StackConfig, TcpStream};

mod fuzz;

use fuzz::packets::*;
use fuzz::strategies::*;

/// The stack under test, the peer's end of the link, and what the scripted setup learned.
struct Harness {
    stack: Stack,
    device: MemoryLink,
    wire: MemoryLink,
    echo: EchoServer,
    now: Instant,
    lines: Rc<Cell<u64>>,
    stack_isn: u32,
    client: Option<(TcpStream, u16)>,
    /// Packets the stack sent that do not parse or fail their checksum.
    bad_output: Vec<Vec<u8>>,
}

/// The fields of a TCP segment the stack sent.
#[derive(Debug)]
struct Sent {
    udp: bool,
    dport: u16,
    syn: bool,
    seq: u32,
    payload: Vec<u8>,
}

impl Harness {
    fn new() -> Harness {
        let (mut device, wire) = MemoryLink::pair(1500);
        let stack = Stack::new(StackConfig::default(), &mut device, Instant::ZERO);
        let lines = Rc::new(Cell::new(0));
        let count = lines.clone();
        let tracer = Tracer::new(move |line| {
            assert!(!line.is_empty());
            count.set(count.get() + 1);
        });
        let pcap = PcapObserver::new(std::io::sink(), "sink").unwrap();
        stack.set_observer(Box::new(Observers(vec![Box::new(tracer), Box::new(pcap)])));
        let echo = EchoServer::bind(&stack, "[::]:7".parse().unwrap(), 8).unwrap();
        Harness {
            stack,
            device,
            wire,
            echo,
            now: Instant::ZERO,
            lines,
            stack_isn: 0,
            client: None,
            bad_output: Vec::new(),
        }
    }

    /// The clock moves `ms`; the stack polls and the echo app serves until quiet.
    fn exchange(&mut self, ms: u16) -> Vec<Sent> {
        self.now += Duration::from_millis(u64::from(ms));
        let mut ready = Vec::new();
        for _ in 0..8 {
            self.stack.poll(self.now, &mut self.device);
            self.stack.take_ready(&mut ready);
            if ready.is_empty() {
                break;
            }
            self.echo.on_ready(&ready);
            ready.clear();
        }
        let mut sent = Vec::new();
        while let Some(packet) = self.wire.recv_raw() {
            match classify(&packet) {
                Ok(info) if info.checksum_ok => {}
                _ => self.bad_output.push(packet.clone()),
            }
            match SlicedPacket::from_ip(&packet).map(|p| p.transport) {
                Ok(Some(TransportSlice::Tcp(tcp))) => sent.push(Sent {
                    udp: false,
                    dport: tcp.destination_port(),
                    syn: tcp.syn(),
                    seq: tcp.sequence_number(),
                    payload: tcp.payload().to_vec(),
                }),
                Ok(Some(TransportSlice::Udp(udp))) => sent.push(Sent {
                    udp: true,
                    dport: udp.destination_port(),
                    syn: false,
                    seq: 0,
                    payload: udp.payload().to_vec(),
                }),
                _ => {}
            }
        }
        sent
    }

    /// An established connection from the peer's port 40000, and/or one the stack opened.
    fn set_up(&mut self, handshake: bool, connect: bool) {
        if handshake {
            self.wire
                .send_raw(segment(40000, 7, PEER_ISN, None, "S", &[]));
            let sent = self.exchange(1);
            self.stack_isn = sent.first().map_or(0, |s| s.seq);
            let ack = self.stack_isn.wrapping_add(1);
            self.wire
                .send_raw(segment(40000, 7, PEER_ISN + 1, Some(ack), "", &[]));
            self.exchange(1);
        }
        if connect {
            let stream = TcpStream::connect(&self.stack, "192.168.69.1:80".parse().unwrap());
            let stream = stream.unwrap();
            let port = stream.local_addr().port();
            self.client = Some((stream, port));
            self.exchange(1);
        }
    }

    /// A new connection from [`CHECK_PORT`] must complete and echo `ping`, and a datagram
    /// from that port must come back.
    fn still_serves(&mut self) -> Result<(), String> {
        self.wire
            .send_raw(segment(CHECK_PORT, 7, 7000, None, "S", &[]));
        let sent = self.exchange(1);
        let synack = sent
            .iter()
            .find(|s| !s.udp && s.dport == CHECK_PORT && s.syn);
        let Some(synack) = synack else {
            return Err(format!("no SYN-ACK; the stack sent {sent:?}"));
        };
        let ack = Some(synack.seq.wrapping_add(1));
        self.wire
            .send_raw(segment(CHECK_PORT, 7, 7001, ack, "", &[]));
        self.wire
            .send_raw(segment(CHECK_PORT, 7, 7001, ack, "P", b"ping"));
        let mut datagram = Vec::new();
        let udp = PacketBuilder::ipv4(PEER4, US4, 64).udp(CHECK_PORT, 7);
        udp.write(&mut datagram, b"pong").unwrap();
        self.wire.send_raw(datagram);
        let (mut echoed, mut datagrams) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            for sent in self.exchange(50) {
                match (sent.udp, sent.dport == CHECK_PORT) {
                    (false, true) => echoed.extend(sent.payload),
                    (true, true) => datagrams.push(sent.payload),
                    _ => {}
                }
            }
        }
        if echoed != b"ping" {
            return Err(format!("tcp echo came back as {echoed:?}"));
        }
        if datagrams != [b"pong"] {
            return Err(format!("udp echo came back as {datagrams:?}"));
        }
        Ok(())
    }

    fn build(&self, template: &Template) -> Vec<u8> {
        let (src, dst) = addresses(template);
        let ip = ip_headers(template, src, dst);
        let mut out = Vec::new();
        let payload = &template.payload;
        let client_port = self.client.as_ref().map_or(1, |(_, port)| *port);
        let port = |p: Port| match p {
            Port::Fixed(port) => port,
            Port::Client => client_port,
        };
        let written = match &template.transport {
            Transport::Tcp {
                sport,
                dport,
                numbers,
                flags,
                window,
                options,
            } => {
                let (seq, ack) = self.numbers(*numbers);
                let sport = if matches!(dport, Port::Client) {
                    80
                } else {
                    *sport
                };
                let tcp = ip.tcp(sport, port(*dport), seq, *window);
                let tcp = with_flags(tcp, *flags, ack);
                let mut options = options.clone();
                options.truncate(options.len().min(40) / 4 * 4);
                let tcp = tcp.options_raw(&options).unwrap();
                tcp.write(&mut out, payload).is_ok()
            }
            Transport::Udp { sport, dport } => ip
                .udp(*sport, port(*dport))
                .write(&mut out, payload)
                .is_ok(),
            Transport::Icmp { kind, rest, quote } => {
                let body = match quote {
                    Some(len) => quoted_segment(template.v6, client_port, *len),
                    None => payload.clone(),
                };
                let (icmp_type, code) = *kind;
                let written = if template.v6 {
                    ip.icmpv6_raw(icmp_type, code, *rest).write(&mut out, &body)
                } else {
                    ip.icmpv4_raw(icmp_type, code, *rest).write(&mut out, &body)
                };
                written.is_ok()
            }
            Transport::Other(protocol) => raw_ip(template, IpNumber(*protocol), &mut out).is_ok(),
        };
        assert!(written, "etherparse could not build {template:?}");
        out
    }

    fn numbers(&self, (seq, ack): (Number, Number)) -> (u32, u32) {
        let near = |base: u32, n: Number| match n {
            Number::Near(delta) => base.wrapping_add(1).wrapping_add_signed(delta),
            Number::Any(value) => value,
        };
        (near(PEER_ISN, seq), near(self.stack_isn, ack))
    }
}

fn run(case: &Case) -> Result<(), String> {
    let mut harness = Harness::new();
    harness.set_up(case.handshake, case.connect);
    for (input, ms) in &case.steps {
        let packets = match input {
            Input::Raw(bytes) => vec![bytes.clone()],
            Input::Built(template, mutations) => {
                let packet = harness.build(template);
                mutations.iter().fold(vec![packet], mutate)
            }
        };
        for packet in packets {
            harness.wire.send_raw(packet);
        }
        harness.exchange(*ms);
    }
    harness.still_serves()?;
    if let Some(packet) = harness.bad_output.first() {
        return Err(format!("the stack sent a broken packet: {packet:02x?}"));
    }
    let stats = harness.stack.stats();
    let lines = harness.lines.get();
    if lines != stats.rx_packets + stats.tx_packets {
        return Err(format!("{lines} trace lines for {stats}"));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_input_panics_or_breaks_the_stack(case in case()) {
        run(&case).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn the_health_check_fails_on_a_stack_that_stopped_listening() {
    let mut harness = Harness::new();
    assert_eq!(harness.still_serves(), Ok(()));
    let mut harness = Harness::new();
    let (mut device, _) = MemoryLink::pair(1500);
    let other = Stack::new(StackConfig::default(), &mut device, Instant::ZERO);
    harness.echo = EchoServer::bind(&other, "[::]:7".parse().unwrap(), 8).unwrap();
    assert!(harness.still_serves().is_err());
}

#[test]
fn valid_templates_build_valid_packets() {
    let config = ProptestConfig {
        cases: 500,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let harness = Harness::new();
    runner
        .run(&template(), |template| {
            let packet = harness.build(&template);
            // Any other protocol number gets raw bytes: those need not parse.
            if !matches!(template.transport, Transport::Other(_)) {
                prop_assert!(SlicedPacket::from_ip(&packet).is_ok(), "{packet:02x?}");
            }
            Ok(())
        })
        .unwrap();
}

/// Found by this fuzzer; the fix belongs in `src/stack/ingress.rs`: the first fragment of a
/// SYN finds no socket (`existing_owner` does not ask the listener), so the reassembled SYN
/// reaches the interface with an empty socket set and smoltcp answers RST.
#[test]
fn a_fragmented_syn_reaches_the_listener() {
    let mut harness = Harness::new();
    let syn = segment(40000, 7, PEER_ISN, None, "S", &[0x55; 64]);
    for fragment in fragmentize(&syn, 40).unwrap() {
        harness.wire.send_raw(fragment);
    }
    let sent = harness.exchange(1);
    assert!(
        sent.iter().any(|s| s.syn && s.dport == 40000),
        "no SYN-ACK: {sent:?}"
    );
}
