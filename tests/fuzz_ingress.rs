//! Fuzzing ingress: random bytes and mutated valid packets (IPv4/IPv6, TCP/UDP/ICMP, options,
//! fragments, lying lengths) into a stack with sockets bound and the trace and pcap on. No
//! input may panic it, and afterwards it must still complete a handshake and an echo.

use etherparse::{
    IpFragOffset, IpHeaders, IpNumber, Ipv4Header, Ipv6Extensions, Ipv6FlowLabel,
    Ipv6FragmentHeader, Ipv6Header, PacketBuilder, PacketBuilderStep, SlicedPacket, TcpHeader,
    TransportSlice,
};
use proptest::collection::vec;
use proptest::option::weighted;
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

const PEER4: [u8; 4] = [192, 168, 69, 1];
const US4: [u8; 4] = [192, 168, 69, 2];
const PEER6: [u8; 16] = [0xfd, 0x69, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const US6: [u8; 16] = [0xfd, 0x69, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
/// The health check's client port: fuzzed packets never use it.
const CHECK_PORT: u16 = 50000;
/// The peer's ISN in the scripted handshake before the fuzzed packets.
const PEER_ISN: u32 = 1000;

/// A destination port: a fixed one, or the port of the stack's own outgoing connection.
#[derive(Debug, Clone, Copy)]
enum Port {
    Fixed(u16),
    Client,
}

/// A sequence or ack number: near what the scripted connection expects, or anything.
#[derive(Debug, Clone, Copy)]
enum Number {
    Near(i32),
    Any(u32),
}

#[derive(Debug, Clone)]
enum Transport {
    Tcp {
        sport: u16,
        dport: Port,
        numbers: (Number, Number),
        flags: u8,
        window: u16,
        options: Vec<u8>,
    },
    Udp {
        sport: u16,
        dport: Port,
    },
    /// Any ICMP message; `quote` makes the payload our own TCP segment, cut to that length.
    Icmp {
        kind: (u8, u8),
        rest: [u8; 4],
        quote: Option<usize>,
    },
    Other(u8),
}

#[derive(Debug, Clone)]
struct Template {
    v6: bool,
    /// Last octet of a source address other than the peer's (ours, broadcast, ...).
    spoofed_source: Option<u8>,
    hop_limit: u8,
    /// A lone fragment: offset in 8-byte units and the more-fragments flag.
    fragment: Option<(u16, bool)>,
    transport: Transport,
    payload: Vec<u8>,
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: usize,
        mask: u8,
    },
    Truncate(usize),
    Append(Vec<u8>),
    /// Sets the IP length field; with `fix`, IPv4's header checksum is made right again.
    LieLength {
        value: u16,
        fix: bool,
    },
    /// Cuts the packet into two real fragments, maybe reordered or duplicated.
    Fragmentize {
        cut: usize,
        reverse: bool,
        twice: bool,
    },
}

#[derive(Debug, Clone)]
enum Input {
    Raw(Vec<u8>),
    Built(Template, Vec<Mutation>),
}

#[derive(Debug, Clone)]
struct Case {
    handshake: bool,
    connect: bool,
    /// Each input with the milliseconds the clock moves before it.
    steps: Vec<(Input, u16)>,
}

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

fn addresses(template: &Template) -> ([u8; 16], [u8; 16]) {
    let widen = |a: [u8; 4]| {
        let mut wide = [0; 16];
        wide[..4].copy_from_slice(&a);
        wide
    };
    let (mut src, dst) = match template.v6 {
        true => (PEER6, US6),
        false => (widen(PEER4), widen(US4)),
    };
    if let Some(last) = template.spoofed_source {
        let at = if template.v6 { 15 } else { 3 };
        src[at] = last;
    }
    (src, dst)
}

fn ip_headers(template: &Template, src: [u8; 16], dst: [u8; 16]) -> PacketBuilderStep<IpHeaders> {
    let (offset, more) = template.fragment.unwrap_or((0, false));
    let offset = IpFragOffset::try_new(offset).unwrap();
    let identification = 0x4242;
    if template.v6 {
        let mut extensions = Ipv6Extensions::default();
        if template.fragment.is_some() {
            let frag = Ipv6FragmentHeader::new(IpNumber::TCP, offset, more, identification);
            extensions.fragment = Some(frag);
        }
        let header = Ipv6Header {
            traffic_class: 0,
            flow_label: Ipv6FlowLabel::ZERO,
            payload_length: 0,
            next_header: IpNumber::TCP,
            hop_limit: template.hop_limit,
            source: src,
            destination: dst,
        };
        return PacketBuilder::ip(IpHeaders::Ipv6(header, extensions));
    }
    let (s, d) = (&src[..4], &dst[..4]);
    let mut header = Ipv4Header::new(
        0,
        template.hop_limit,
        IpNumber::TCP,
        s.try_into().unwrap(),
        d.try_into().unwrap(),
    )
    .unwrap();
    header.identification = identification as u16;
    header.more_fragments = more;
    header.fragment_offset = offset;
    PacketBuilder::ip(IpHeaders::Ipv4(header, Default::default()))
}

/// An IP header with any protocol number and the payload, extension headers or not: etherparse's
/// builder panics on next header 0 without a hop-by-hop header (an etherparse 0.21 bug).
fn raw_ip(template: &Template, protocol: IpNumber, out: &mut Vec<u8>) -> std::io::Result<()> {
    let (src, dst) = addresses(template);
    let payload = &template.payload;
    if template.v6 {
        let header = Ipv6Header {
            traffic_class: 0,
            flow_label: Ipv6FlowLabel::ZERO,
            payload_length: payload.len() as u16,
            next_header: protocol,
            hop_limit: template.hop_limit,
            source: src,
            destination: dst,
        };
        header.write(out)?;
    } else {
        let (s, d) = (&src[..4], &dst[..4]);
        let (s, d) = (s.try_into().unwrap(), d.try_into().unwrap());
        let header = Ipv4Header::new(payload.len() as u16, template.hop_limit, protocol, s, d);
        header.unwrap().write(out)?;
    }
    out.extend_from_slice(payload);
    Ok(())
}

/// Flags from the bits of `flags`: FIN, SYN, RST, PSH, ACK, URG, ECE, CWR.
fn with_flags(
    tcp: PacketBuilderStep<TcpHeader>,
    flags: u8,
    ack: u32,
) -> PacketBuilderStep<TcpHeader> {
    let setters: [&dyn Fn(PacketBuilderStep<TcpHeader>) -> PacketBuilderStep<TcpHeader>; 8] = [
        &|t| t.fin(),
        &|t| t.syn(),
        &|t| t.rst(),
        &|t| t.psh(),
        &|t| t.ack(ack),
        &|t| t.urg(1),
        &|t| t.ece(),
        &|t| t.cwr(),
    ];
    (0..8)
        .zip(setters)
        .filter(|(bit, _)| flags & (1 << bit) != 0)
        .fold(tcp, |tcp, (_, set)| set(tcp))
}

/// A well-formed IPv4 segment from the peer; `flags` in letters ("S", "P", "F", "R").
fn segment(
    sport: u16,
    dport: u16,
    seq: u32,
    ack: Option<u32>,
    flags: &str,
    data: &[u8],
) -> Vec<u8> {
    let mut tcp = PacketBuilder::ipv4(PEER4, US4, 64).tcp(sport, dport, seq, 64240);
    for flag in flags.chars() {
        tcp = match flag {
            'S' => tcp.syn(),
            'F' => tcp.fin(),
            'R' => tcp.rst(),
            'P' => tcp.psh(),
            _ => tcp,
        };
    }
    if let Some(ack) = ack {
        tcp = tcp.ack(ack);
    }
    let mut packet = Vec::new();
    tcp.write(&mut packet, data).unwrap();
    packet
}

/// What an ICMP error quotes: the stack's SYN to the peer's port 80, cut to `len` bytes.
fn quoted_segment(v6: bool, client_port: u16, len: usize) -> Vec<u8> {
    let ip = match v6 {
        true => PacketBuilder::ipv6(US6, PEER6, 64),
        false => PacketBuilder::ipv4(US4, PEER4, 64),
    };
    let mut packet = Vec::new();
    ip.tcp(client_port, 80, 1, 1000)
        .syn()
        .write(&mut packet, &[])
        .unwrap();
    packet.truncate(len);
    packet
}

/// Applies one mutation; a packet may become several (fragments).
fn mutate(packets: Vec<Vec<u8>>, mutation: &Mutation) -> Vec<Vec<u8>> {
    packets
        .into_iter()
        .flat_map(|mut packet| {
            match mutation {
                Mutation::Flip { at, mask } => {
                    let len = packet.len().max(1);
                    if let Some(byte) = packet.get_mut(at % len) {
                        *byte ^= mask;
                    }
                }
                Mutation::Truncate(len) => packet.truncate(*len),
                Mutation::Append(bytes) => packet.extend_from_slice(bytes),
                Mutation::LieLength { value, fix } => lie_length(&mut packet, *value, *fix),
                Mutation::Fragmentize {
                    cut,
                    reverse,
                    twice,
                } => {
                    let mut pieces = fragmentize(&packet, *cut).unwrap_or(vec![packet]);
                    if *reverse {
                        pieces.reverse();
                    }
                    if *twice && let Some(first) = pieces.first().cloned() {
                        pieces.push(first);
                    }
                    return pieces;
                }
            }
            vec![packet]
        })
        .collect()
}

fn lie_length(packet: &mut [u8], value: u16, fix: bool) {
    let v6 = packet.first().is_some_and(|b| b >> 4 == 6);
    let at = if v6 { 4 } else { 2 };
    if let Some(field) = packet.get_mut(at..at + 2) {
        field.copy_from_slice(&value.to_be_bytes());
    }
    if fix
        && !v6
        && let Ok((header, _)) = Ipv4Header::from_slice(packet)
    {
        let checksum = header.calc_header_checksum().to_be_bytes();
        if let Some(field) = packet.get_mut(10..12) {
            field.copy_from_slice(&checksum);
        }
    }
}

/// Two fragments of `packet`'s IP payload, cut at `cut` rounded down to 8 bytes.
fn fragmentize(packet: &[u8], cut: usize) -> Option<Vec<Vec<u8>>> {
    let mut pieces = Vec::new();
    if let Ok((header, rest)) = Ipv4Header::from_slice(packet) {
        let cut = (cut % rest.len().max(1)) / 8 * 8;
        for (offset, more, data) in [(0, true, &rest[..cut]), (cut, false, &rest[cut..])] {
            let mut fragment = header.clone();
            fragment.more_fragments = more;
            fragment.fragment_offset = IpFragOffset::try_new((offset / 8) as u16).ok()?;
            fragment.set_payload_len(data.len()).ok()?;
            let mut out = Vec::new();
            fragment.write(&mut out).ok()?;
            out.extend_from_slice(data);
            pieces.push(out);
        }
        return Some(pieces);
    }
    let (header, rest) = Ipv6Header::from_slice(packet).ok()?;
    let cut = (cut % rest.len().max(1)) / 8 * 8;
    for (offset, more, data) in [(0, true, &rest[..cut]), (cut, false, &rest[cut..])] {
        let offset = IpFragOffset::try_new((offset / 8) as u16).ok()?;
        let fragment = Ipv6FragmentHeader::new(header.next_header, offset, more, 7);
        let mut ip = header.clone();
        ip.next_header = IpNumber::IPV6_FRAGMENTATION_HEADER;
        ip.set_payload_length(8 + data.len()).ok()?;
        let mut out = Vec::new();
        ip.write(&mut out).ok()?;
        fragment.write(&mut out).ok()?;
        out.extend_from_slice(data);
        pieces.push(out);
    }
    Some(pieces)
}

fn port() -> impl Strategy<Value = Port> {
    prop_oneof![
        3 => Just(Port::Fixed(7)),
        1 => Just(Port::Fixed(9)),
        1 => Just(Port::Client),
        1 => any::<u16>().prop_map(Port::Fixed),
    ]
}

fn source_port() -> impl Strategy<Value = u16> {
    prop_oneof![3 => Just(40000), 1 => 1..CHECK_PORT, 1 => CHECK_PORT + 1..=u16::MAX]
}

fn number() -> impl Strategy<Value = Number> {
    prop_oneof![
        3 => (-3000i32..70_000).prop_map(Number::Near),
        1 => any::<u32>().prop_map(Number::Any),
    ]
}

fn transport() -> impl Strategy<Value = Transport> {
    let tcp = (
        source_port(),
        port(),
        (number(), number()),
        any::<u8>(),
        any::<u16>(),
        vec(any::<u8>(), 0..44),
    )
        .prop_map(
            |(sport, dport, numbers, flags, window, options)| Transport::Tcp {
                sport,
                dport,
                numbers,
                flags,
                window,
                options,
            },
        );
    let udp = (source_port(), port()).prop_map(|(sport, dport)| Transport::Udp { sport, dport });
    let kind = prop_oneof![
        Just((3, 3)),
        Just((1, 4)),
        Just((8, 0)),
        Just((128, 0)),
        any::<(u8, u8)>()
    ];
    let icmp = (kind, any::<[u8; 4]>(), weighted(0.5, 0usize..64))
        .prop_map(|(kind, rest, quote)| Transport::Icmp { kind, rest, quote });
    prop_oneof![
        6 => tcp,
        2 => udp,
        2 => icmp,
        1 => any::<u8>().prop_map(Transport::Other),
    ]
}

fn template() -> impl Strategy<Value = Template> {
    (
        any::<bool>(),
        weighted(0.05, any::<u8>()),
        prop_oneof![4 => Just(64u8), 1 => any::<u8>()],
        weighted(0.05, (0u16..200, any::<bool>())),
        transport(),
        vec(any::<u8>(), 0..200),
    )
        .prop_map(
            |(v6, spoofed_source, hop_limit, fragment, transport, payload)| Template {
                v6,
                spoofed_source,
                hop_limit,
                fragment,
                transport,
                payload,
            },
        )
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 1u8..).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        2 => (0usize..80).prop_map(Mutation::Truncate),
        1 => vec(any::<u8>(), 1..16).prop_map(Mutation::Append),
        2 => (any::<u16>(), any::<bool>()).prop_map(|(value, fix)| Mutation::LieLength { value, fix }),
        2 => (0usize..300, any::<bool>(), any::<bool>())
            .prop_map(|(cut, reverse, twice)| Mutation::Fragmentize { cut, reverse, twice }),
    ]
}

fn input() -> impl Strategy<Value = Input> {
    let raw = (
        prop_oneof![Just(0x45u8), Just(0x60), any::<u8>()],
        vec(any::<u8>(), 0..80),
    )
        .prop_map(|(first, rest)| Input::Raw([vec![first], rest].concat()));
    prop_oneof![
        1 => raw,
        3 => (template(), vec(mutation(), 0..3)).prop_map(|(t, m)| Input::Built(t, m)),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        any::<bool>(),
        any::<bool>(),
        vec((input(), 0u16..3000), 1..10),
    )
        .prop_map(|(handshake, connect, steps)| Case {
            handshake,
            connect,
            steps,
        })
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
