//! The packet trace and the pcap writer on the in-memory link: a scripted peer's handshake,
//! echo and close traced line by line, and a pcap of a two-stack exchange read back.

mod sim;

use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use sim::{Pair, SERVER4, addr};
use std::io::Read;
use tunstack::app::EchoServer;
use tunstack::pcap::{PcapClock, PcapObserver};
use tunstack::phy::MemoryLink;
use tunstack::smoltcp::time::{Duration, Instant};
use tunstack::trace::{Observers, TraceLines, Tracer};
use tunstack::{PacketObserver, Stack, StackConfig, TcpStream};

const PEER: [u8; 4] = [192, 168, 69, 1];
const US: [u8; 4] = [192, 168, 69, 2];

/// The echo stack on one end of the link, a test playing the peer on the other.
struct Scripted {
    stack: Stack,
    device: MemoryLink,
    wire: MemoryLink,
    echo: EchoServer,
    now: Instant,
    lines: TraceLines,
}

impl Scripted {
    fn new() -> Scripted {
        let (mut device, wire) = MemoryLink::pair(1500);
        let stack = Stack::new(StackConfig::default(), &mut device, Instant::ZERO);
        let (tracer, lines) = Tracer::capture();
        stack.set_observer(Box::new(tracer));
        let echo = EchoServer::bind(&stack, addr("0.0.0.0", 7), 8).unwrap();
        Scripted {
            stack,
            device,
            wire,
            echo,
            now: Instant::ZERO,
            lines,
        }
    }

    /// Sends a TCP segment from the peer; `flags` in tcpdump letters ("S", "P.", "F.").
    fn send(&self, dport: u16, seq: u32, ack: u32, flags: &str, payload: &[u8]) {
        self.wire.send_raw(tcp(dport, seq, ack, flags, payload));
    }

    /// One millisecond later: the stack polls and the echo app serves until all is quiet.
    /// Returns the `(seq, ack)` of the TCP segments the stack sent.
    fn exchange(&mut self) -> Vec<(u32, u32)> {
        self.now += Duration::from_millis(1);
        let mut ready = Vec::new();
        for _ in 0..10 {
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
            if let Ok(SlicedPacket {
                transport: Some(TransportSlice::Tcp(tcp)),
                ..
            }) = SlicedPacket::from_ip(&packet)
            {
                sent.push((tcp.sequence_number(), tcp.acknowledgment_number()));
            }
        }
        sent
    }
}

fn tcp(dport: u16, seq: u32, ack: u32, flags: &str, payload: &[u8]) -> Vec<u8> {
    let mut builder = PacketBuilder::ipv4(PEER, US, 64).tcp(40000, dport, seq, 64240);
    for flag in flags.chars() {
        builder = match flag {
            'S' => builder.syn(),
            'F' => builder.fin(),
            'R' => builder.rst(),
            'P' => builder.psh(),
            '.' => builder.ack(ack),
            _ => builder,
        };
    }
    let mut packet = Vec::new();
    builder.write(&mut packet, payload).unwrap();
    packet
}

#[test]
fn handshake_echo_and_close_are_traced_line_by_line() {
    let mut s = Scripted::new();
    s.send(7, 1000, 0, "S", &[]);
    let isn = s.exchange()[0].0;
    s.send(7, 1001, isn.wrapping_add(1), ".", &[]);
    s.exchange();
    s.send(7, 1001, isn.wrapping_add(1), "P.", b"hello");
    s.exchange();
    s.send(7, 1006, isn.wrapping_add(6), "F.", &[]);
    s.exchange();
    s.send(7, 1007, isn.wrapping_add(7), ".", &[]);
    s.exchange();
    let conn = "192.168.69.2:7 <-> 192.168.69.1:40000";
    let peer = "IP TCP 192.168.69.1:40000 > 192.168.69.2:7:";
    let us = "IP TCP 192.168.69.2:7 > 192.168.69.1:40000:";
    let expected = [
        format!(
            "0.001000 in  {peer} [S], seq 0, win 64240, length 0  \
             => listener *:7 -> new data socket {conn}"
        ),
        format!("0.001000 out {us} [S.], seq 0, ack 1, win 65535, length 0"),
        format!(
            "0.002000 in  {peer} [.], seq 1, ack 1, win 64240, length 0  => data socket {conn}"
        ),
        format!(
            "0.003000 in  {peer} [P.], seq 1:6, ack 1, win 64240, length 5  => data socket {conn}"
        ),
        format!("0.003000 out {us} [P.], seq 1:6, ack 6, win 65535, length 5"),
        format!(
            "0.004000 in  {peer} [F.], seq 6, ack 6, win 64240, length 0  => data socket {conn}"
        ),
        format!("0.004000 out {us} [.], seq 6, ack 7, win 65535, length 0"),
        format!("0.004000 out {us} [F.], seq 6, ack 7, win 65535, length 0"),
        format!(
            "0.005000 in  {peer} [.], seq 7, ack 7, win 64240, length 0  => data socket {conn}"
        ),
    ];
    assert_eq!(s.lines.take(), expected);
    assert_eq!(s.stack.socket_count(), 2, "closed connection not reaped");
}

#[test]
fn refused_corrupted_and_truncated_segments_say_why() {
    let mut s = Scripted::new();
    s.send(9, 5000, 0, "S", &[]);
    s.exchange();
    let mut corrupted = tcp(80, 3000, 0, "S", &[]);
    if let Some(urgent) = corrupted.last_mut() {
        *urgent ^= 0x40; // covered by the checksum only
    }
    s.wire.send_raw(corrupted);
    let mut truncated = tcp(7, 4000, 0, "S", &[]);
    truncated.truncate(30);
    s.wire.send_raw(truncated);
    s.exchange();
    assert_eq!(
        s.lines.take(),
        [
            "0.001000 in  IP TCP 192.168.69.1:40000 > 192.168.69.2:9: [S], seq 0, win 64240, \
             length 0  => no listener -> RST",
            "0.001000 out IP TCP 192.168.69.2:9 > 192.168.69.1:40000: [R.], seq 0, ack 1, \
             win 0, length 0",
            "0.002000 in  IP TCP 192.168.69.1:40000 > 192.168.69.2:80: [S], seq 3000, win 64240, \
             length 0, bad checksum  => bad-checksum -> dropped",
            "0.002000 in  unparsed, length 30  => malformed: IPv4 Packet Error: Not enough data \
             to decode 'IPv4 packet'. 40 byte(s) would be required, but only 30 byte(s) are \
             available based on the slice length. -> dropped",
        ]
    );
    assert!(
        s.stack.socket_count() == 2,
        "echo listener and udp socket only"
    );
}

#[test]
fn udp_and_icmp_lines() {
    let mut s = Scripted::new();
    for (port, payload) in [(7, &b"ping"[..]), (9, &b"lost"[..])] {
        let mut datagram = Vec::new();
        let udp = PacketBuilder::ipv4(PEER, US, 64).udp(5353, port);
        udp.write(&mut datagram, payload).unwrap();
        s.wire.send_raw(datagram);
    }
    let mut ping = Vec::new();
    let icmp = PacketBuilder::ipv4(PEER, US, 64).icmpv4_echo_request(0x1234, 7);
    icmp.write(&mut ping, b"abcdefgh").unwrap();
    s.wire.send_raw(ping);
    s.exchange();
    assert_eq!(
        s.lines.take(),
        [
            "0.001000 in  IP UDP 192.168.69.1:5353 > 192.168.69.2:7: length 4  \
             => udp socket *:7",
            "0.001000 in  IP UDP 192.168.69.1:5353 > 192.168.69.2:9: length 4  \
             => no udp socket -> ICMP port unreachable",
            "0.001000 out IP ICMP 192.168.69.2 > 192.168.69.1: type 3 code 3 \
             about UDP 192.168.69.1:5353 > 192.168.69.2:9, length 40",
            "0.001000 in  IP ICMP 192.168.69.1 > 192.168.69.2: echo request id 4660 seq 7, \
             length 16  => icmp -> stack",
            "0.001000 out IP ICMP 192.168.69.2 > 192.168.69.1: echo reply id 4660 seq 7, \
             length 16",
            "0.001000 out IP UDP 192.168.69.2:7 > 192.168.69.1:5353: length 4",
        ]
    );
}

/// A path in the temp directory, removed when dropped.
struct TempPath(std::path::PathBuf);

impl TempPath {
    fn new(name: &str) -> TempPath {
        let file = format!("tunstack-{}-{name}", std::process::id());
        let path = std::env::temp_dir().join(file);
        let _ = std::fs::remove_file(&path);
        TempPath(path)
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The records of a pcap file: `(seconds, microseconds, packet)`; checks the header.
fn read_pcap(bytes: &[u8]) -> Vec<(u32, u32, Vec<u8>)> {
    let word = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap());
    assert_eq!(word(0), 0xa1b2_c3d4, "magic");
    assert_eq!(word(20), 101, "LINKTYPE_RAW");
    let mut records = Vec::new();
    let mut at = 24;
    while at < bytes.len() {
        let (captured, original) = (word(at + 8) as usize, word(at + 12) as usize);
        assert_eq!(captured, original, "record at {at} truncated");
        let packet = bytes[at + 16..at + 16 + captured].to_vec();
        records.push((word(at), word(at + 4), packet));
        at += 16 + captured;
    }
    records
}

#[test]
fn pcap_holds_every_packet_in_and_out() {
    let path = TempPath::new("exchange.pcap");
    let mut pair = Pair::with_echo(8);
    let (tracer, lines) = Tracer::capture();
    let pcap = PcapObserver::create(&path.0).unwrap();
    pair.server
        .stack
        .set_observer(Box::new(Observers(vec![Box::new(tracer), Box::new(pcap)])));
    for server in [SERVER4, "fd69::2"] {
        let stream = TcpStream::connect(&pair.client.stack, addr(server, 7)).unwrap();
        pair.run_until("connected", 1000, |_| stream.is_connected());
        while stream.write(&[7; 3000]).is_err() {
            pair.step();
        }
        let mut echoed = 0;
        let mut buf = [0; 4096];
        pair.run_until("echoed", 10_000, |_| {
            echoed += stream.read(&mut buf).unwrap_or(0);
            echoed == 3000
        });
        stream.shutdown_write();
        pair.run_until("closed", 10_000, |_| {
            stream.read(&mut buf).is_ok_and(|n| n == 0)
        });
    }
    pair.settle(Duration::from_secs(5));
    let stats = pair.server.stack.stats();
    let records = read_pcap(&std::fs::read(&path.0).unwrap());
    assert!(stats.rx_packets > 10 && stats.tx_packets > 10, "{stats}");
    assert_eq!(records.len() as u64, stats.rx_packets + stats.tx_packets);
    assert_eq!(lines.take().len(), records.len(), "a trace line per packet");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    let now = now.unwrap().as_secs();
    for (seconds, micros, packet) in &records {
        assert!(
            u64::from(*seconds) + 60 > now && *micros < 1_000_000,
            "wall-clock stamps"
        );
        assert!(
            SlicedPacket::from_ip(packet).is_ok(),
            "not an IP packet: {packet:?}"
        );
    }
    let v6 = records.iter().filter(|(_, _, p)| p.first() == Some(&0x60));
    assert!(v6.count() > 4, "the IPv6 connection is in the capture");
}

#[test]
fn pcap_on_a_fifo_is_live_and_survives_the_reader_leaving() {
    let path = TempPath::new("live.pcap");
    let mkfifo = std::process::Command::new("mkfifo").arg(&path.0).status();
    assert!(mkfifo.unwrap().success(), "mkfifo {}", path.0.display());
    let (read_one, first_read) = std::sync::mpsc::channel();
    let reader_path = path.0.clone();
    let reader = std::thread::spawn(move || {
        let mut fifo = std::fs::File::open(reader_path).unwrap();
        let mut header_and_record = [0; 24 + 16 + 20];
        fifo.read_exact(&mut header_and_record).unwrap();
        read_one.send(header_and_record).unwrap();
        // The reader goes away here, like a closed Wireshark.
    });
    let mut pcap = PcapObserver::create(&path.0)
        .unwrap()
        .with_clock(PcapClock::Stack);
    let packet = tcp(7, 1, 0, "S", &[]);
    assert_eq!(packet.len(), 20 + 20);
    pcap.outbound(Instant::from_secs(3), &packet[..20]);
    // Read without the writer closing: the record was flushed when it was written.
    let bytes = first_read
        .recv_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    assert_eq!(read_pcap(&bytes), [(3, 0, packet[..20].to_vec())]);
    reader.join().unwrap();
    for _ in 0..3 {
        pcap.outbound(Instant::from_secs(4), &packet); // EPIPE: no panic, capture stops
    }
    assert!(!pcap.is_writing());
}
