//! The packet trace: one tcpdump-like line per packet in and out, TCP sequence numbers made
//! relative to each direction's ISN, and the stack's verdict at the end of inbound lines.
//! Also [`Observers`], which shows every packet to several observers (trace and pcap).

use crate::packet::{PacketInfo, TcpFlags, Transport, classify};
use crate::stack::{PacketObserver, Verdict};
use crate::stats::DropReason;
use etherparse::{SlicedPacket, TransportSlice};
use smoltcp::time::Instant;
use smoltcp::wire::IpAddress;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// The `log` target of [`Tracer::logging`]'s lines (level info).
pub const TARGET: &str = "tunstack::trace";

/// TCP connections whose ISNs the tracer remembers; closed ones are forgotten first.
const MAX_CONNECTIONS: usize = 4096;

/// Which way a packet went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Read from the device.
    In,
    /// Written to the device.
    Out,
}

/// A [`PacketObserver`] that describes each packet in one line and hands it to a sink.
pub struct Tracer {
    sink: Box<dyn FnMut(&str)>,
    seqs: SeqTracker,
}

impl Tracer {
    /// A tracer that passes each line to `sink`.
    pub fn new(sink: impl FnMut(&str) + 'static) -> Tracer {
        Tracer {
            sink: Box::new(sink),
            seqs: SeqTracker::default(),
        }
    }

    /// A tracer that logs each line with `log::info!` under the target [`TARGET`].
    pub fn logging() -> Tracer {
        Tracer::new(|line| log::info!(target: TARGET, "{line}"))
    }

    /// A tracer that keeps its lines in memory, and the handle to read them (for tests).
    pub fn capture() -> (Tracer, TraceLines) {
        let lines = TraceLines::default();
        let store = lines.clone();
        (Tracer::new(move |line| store.push(line)), lines)
    }

    /// Describes one packet, learning TCP sequence bases as it goes.
    pub fn line(
        &mut self,
        now: Instant,
        direction: Direction,
        packet: &[u8],
        verdict: Option<&Verdict>,
    ) -> String {
        render(now, direction, packet, verdict, Some(&mut self.seqs))
    }
}

impl PacketObserver for Tracer {
    fn inbound(&mut self, now: Instant, packet: &[u8], verdict: &Verdict) {
        let line = self.line(now, Direction::In, packet, Some(verdict));
        (self.sink)(&line);
    }

    fn outbound(&mut self, now: Instant, packet: &[u8]) {
        let line = self.line(now, Direction::Out, packet, None);
        (self.sink)(&line);
    }
}

/// Lines a [`Tracer::capture`] tracer wrote. Clones share the same lines.
#[derive(Debug, Clone, Default)]
pub struct TraceLines(Rc<RefCell<Vec<String>>>);

impl TraceLines {
    /// Takes the lines written so far.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.borrow_mut())
    }

    fn push(&self, line: &str) {
        self.0.borrow_mut().push(line.to_owned());
    }
}

/// Several observers behind one: each packet goes to all of them, in order.
#[derive(Default)]
pub struct Observers(pub Vec<Box<dyn PacketObserver>>);

impl Observers {
    /// Adds an observer after the others.
    pub fn push(&mut self, observer: Box<dyn PacketObserver>) {
        self.0.push(observer);
    }

    /// True when there is no observer to show packets to.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl PacketObserver for Observers {
    fn inbound(&mut self, now: Instant, packet: &[u8], verdict: &Verdict) {
        for observer in &mut self.0 {
            observer.inbound(now, packet, verdict);
        }
    }

    fn outbound(&mut self, now: Instant, packet: &[u8]) {
        for observer in &mut self.0 {
            observer.outbound(now, packet);
        }
    }
}

/// One trace line with absolute TCP sequence numbers (no state), like `tcpdump -S`:
/// `0.001234 in  IP TCP 192.168.69.1:40000 > 192.168.69.2:7: [S], seq 1000, win 64240,
/// length 0  => listener *:7 -> ...`. Never panics, whatever the bytes.
pub fn format_line(
    now: Instant,
    direction: Direction,
    packet: &[u8],
    verdict: Option<&Verdict>,
) -> String {
    render(now, direction, packet, verdict, None)
}

fn render(
    now: Instant,
    direction: Direction,
    packet: &[u8],
    verdict: Option<&Verdict>,
    seqs: Option<&mut SeqTracker>,
) -> String {
    let dir = match direction {
        Direction::In => "in ",
        Direction::Out => "out",
    };
    let body = match classify(packet) {
        Ok(info) => describe(&info, packet, seqs),
        // The verdict of an unparsable inbound packet already carries the parse error.
        Err(_)
            if matches!(
                verdict,
                Some(Verdict::Dropped {
                    reason: DropReason::Malformed,
                    ..
                })
            ) =>
        {
            format!("unparsed, length {}", packet.len())
        }
        Err(err) => format!("unparsed ({err}), length {}", packet.len()),
    };
    let mut line = format!("{} {dir} {body}", timestamp(now));
    if let Some(verdict) = verdict {
        line.push_str(&format!("  => {verdict}"));
    }
    line
}

/// Seconds since the stack started, with microseconds: `12.000345`.
fn timestamp(now: Instant) -> String {
    let micros = now.total_micros();
    let sign = if micros < 0 { "-" } else { "" };
    let micros = micros.unsigned_abs();
    format!("{sign}{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

fn describe(info: &PacketInfo, packet: &[u8], seqs: Option<&mut SeqTracker>) -> String {
    let (src, dst) = (info.src, info.dst);
    let ip = match src {
        IpAddress::Ipv4(_) => "IP",
        IpAddress::Ipv6(_) => "IP6",
    };
    let mut out = match info.transport {
        Transport::Tcp {
            src_port, dst_port, ..
        } => format!(
            "{ip} TCP {} > {}: {}",
            endpoint((src, src_port)),
            endpoint((dst, dst_port)),
            tcp_body(info, seqs)
        ),
        Transport::Udp {
            src_port,
            dst_port,
            payload_len,
        } => format!(
            "{ip} UDP {} > {}: length {payload_len}",
            endpoint((src, src_port)),
            endpoint((dst, dst_port))
        ),
        Transport::Icmp { .. } => format!(
            "{ip} {} {src} > {dst}: {}",
            protocol_name(icmp_number(src)),
            icmp_body(info, packet)
        ),
        Transport::Fragment => format!(
            "{ip} {} {src} > {dst}: fragment, length {}",
            protocol_name(info.fragment.map_or(0, |f| f.0.protocol)),
            info.len
        ),
        Transport::Other(protocol) => {
            format!(
                "{ip} {} {src} > {dst}: length {}",
                protocol_name(protocol),
                info.len
            )
        }
    };
    if let Some((key, offset)) = info.fragment {
        out.push_str(&format!(", frag id {} offset {offset}", key.id));
    }
    if !info.checksum_ok {
        out.push_str(", bad checksum");
    }
    out
}

/// `[P.], seq 1:6, ack 1, win 64240, length 5`.
fn tcp_body(info: &PacketInfo, seqs: Option<&mut SeqTracker>) -> String {
    let Transport::Tcp {
        src_port,
        dst_port,
        flags,
        seq,
        ack,
        window,
        payload_len,
    } = info.transport
    else {
        return String::new();
    };
    let segment = Segment { flags, seq, ack };
    let (seq, ack) = match seqs {
        Some(seqs) => {
            let (src, dst) = ((info.src, src_port), (info.dst, dst_port));
            seqs.relative(src, dst, &segment, info.checksum_ok)
        }
        None => (seq, flags.ack.then_some(ack)),
    };
    let seq = match payload_len {
        0 => format!("{seq}"),
        len => format!("{seq}:{}", seq.wrapping_add(len as u32)),
    };
    let ack = ack.map(|a| format!(", ack {a}")).unwrap_or_default();
    let flags = flag_string(flags);
    format!("{flags}, seq {seq}{ack}, win {window}, length {payload_len}")
}

fn icmp_number(src: IpAddress) -> u8 {
    match src {
        IpAddress::Ipv4(_) => 1,
        IpAddress::Ipv6(_) => 58,
    }
}

fn protocol_name(protocol: u8) -> String {
    match protocol {
        1 => "ICMP".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        58 => "ICMP6".into(),
        other => format!("proto {other}"),
    }
}

/// `192.168.69.2:7`, `[fd69::2]:7`.
fn endpoint((addr, port): (IpAddress, u16)) -> String {
    crate::flow::endpoint(smoltcp::wire::IpEndpoint::new(addr, port))
}

/// tcpdump's flag letters, in its order: `[S]`, `[S.]`, `[P.]`, `[FP.]`, `[R.]`, `[none]`.
fn flag_string(flags: TcpFlags) -> String {
    let letters: String = [
        (flags.fin, 'F'),
        (flags.syn, 'S'),
        (flags.rst, 'R'),
        (flags.psh, 'P'),
        (flags.ack, '.'),
    ]
    .iter()
    .filter_map(|&(on, letter)| on.then_some(letter))
    .collect();
    if letters.is_empty() {
        "[none]".into()
    } else {
        format!("[{letters}]")
    }
}

/// `echo request id 1 seq 2, length 64`, or `type 3 code 3 about UDP a:p > b:q, length 36`.
fn icmp_body(info: &PacketInfo, packet: &[u8]) -> String {
    let Transport::Icmp {
        icmp_type,
        code,
        quoted,
    } = info.transport
    else {
        return String::new();
    };
    // Bytes 4..8 of the ICMP header and the message length, by etherparse's checked slices.
    let (rest, len) = match SlicedPacket::from_ip(packet).map(|p| p.transport) {
        Ok(Some(TransportSlice::Icmpv4(icmp))) => (icmp.bytes5to8(), icmp.slice().len()),
        Ok(Some(TransportSlice::Icmpv6(icmp))) => (icmp.bytes5to8(), icmp.slice().len()),
        _ => return format!("type {icmp_type} code {code}"),
    };
    let [id_hi, id_lo, seq_hi, seq_lo] = rest;
    let (id, seq) = (
        u16::from_be_bytes([id_hi, id_lo]),
        u16::from_be_bytes([seq_hi, seq_lo]),
    );
    let mut out = match (info.src, icmp_type) {
        (IpAddress::Ipv4(_), 8) | (IpAddress::Ipv6(_), 128) => {
            format!("echo request id {id} seq {seq}")
        }
        (IpAddress::Ipv4(_), 0) | (IpAddress::Ipv6(_), 129) => {
            format!("echo reply id {id} seq {seq}")
        }
        _ => format!("type {icmp_type} code {code}"),
    };
    if let Some(q) = quoted {
        out.push_str(&format!(
            " about {} {} > {}",
            protocol_name(q.protocol),
            endpoint((q.src, q.src_port)),
            endpoint((q.dst, q.dst_port))
        ));
    }
    format!("{out}, length {len}")
}

/// The TCP fields the sequence tracker reads.
struct Segment {
    flags: TcpFlags,
    seq: u32,
    ack: u32,
}

type Endpoint = (IpAddress, u16);

/// Both directions of one TCP connection: index 0 is from the lower endpoint to the higher.
#[derive(Default)]
struct Connection {
    base: [Option<u32>; 2],
    closed: [bool; 2],
    last_used: u64,
}

/// Per-direction sequence bases: the SYN's seq, else the first seq seen, else (for a
/// direction only acknowledged so far) the first ack that names it. Bounded.
#[derive(Default)]
struct SeqTracker {
    connections: HashMap<(Endpoint, Endpoint), Connection>,
    clock: u64,
}

impl SeqTracker {
    /// `(seq, ack)` relative to their bases; `ack` only when the ACK flag is set. `learn` is
    /// false for packets that failed their checksum: shown, but not trusted to set bases.
    fn relative(
        &mut self,
        src: Endpoint,
        dst: Endpoint,
        segment: &Segment,
        learn: bool,
    ) -> (u32, Option<u32>) {
        let (key, dir) = if src <= dst {
            ((src, dst), 0)
        } else {
            ((dst, src), 1)
        };
        let (rev, flags) = (1 - dir, segment.flags);
        if !learn {
            let bases = self.connections.get(&key).map_or([None; 2], |c| c.base);
            let seq = segment.seq.wrapping_sub(bases[dir].unwrap_or(0));
            let ack = segment.ack.wrapping_sub(bases[rev].unwrap_or(0));
            return (seq, flags.ack.then_some(ack));
        }
        self.make_room(&key);
        self.clock += 1;
        let connection = self.connections.entry(key).or_default();
        connection.last_used = self.clock;
        if flags.syn {
            // A SYN with a new ISN is a new connection; a retransmitted one changes nothing.
            if !flags.ack && connection.base[dir] != Some(segment.seq) {
                *connection = Connection {
                    last_used: self.clock,
                    ..Connection::default()
                };
            }
            connection.base[dir] = Some(segment.seq);
            connection.closed[dir] = false;
        }
        let seq_base = *connection.base[dir].get_or_insert(segment.seq);
        let ack = flags.ack.then(|| {
            let ack_base = *connection.base[rev].get_or_insert(segment.ack);
            segment.ack.wrapping_sub(ack_base)
        });
        if flags.rst {
            connection.closed = [true, true];
        } else if flags.fin {
            connection.closed[dir] = true;
        }
        (segment.seq.wrapping_sub(seq_base), ack)
    }

    /// Before a new connection: forgets closed ones, then the least recently used quarter.
    fn make_room(&mut self, key: &(Endpoint, Endpoint)) {
        if self.connections.len() < MAX_CONNECTIONS || self.connections.contains_key(key) {
            return;
        }
        self.connections.retain(|_, c| c.closed != [true, true]);
        if self.connections.len() < MAX_CONNECTIONS {
            return;
        }
        let mut ages: Vec<u64> = self.connections.values().map(|c| c.last_used).collect();
        let quarter = ages.len() / 4;
        let (_, cutoff, _) = ages.select_nth_unstable(quarter);
        let cutoff = *cutoff;
        self.connections.retain(|_, c| c.last_used > cutoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    const PEER: [u8; 4] = [192, 168, 69, 1];
    const US: [u8; 4] = [192, 168, 69, 2];

    /// A TCP segment; `flags` in tcpdump letters ("S", "S.", "P.", "F.", "R").
    fn tcp(from_peer: bool, seq: u32, ack: u32, flags: &str, payload: &[u8]) -> Vec<u8> {
        let (src, dst, sport, dport) = match from_peer {
            true => (PEER, US, 40000, 7),
            false => (US, PEER, 7, 40000),
        };
        let mut builder = PacketBuilder::ipv4(src, dst, 64).tcp(sport, dport, seq, 1000);
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
    fn handshake_and_data_use_relative_numbers_per_direction() {
        let (mut tracer, lines) = Tracer::capture();
        let at = Instant::from_micros(1_234);
        tracer.inbound(
            at,
            &tcp(true, 5000, 0, "S", &[]),
            &Verdict::NoSocketRst { syn: true },
        );
        tracer.outbound(at, &tcp(false, 900, 5001, "S.", &[]));
        tracer.inbound(
            at,
            &tcp(true, 5000, 0, "S", &[]),
            &Verdict::NoSocketRst { syn: true },
        );
        tracer.outbound(at, &tcp(false, 901, 5001, "P.", b"hello"));
        tracer.outbound(at, &tcp(false, 906, 5002, "F.", &[]));
        assert_eq!(
            lines.take(),
            [
                "0.001234 in  IP TCP 192.168.69.1:40000 > 192.168.69.2:7: [S], seq 0, \
                 win 1000, length 0  => no listener -> RST",
                "0.001234 out IP TCP 192.168.69.2:7 > 192.168.69.1:40000: [S.], seq 0, \
                 ack 1, win 1000, length 0",
                "0.001234 in  IP TCP 192.168.69.1:40000 > 192.168.69.2:7: [S], seq 0, \
                 win 1000, length 0  => no listener -> RST",
                "0.001234 out IP TCP 192.168.69.2:7 > 192.168.69.1:40000: [P.], seq 1:6, \
                 ack 1, win 1000, length 5",
                "0.001234 out IP TCP 192.168.69.2:7 > 192.168.69.1:40000: [F.], seq 6, \
                 ack 2, win 1000, length 0",
            ]
        );
    }

    #[test]
    fn without_a_syn_the_first_seq_and_ack_are_the_bases() {
        let mut tracer = Tracer::new(|_| {});
        let line = tracer.line(
            Instant::ZERO,
            Direction::In,
            &tcp(true, 77, 88, ".", &[]),
            None,
        );
        assert!(
            line.ends_with("[.], seq 0, ack 0, win 1000, length 0"),
            "{line}"
        );
        let line = tracer.line(
            Instant::ZERO,
            Direction::Out,
            &tcp(false, 88, 0, "R", &[]),
            None,
        );
        assert!(line.ends_with("[R], seq 0, win 1000, length 0"), "{line}");
    }

    #[test]
    fn stateless_lines_show_absolute_numbers() {
        let line = format_line(
            Instant::ZERO,
            Direction::Out,
            &tcp(false, 7, 9, "S.", &[]),
            None,
        );
        assert!(
            line.ends_with("[S.], seq 7, ack 9, win 1000, length 0"),
            "{line}"
        );
    }

    #[test]
    fn icmp_echo_and_ipv6_endpoints() {
        let mut echo = Vec::new();
        PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64)
            .icmpv6_echo_request(3, 4)
            .write(&mut echo, b"abcd")
            .unwrap();
        let line = format_line(Instant::ZERO, Direction::In, &echo, Some(&Verdict::Icmp));
        assert_eq!(
            line,
            "0.000000 in  IP6 ICMP6 fdfd:fdfd:fdfd:fdfd:fdfd:fdfd:fdfd:fdfd > \
             fefe:fefe:fefe:fefe:fefe:fefe:fefe:fefe: echo request id 3 seq 4, length 12  \
             => icmp -> stack"
        );
        let mut udp = Vec::new();
        PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64)
            .udp(5, 6)
            .write(&mut udp, b"xy")
            .unwrap();
        let line = format_line(Instant::from_secs(2), Direction::Out, &udp, None);
        assert!(line.starts_with("2.000000 out IP6 UDP [fdfd:"), "{line}");
        assert!(line.ends_with("]:6: length 2"), "{line}");
    }

    #[test]
    fn garbage_is_described_never_panics() {
        let verdict = Verdict::dropped(DropReason::Malformed, "too short");
        let line = format_line(Instant::ZERO, Direction::In, &[0x45, 0], Some(&verdict));
        assert_eq!(
            line,
            "0.000000 in  unparsed, length 2  => malformed: too short -> dropped"
        );
        let line = format_line(Instant::ZERO, Direction::Out, &[], None);
        assert!(line.starts_with("0.000000 out unparsed ("), "{line}");
        let mut tracer = Tracer::new(|_| {});
        for len in 0..80 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8 | 0x40).collect();
            tracer.outbound(Instant::ZERO, &bytes);
        }
    }

    #[test]
    fn flags_follow_tcpdump() {
        let flags = |s: &str| TcpFlags {
            syn: s.contains('S'),
            fin: s.contains('F'),
            rst: s.contains('R'),
            psh: s.contains('P'),
            ack: s.contains('.'),
        };
        for expected in ["S", "S.", ".", "P.", "F.", "FP.", "R", "R."] {
            assert_eq!(flag_string(flags(expected)), format!("[{expected}]"));
        }
        assert_eq!(flag_string(TcpFlags::default()), "[none]");
    }

    #[test]
    fn timestamps_have_microseconds() {
        assert_eq!(timestamp(Instant::from_micros(12_000_345)), "12.000345");
        assert_eq!(timestamp(Instant::from_micros(-5)), "-0.000005");
    }

    #[test]
    fn the_connection_map_stays_bounded() {
        let mut seqs = SeqTracker::default();
        let syn = Segment {
            flags: TcpFlags {
                syn: true,
                ..TcpFlags::default()
            },
            seq: 1,
            ack: 0,
        };
        let us = (IpAddress::v4(192, 168, 69, 2), 7);
        for port in 0..3 * MAX_CONNECTIONS as u16 {
            seqs.relative((IpAddress::v4(10, 0, 0, 1), port), us, &syn, true);
            assert!(seqs.connections.len() <= MAX_CONNECTIONS);
        }
    }
}
