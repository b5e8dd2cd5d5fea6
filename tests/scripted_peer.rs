//! A hand-driven peer on the in-memory link: exact segments built with etherparse, the
//! stack's answers parsed back. For the cases two real stacks would never produce.

#[path = "sim/peer.rs"]
mod peer;

use etherparse::{PacketBuilder, TcpOptionElement};
use peer::{LINUX_SYN, PEER, Peer, Seg, US, linux_client, ts_echo};
use std::cell::RefCell;
use std::rc::Rc;
use tunstack::smoltcp::time::{Duration, Instant};
use tunstack::stats::DropReason;
use tunstack::{Error, PacketObserver, StackConfig, TcpListener, Verdict};

#[test]
fn retransmitted_syn_reaches_the_same_socket() {
    let mut peer = Peer::new();
    let listener = TcpListener::bind(&peer.stack, "0.0.0.0:80".parse().unwrap(), 8).unwrap();
    peer.send(40000, 1000, None, "S", &[]);
    let first = peer.exchange();
    assert_eq!(peer.stack.socket_count(), 2, "listener + one data socket");
    peer.now += Duration::from_millis(1000);
    peer.send(40000, 1000, None, "S", &[]); // the client did not hear our SYN-ACK
    let second = peer.exchange();
    assert_eq!(
        peer.stack.socket_count(),
        2,
        "a retransmitted SYN made a second socket"
    );
    let isn = first[0].seq;
    assert!(
        second.iter().all(|s| s.seq == isn && s.flags.contains('A')),
        "answer must come from the same socket (ISN {isn}): {second:?}"
    );
    peer.send(40000, 1001, Some(isn.wrapping_add(1)), "A", &[]);
    peer.exchange();
    let (stream, remote) = listener.accept().unwrap();
    assert_eq!(remote, "192.168.69.1:40000".parse().unwrap());
    assert!(stream.is_connected());
    assert!(
        matches!(listener.accept(), Err(Error::WouldBlock)),
        "exactly one connection"
    );
}

#[test]
fn syn_to_a_port_without_listener_gets_rst_and_ack_without_socket_too() {
    let mut peer = Peer::new();
    peer.send(40001, 5000, None, "S", &[]);
    let answer = peer.exchange();
    assert_eq!(answer.len(), 1);
    assert_eq!(answer[0].flags, "RA");
    assert_eq!(answer[0].ack, 5001);
    peer.send(40001, 5000, None, "R", &[]);
    assert!(peer.exchange().is_empty(), "never answer a RST");
    assert_eq!(peer.stack.stats().rst_sent, 1);
}

#[test]
fn blind_rst_is_ignored_and_exact_rst_closes_only_its_connection() {
    let mut peer = Peer::new();
    let listener = TcpListener::bind(&peer.stack, "0.0.0.0:80".parse().unwrap(), 8).unwrap();
    peer.handshake(41000);
    peer.handshake(41001);
    let (a, _) = listener.accept().unwrap();
    let (b, _) = listener.accept().unwrap();
    // Far outside the window: must be ignored (RFC 5961).
    peer.send(41000, 1001u32.wrapping_add(0x4000_0000), None, "R", &[]);
    peer.exchange();
    assert!(a.is_connected(), "out-of-window RST closed the connection");
    // Exactly at rcv.nxt: closes that connection.
    peer.send(41000, 1001, None, "R", &[]);
    peer.exchange();
    assert!(matches!(a.read(&mut [0; 4]), Err(Error::ConnectionReset)));
    assert!(b.is_connected(), "a RST for one pair closed another");
    drop(a);
    peer.exchange();
    assert_eq!(peer.stack.socket_count(), 2, "reset socket not reaped");
}

#[test]
fn bad_checksum_is_counted_and_unanswered() {
    let mut peer = Peer::new();
    let _listener = TcpListener::bind(&peer.stack, "0.0.0.0:80".parse().unwrap(), 8).unwrap();
    let mut packet = Vec::new();
    PacketBuilder::ipv4(PEER, US, 64)
        .tcp(42000, 80, 1, 64240)
        .syn()
        .write(&mut packet, &[])
        .unwrap();
    let last = packet.len() - 1;
    packet[last] ^= 0x40; // urgent pointer byte: covered by the checksum only
    peer.wire.send_raw(packet);
    assert!(peer.exchange().is_empty());
    assert_eq!(peer.stack.stats().drops_for(DropReason::BadChecksum), 1);
    assert_eq!(peer.stack.socket_count(), 1);
}

#[test]
fn without_cookies_a_syn_flood_evicts_the_oldest_half_open_and_a_real_client_connects() {
    let mut peer = Peer::with_config(StackConfig {
        syn_cookies: false,
        ..StackConfig::default()
    });
    let listener = TcpListener::bind(&peer.stack, "0.0.0.0:80".parse().unwrap(), 16).unwrap();
    let syn_backlog = StackConfig::default().syn_backlog;
    for port in 0..(2 * syn_backlog as u16) {
        peer.send(10_000 + port, 7, None, "S", &[]); // never completes
        peer.exchange();
    }
    assert_eq!(
        peer.stack.socket_count(),
        1 + syn_backlog,
        "SYN queue must stay at its bound"
    );
    assert_eq!(
        peer.stack.stats().drops_for(DropReason::SynQueueEvicted),
        syn_backlog as u64
    );
    peer.handshake(50000);
    let (stream, _) = listener.accept().expect("a real client during the flood");
    assert!(stream.is_connected());
}

/// What the stack reported to its observer: the packets it sent and its verdicts.
#[derive(Default)]
struct Recorder {
    outbound: Vec<Vec<u8>>,
    verdicts: Vec<Verdict>,
}

struct Shared(Rc<RefCell<Recorder>>);

impl PacketObserver for Shared {
    fn inbound(&mut self, _now: Instant, _packet: &[u8], verdict: &Verdict) {
        self.0.borrow_mut().verdicts.push(verdict.clone());
    }

    fn outbound(&mut self, _now: Instant, packet: &[u8]) {
        self.0.borrow_mut().outbound.push(packet.to_vec());
    }
}

/// MSS, window scale and SACK-permitted as offered in `options`.
fn offered(options: &[TcpOptionElement]) -> (Option<u16>, Option<u8>, bool) {
    let mut offer = (None, None, false);
    for option in options {
        match option {
            TcpOptionElement::MaximumSegmentSize(mss) => offer.0 = Some(*mss),
            TcpOptionElement::WindowScale(shift) => offer.1 = Some(*shift),
            TcpOptionElement::SelectiveAcknowledgementPermitted => offer.2 = true,
            _ => {}
        }
    }
    offer
}

/// Twice the SYN queue's worth of SYNs that never complete; returns the SYN queue size.
fn syn_flood(peer: &mut Peer) -> usize {
    let syn_backlog = StackConfig::default().syn_backlog;
    for port in 0..(2 * syn_backlog as u16) {
        peer.send(10_000 + port, 7, None, "S", &[]);
        peer.exchange();
    }
    syn_backlog
}

impl Peer {
    /// Exchanges, lets `ms` of virtual time pass (delayed ACKs), exchanges again.
    fn exchange_for(&mut self, ms: u64) -> Vec<Seg> {
        let mut segments = self.exchange();
        self.now += Duration::from_millis(ms);
        segments.extend(self.exchange());
        segments
    }
}

#[test]
fn syn_flood_is_answered_with_cookies_and_a_cookie_connection_works() {
    // A socket's own SYN-ACK, on a stack without a flood: what a cookie SYN-ACK must offer.
    // A cookie connection's buffer is at most 64 KiB (its window scale is fixed when the
    // SYN-ACK goes out, before the socket exists), so the reference socket has that buffer.
    let mut reference = Peer::with_config(StackConfig {
        tcp_buffer: 64 * 1024,
        ..StackConfig::default()
    });
    let _reference = TcpListener::bind(&reference.stack, "0.0.0.0:80".parse().unwrap(), 16);
    reference.send_with(40000, 1000, None, "S", &[], &LINUX_SYN);
    let normal = reference.exchange().remove(0);

    let mut peer = Peer::new();
    let recorder = Rc::new(RefCell::new(Recorder::default()));
    peer.stack.set_observer(Box::new(Shared(recorder.clone())));
    let listener = TcpListener::bind(&peer.stack, "0.0.0.0:80".parse().unwrap(), 16).unwrap();
    let syn_backlog = syn_flood(&mut peer);
    assert_eq!(
        peer.stack.socket_count(),
        1 + syn_backlog,
        "SYN queue past its bound"
    );
    assert_eq!(peer.stack.stats().syn_cookies_sent, syn_backlog as u64);
    assert_eq!(peer.stack.stats().drops_for(DropReason::SynQueueEvicted), 0);

    // A real client: the SYN-ACK carries a cookie, and no socket waits for the ACK.
    peer.send_with(50000, 1000, None, "S", &[], &LINUX_SYN);
    let synack = peer.exchange();
    assert_eq!(synack.len(), 1, "{synack:?}");
    let (cookie, synack) = (synack[0].seq, &synack[0]);
    assert_eq!((synack.flags.as_str(), synack.ack), ("SA", 1001));
    assert_eq!(peer.stack.stats().syn_cookies_sent, syn_backlog as u64 + 1);
    assert_eq!(
        peer.stack.socket_count(),
        1 + syn_backlog,
        "a cookie cost a socket"
    );
    assert_eq!(
        (synack.window, offered(&synack.options)),
        (normal.window, offered(&normal.options)),
        "a cookie SYN-ACK must offer what a socket's SYN-ACK offers"
    );
    // The client missed it and sends its SYN again: the same cookie.
    peer.send_with(50000, 1000, None, "S", &[], &LINUX_SYN);
    assert_eq!(peer.exchange()[0].seq, cookie);

    // The ACK returns the cookie: an established connection in the accept queue.
    peer.send(50000, 1001, Some(cookie.wrapping_add(1)), "A", &[]);
    assert!(peer.exchange().is_empty());
    assert_eq!(peer.stack.stats().syn_cookies_accepted, 1);
    let (stream, remote) = listener.accept().expect("the cookie connection");
    assert_eq!(remote, "192.168.69.1:50000".parse().unwrap());
    assert!(stream.is_connected());

    // Data in: acknowledged in the sequence space the peer knows.
    peer.send(50000, 1001, Some(cookie.wrapping_add(1)), "PA", b"hello");
    let acks = peer.exchange_for(50);
    assert!(
        acks.iter()
            .any(|s| s.ack == 1006 && s.seq == cookie.wrapping_add(1)),
        "no ACK of the 5 bytes from seq cookie+1: {acks:?}"
    );
    let mut buf = [0u8; 16];
    assert_eq!(stream.read(&mut buf).unwrap(), 5);
    assert_eq!(&buf[..5], b"hello");

    // Data out: numbered from the cookie.
    stream.write(b"world!").unwrap();
    let out = peer.exchange();
    let data = out.iter().find(|s| s.len == 6).expect("our 6 bytes");
    assert_eq!((data.seq, data.ack), (cookie.wrapping_add(1), 1006));
    peer.send(50000, 1006, Some(cookie.wrapping_add(7)), "A", &[]);
    peer.exchange();

    // Close: our FIN follows our data, the peer's FIN is acknowledged.
    drop(stream);
    let fin = peer.exchange_for(50);
    let fin = fin.iter().find(|s| s.flags.contains('F')).expect("our FIN");
    assert_eq!((fin.seq, fin.ack), (cookie.wrapping_add(7), 1006));
    peer.send(50000, 1006, Some(cookie.wrapping_add(8)), "FA", &[]);
    let last = peer.exchange_for(50);
    assert!(
        last.iter()
            .any(|s| s.ack == 1007 && s.seq == cookie.wrapping_add(8)),
        "no ACK of the peer's FIN: {last:?}"
    );
    // TIME-WAIT passes; the socket is reaped, the half-open flood is still there.
    for _ in 0..12 {
        peer.now += Duration::from_secs(1);
        peer.exchange();
    }
    let table = peer.stack.socket_table();
    assert!(
        !table.iter().any(|row| row.remote == "192.168.69.1:50000"),
        "cookie connection not reaped"
    );
    assert_eq!(peer.stack.socket_count(), 1 + syn_backlog);

    // The observer (trace, pcap) saw exactly what went on the wire.
    let recorder = recorder.borrow();
    assert_eq!(
        recorder.outbound, peer.received,
        "observer and wire disagree"
    );
    assert!(
        recorder
            .verdicts
            .iter()
            .any(|v| matches!(v, Verdict::SynCookie { .. }))
            && recorder
                .verdicts
                .iter()
                .any(|v| matches!(v, Verdict::CookieAccepted { .. }))
    );
}

#[test]
fn a_forged_cookie_is_dropped_and_makes_no_socket() {
    let mut peer = Peer::new();
    let listener = TcpListener::bind(&peer.stack, "0.0.0.0:80".parse().unwrap(), 16).unwrap();
    // Before any cookie went out, an ACK for no connection gets RST as always.
    peer.send(50001, 2001, Some(0x1234_5678), "A", &[]);
    let rst = peer.exchange();
    assert_eq!(rst.len(), 1);
    assert_eq!((rst[0].flags.as_str(), rst[0].seq), ("R", 0x1234_5678));

    let syn_backlog = syn_flood(&mut peer);
    peer.send(50001, 2001, Some(0x1234_5678), "A", &[]);
    assert!(
        peer.exchange().is_empty(),
        "a bad cookie is dropped, not answered"
    );
    // A real cookie is bound to its pair and its client's ISN.
    peer.send_with(50002, 3000, None, "S", &[], &LINUX_SYN);
    let cookie = peer.exchange()[0].seq;
    peer.send(50003, 3001, Some(cookie.wrapping_add(1)), "A", &[]);
    peer.send(50002, 4001, Some(cookie.wrapping_add(1)), "A", &[]);
    peer.send(50002, 3001, Some(cookie.wrapping_add(2)), "A", &[]);
    assert!(peer.exchange().is_empty());
    assert_eq!(peer.stack.stats().drops_for(DropReason::BadCookie), 4);
    assert_eq!(peer.stack.stats().syn_cookies_accepted, 0);
    assert_eq!(
        peer.stack.socket_count(),
        1 + syn_backlog,
        "a bad cookie made a socket"
    );
    assert!(matches!(listener.accept(), Err(Error::WouldBlock)));
    // The genuine ACK still gets in.
    peer.send(50002, 3001, Some(cookie.wrapping_add(1)), "A", &[]);
    peer.exchange();
    let (stream, _) = listener.accept().expect("the genuine cookie");
    assert!(stream.is_connected());
}

#[test]
fn a_cookie_ack_meeting_a_full_accept_queue_is_dropped_and_the_retransmission_gets_in() {
    let mut peer = Peer::with_config(StackConfig {
        syn_backlog: 0, // every connection by cookie
        ..StackConfig::default()
    });
    let listener = TcpListener::bind(&peer.stack, "0.0.0.0:80".parse().unwrap(), 1).unwrap();
    let mut cookies = Vec::new();
    for port in [51000, 51001] {
        peer.send_with(port, 1000, None, "S", &[], &LINUX_SYN);
        cookies.push(peer.exchange()[0].seq);
    }
    assert_eq!(
        peer.stack.socket_count(),
        1,
        "syn_backlog 0: no half-open socket"
    );
    for (port, cookie) in [51000, 51001].into_iter().zip(&cookies) {
        peer.send(port, 1001, Some(cookie.wrapping_add(1)), "A", &[]);
    }
    // Later data of the second connection does not check as a cookie: dropped, no RST.
    peer.send(
        51001,
        1101,
        Some(cookies[1].wrapping_add(1)),
        "PA",
        b"later",
    );
    assert!(peer.exchange().is_empty());
    let stats = peer.stack.stats();
    assert_eq!(stats.drops_for(DropReason::BacklogFull), 1);
    assert_eq!(stats.drops_for(DropReason::BadCookie), 1);
    let (first, _) = listener.accept().unwrap();
    // The client resends from its first byte: that checks, and the backlog has room now.
    peer.send(
        51001,
        1001,
        Some(cookies[1].wrapping_add(1)),
        "PA",
        &[b'x'; 100],
    );
    let ack = peer.exchange_for(50);
    assert!(ack.iter().any(|s| s.ack == 1101), "{ack:?}");
    let (second, remote) = listener.accept().expect("the second connection");
    assert_eq!(remote.port(), 51001);
    assert!(first.is_connected() && second.is_connected());
}

/// A Linux-like client that negotiated SACK, has `segments` data segments of ours
/// outstanding (after a warm-up that opens the congestion window), and is sending data
/// itself. Returns the peer, our stream, the first outstanding sequence number and the
/// outstanding segments.
fn sending_both_ways(sport: u16, segments: usize) -> (Peer, tunstack::TcpStream, u32, Vec<Seg>) {
    let (mut peer, stream, synack) = linux_client(sport, false);
    let isn = synack.seq;
    // Open the congestion window: 64 KiB, every segment acknowledged as it comes.
    stream.write(&[0u8; 65536]).unwrap();
    let mut acked = isn.wrapping_add(1);
    for _ in 0..100 {
        let sent = peer.exchange();
        let Some(last) = sent.iter().rfind(|s| s.len > 0) else {
            break;
        };
        acked = last.seq.wrapping_add(last.len as u32);
        peer.send(sport, 1001, Some(acked), "A", &[]);
    }
    assert_eq!(
        acked,
        isn.wrapping_add(1 + 65536),
        "warm-up not all sent and acknowledged"
    );
    stream.write(&vec![7u8; segments * 1460]).unwrap();
    let sent: Vec<Seg> = peer.exchange().into_iter().filter(|s| s.len > 0).collect();
    assert_eq!(sent.len(), segments, "the window did not open: {sent:?}");
    assert_eq!(sent[0].seq, acked);
    (peer, stream, acked, sent)
}

/// The peer's data segment acknowledging nothing new, with SACK blocks `blocks`.
fn data_with_sack(peer: &mut Peer, sport: u16, ack: u32, blocks: &[(u32, u32)]) {
    let mut options = Vec::new();
    if let Some((&first, rest)) = blocks.split_first() {
        let mut more = [None; 3];
        for (slot, block) in more.iter_mut().zip(rest) {
            *slot = Some(*block);
        }
        options = vec![
            TcpOptionElement::Noop,
            TcpOptionElement::Noop,
            TcpOptionElement::SelectiveAcknowledgement(first, more),
        ];
    }
    peer.send_with(sport, 1001, Some(ack), "PA", b"client data", &options);
}

#[test]
fn sack_blocks_on_the_peers_data_start_a_fast_retransmit() {
    let (mut peer, _stream, first, sent) = sending_both_ways(42000, 8);
    // Our first segment was lost; the next three arrived. No time passes: only a fast
    // retransmit, not the timeout (1 s at least), can resend it now.
    let sacked = (sent[1].seq, sent[3].seq.wrapping_add(sent[3].len as u32));
    data_with_sack(&mut peer, 42000, first, &[sacked]);
    let answer = peer.exchange();
    assert!(
        answer.iter().any(|s| s.seq == first && s.len > 0),
        "no fast retransmit of {first} after SACK {sacked:?}: {answer:?}"
    );
    assert_eq!(peer.stack.stats().sack_recoveries, 1);
    // The same hole again: smoltcp was told once; its retransmission is under way.
    let more = (sent[1].seq, sent[5].seq.wrapping_add(sent[5].len as u32));
    data_with_sack(&mut peer, 42000, first, &[more]);
    peer.exchange();
    assert_eq!(
        peer.stack.stats().sack_recoveries,
        1,
        "one hole, told twice"
    );
}

#[test]
fn without_sack_evidence_a_data_segment_does_not_make_a_retransmission() {
    let (mut peer, _stream, first, sent) = sending_both_ways(42001, 8);
    // Data with the same ACK three times over, no SACK: the peer may simply not have our
    // segments yet (RFC 5681 does not count data-carrying ACKs as duplicates).
    for _ in 0..3 {
        data_with_sack(&mut peer, 42001, first, &[]);
    }
    let answer = peer.exchange();
    assert!(
        answer.iter().all(|s| s.len == 0),
        "retransmitted without evidence of loss: {answer:?}"
    );
    // Two segments SACKed while more than that is still unreported: not yet a loss.
    let two = (sent[1].seq, sent[2].seq.wrapping_add(sent[2].len as u32));
    data_with_sack(&mut peer, 42001, first, &[two]);
    let answer = peer.exchange();
    assert!(
        answer.iter().all(|s| s.len == 0),
        "retransmitted on two SACKed segments of {}: {answer:?}",
        sent.len()
    );
}

#[test]
fn a_hole_before_the_last_segments_sent_is_retransmitted_once_they_are_all_sacked() {
    let (mut peer, _stream, first, sent) = sending_both_ways(42002, 3);
    // The first of three was lost: only two can be SACKed, all that is left to report.
    let rest = (sent[1].seq, sent[2].seq.wrapping_add(sent[2].len as u32));
    data_with_sack(&mut peer, 42002, first, &[rest]);
    let answer = peer.exchange();
    assert!(
        answer.iter().any(|s| s.seq == first && s.len > 0),
        "no retransmission of {first} with everything after it SACKed: {answer:?}"
    );
}

#[test]
fn timestamps_are_offered_back_so_linux_clients_can_reuse_time_wait_ports() {
    // Linux reuses a TIME_WAIT port (tcp_tw_reuse) only towards a peer that sends TCP
    // timestamps; without them a client connecting in a loop runs out of ports.
    let mut peer = Peer::new();
    let _listener = TcpListener::bind(&peer.stack, "0.0.0.0:80".parse().unwrap(), 8).unwrap();
    let mut syn = LINUX_SYN.to_vec();
    syn.push(TcpOptionElement::Timestamp(123_456, 0));
    peer.send_with(43000, 1000, None, "S", &[], &syn);
    let synack = peer.exchange().remove(0);
    let echoed = synack.options.iter().find_map(|o| match o {
        TcpOptionElement::Timestamp(_, echo) => Some(*echo),
        _ => None,
    });
    assert_eq!(echoed, Some(123_456), "{:?}", synack.options);

    // A client without timestamps gets none.
    peer.send_with(43001, 1000, None, "S", &[], &LINUX_SYN);
    let synack = peer.exchange().remove(0);
    assert!(
        !synack
            .options
            .iter()
            .any(|o| matches!(o, TcpOptionElement::Timestamp(..))),
        "{:?}",
        synack.options
    );
}

#[test]
fn the_peers_ack_is_taken_while_our_window_is_closed() {
    // 4 KiB buffers, no window scaling: our receive window closes after 4096 bytes.
    let mut peer = Peer::with_config(StackConfig {
        tcp_buffer: 4096,
        ..StackConfig::default()
    });
    let listener = TcpListener::bind(&peer.stack, "0.0.0.0:80".parse().unwrap(), 8).unwrap();
    let isn = peer.handshake(44000);
    let (stream, _) = listener.accept().unwrap();
    assert_eq!(stream.write(&[9u8; 1000]).unwrap(), 1000);
    let ours: usize = peer.exchange().iter().map(|s| s.len).sum();
    assert_eq!(ours, 1000);
    // The peer sends 16 bytes past our window's edge (as after the edge moved back); the
    // app does not read, so we take 4096 and close the window.
    peer.send(44000, 1001, Some(isn.wrapping_add(1)), "PA", &[5u8; 4112]);
    let answer = peer.exchange_for(20); // past the delayed ACK
    let last = answer.last().expect("no ACK for the peer's data");
    assert_eq!((last.ack, last.window), (1001 + 4096, 0), "{answer:?}");
    let space_before = stream.send_space();
    // Its next ACK starts where its data ended, past RCV.NXT: it acknowledges our 1000
    // bytes. A stack that ignored it would wait for an ACK that never comes.
    peer.send(44000, 1001 + 4112, Some(isn.wrapping_add(1001)), "A", &[]);
    peer.exchange();
    assert_eq!(
        stream.send_space(),
        space_before + 1000,
        "our 1000 bytes still unacknowledged"
    );
}

/// A Linux-like peer on port `sport` (offering timestamps if `timestamps`) connected to a
/// listener on port 80, and our stream having sent `bytes` to it: the peer, the stream and
/// our data segments on the wire, none acknowledged yet.
fn connected_and_sent(
    sport: u16,
    timestamps: bool,
    bytes: usize,
) -> (Peer, tunstack::TcpStream, Vec<Seg>) {
    let (mut peer, stream, _) = linux_client(sport, timestamps);
    stream.write(&vec![1u8; bytes]).unwrap();
    let sent: Vec<Seg> = peer.exchange().into_iter().filter(|s| s.len > 0).collect();
    assert!(sent.len() >= 2, "{sent:?}");
    (peer, stream, sent)
}

/// Our last segments of a burst are lost: with timestamps known, we resend them after two
/// round trips and the peer's delayed-ACK allowance, not after smoltcp's 1 s timeout.
/// Without timestamps (no round trip known) the timeout stays.
#[test]
fn a_lost_tail_is_probed_within_a_quarter_second_when_the_round_trip_is_known() {
    for timestamps in [true, false] {
        let (mut peer, _stream, sent) = connected_and_sent(45000, timestamps, 3000);
        // The first arrives and is acknowledged (with our timestamp echoed); the rest is lost.
        let acked = sent[0].seq.wrapping_add(sent[0].len as u32);
        let options = ts_echo(timestamps, &sent[0]);
        peer.send_with(45000, 1001, Some(acked), "A", &[], &options);
        peer.exchange();
        peer.now += Duration::from_millis(250);
        let resent = peer.exchange();
        let probed = resent.iter().any(|s| s.seq == acked && s.len > 0);
        assert_eq!(
            probed, timestamps,
            "timestamps {timestamps}: segments 250 ms after the loss: {resent:?}"
        );
        assert_eq!(peer.stack.stats().tail_probes, u64::from(timestamps));
    }
}

/// A fast retransmission that is lost as well is sent again two round trips (and the
/// peer's delayed-ACK allowance) later when the round trip is known — not after smoltcp's
/// 1 s timeout — and then with a doubled wait. Without timestamps the timeout stays.
#[test]
fn a_lost_fast_retransmission_is_sent_again_after_two_round_trips() {
    for timestamps in [true, false] {
        let sport = 46000 + u16::from(timestamps);
        let (mut peer, _stream, sent) = connected_and_sent(sport, timestamps, 4000);
        // The first is lost, the rest arrive: the peer's data SACKs all of it (RFC 5827).
        let first = sent[0].seq;
        let last = &sent[sent.len() - 1];
        let block = (sent[1].seq, last.seq.wrapping_add(last.len as u32));
        let mut options = ts_echo(timestamps, last);
        options.extend([
            TcpOptionElement::Noop,
            TcpOptionElement::Noop,
            TcpOptionElement::SelectiveAcknowledgement(block, [None; 3]),
        ]);
        peer.send_with(sport, 1001, Some(first), "PA", b"client data", &options);
        let answer = peer.exchange();
        assert!(
            answer.iter().any(|s| s.seq == first && s.len > 0),
            "timestamps {timestamps}: no fast retransmit: {answer:?}"
        );
        assert_eq!(peer.stack.stats().sack_recoveries, 1);
        // That retransmission is lost too. 250 ms later (two round trips of a few ms and
        // the 200 ms allowance), it goes again.
        peer.now += Duration::from_millis(250);
        let again = peer.exchange();
        let resent = again.iter().any(|s| s.seq == first && s.len > 0);
        assert_eq!(
            resent, timestamps,
            "timestamps {timestamps}: 250 ms after the lost retransmission: {again:?}"
        );
        assert_eq!(peer.stack.stats().tail_probes, u64::from(timestamps));
        if timestamps {
            // Lost once more: the next try waits twice as long.
            peer.now += Duration::from_millis(250);
            let early = peer.exchange();
            assert!(
                early.iter().all(|s| s.seq != first || s.len == 0),
                "sent again without the doubled wait: {early:?}"
            );
            peer.now += Duration::from_millis(250);
            peer.exchange();
            assert_eq!(peer.stack.stats().tail_probes, 2);
        }
    }
}

/// An echo client that half-closes (`nc -N`) sends its FIN before our reply is through; the
/// app then closes too. A segment of ours lost at that point is fast-retransmitted on the
/// peer's duplicate ACKs like any other — smoltcp answers duplicate ACKs in LAST-ACK with
/// challenge ACKs and waits out its timeout (1 s, doubling), so our FIN waits in
/// CLOSE-WAIT until everything before it is acknowledged — and the FIN follows then.
#[test]
fn after_the_peers_fin_a_lost_segment_is_fast_retransmitted_and_our_fin_follows_the_data() {
    let sport = 47000;
    let (mut peer, stream, synack) = linux_client(sport, false);
    let isn = synack.seq;
    peer.send(sport, 1001, Some(isn.wrapping_add(1)), "FA", &[]);
    peer.exchange();
    assert_eq!(stream.read(&mut [0u8; 8]).unwrap(), 0, "the peer's FIN");
    stream.write(&[5u8; 4000]).unwrap();
    drop(stream);
    let sent = peer.exchange();
    let data: Vec<&Seg> = sent.iter().filter(|s| s.len > 0).collect();
    assert!(data.len() >= 2, "{sent:?}");
    let first = data[0].seq;
    let last = data[data.len() - 1];
    let sent_end = last.seq.wrapping_add(last.len as u32);
    assert!(
        sent.iter().all(|s| !s.flags.contains('F')),
        "FIN sent with data outstanding: {sent:?}"
    );
    // The first is lost; the peer (in FIN-WAIT-2) has the rest and says so, as Linux does,
    // in one duplicate ACK whose SACK block covers everything after the hole.
    let sack = [
        TcpOptionElement::Noop,
        TcpOptionElement::Noop,
        TcpOptionElement::SelectiveAcknowledgement((data[1].seq, sent_end), [None; 3]),
    ];
    peer.send_with(sport, 1002, Some(first), "A", &[], &sack);
    // No time passes: only a fast retransmit, not the timeout, can resend it now.
    let answer = peer.exchange();
    assert!(
        answer.iter().any(|s| s.seq == first && s.len > 0),
        "no fast retransmit of {first} after the duplicate ACK: {answer:?}"
    );
    // The peer acknowledges whatever comes next; the FIN comes right after the last byte.
    let end = isn.wrapping_add(1 + 4000);
    let mut acked = sent_end;
    let mut fin = None;
    for _ in 0..20 {
        peer.send(sport, 1002, Some(acked), "A", &[]);
        let next = peer.exchange();
        fin = fin.or(next.iter().find(|s| s.flags.contains('F')).cloned());
        match next.iter().rfind(|s| s.len > 0) {
            Some(s) => acked = s.seq.wrapping_add(s.len as u32),
            None if fin.is_some() => break,
            None => {}
        }
    }
    assert_eq!(acked, end, "not all data was sent");
    let fin = fin.expect("no FIN once everything was acknowledged");
    assert_eq!(fin.seq, end, "the FIN is not after the last byte");
    peer.send(sport, 1002, Some(end.wrapping_add(1)), "A", &[]);
    peer.exchange();
    assert_eq!(
        peer.stack.stats().tcp_reaped,
        1,
        "the connection is not gone"
    );
}

/// A fast retransmission that is lost while new data follows it: the peer SACKs the new
/// data but still not the hole, which proves the retransmission lost (RFC 8985's rule on a
/// link that does not reorder). It is sent again at once — no round trip or timeout waited
/// for, and no timestamps needed.
#[test]
fn a_lost_retransmission_is_sent_again_at_once_when_later_data_is_sacked() {
    let sport = 48000;
    let (mut peer, stream, first, sent) = sending_both_ways(sport, 8);
    let end_of = |s: &Seg| s.seq.wrapping_add(s.len as u32);
    // The first is lost; three after it arrived (more than two segments' worth).
    data_with_sack(&mut peer, sport, first, &[(sent[1].seq, end_of(&sent[3]))]);
    let answer = peer.exchange();
    assert!(
        answer.iter().any(|s| s.seq == first && s.len > 0),
        "no fast retransmit of {first}: {answer:?}"
    );
    // New data goes out after the retransmission; the retransmission is lost.
    stream.write(&[9u8; 1460]).unwrap();
    let fresh: Vec<Seg> = peer.exchange().into_iter().filter(|s| s.len > 0).collect();
    let newest = fresh.last().expect("no new data after the retransmission");
    assert!(newest.seq != first, "{fresh:?}");
    // The peer SACKs up to the newest data: still not the hole.
    data_with_sack(&mut peer, sport, first, &[(sent[1].seq, end_of(newest))]);
    let again = peer.exchange();
    assert!(
        again.iter().any(|s| s.seq == first && s.len > 0),
        "the lost retransmission of {first} was not sent again: {again:?}"
    );
    assert_eq!(peer.stack.stats().tail_probes, 1);
    // Evidence from before that repeat does not make another.
    data_with_sack(&mut peer, sport, first, &[(sent[1].seq, end_of(newest))]);
    let quiet = peer.exchange();
    assert!(
        quiet.iter().all(|s| s.seq != first || s.len == 0),
        "sent again on old evidence: {quiet:?}"
    );
}
