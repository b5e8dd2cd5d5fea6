//! The packet trace: one tcpdump-like line per packet in and out, TCP sequence numbers made
//! relative to each direction's ISN, and the stack's verdict at the end of inbound lines.
//! Also [`Observers`], which shows every packet to several observers (trace and pcap).

mod format;
mod seq;

use crate::packet::classify;
use crate::stack::{PacketObserver, Verdict};
use crate::stats::DropReason;
use format::describe;
use seq::SeqTracker;
use smoltcp::time::Instant;
use std::cell::RefCell;
use std::rc::Rc;

/// The `log` target of [`Tracer::logging`]'s lines (level info).
pub const TARGET: &str = "tunstack::trace";

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

#[cfg(test)]
mod tests {
    use super::format::flag_string;
    use super::*;
    use crate::packet::TcpFlags;
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
}
