//! TCP conformance, one test per rule, named after its RFC section: a scripted Linux-like
//! peer on the in-memory link sends exact segments, and the stack's answers are checked
//! field by field. The rules here are the ones the guard in front of smoltcp enforces
//! (src/stack/guard.rs), plus the neighbouring cases that must stay as they are.

#[path = "sim/peer.rs"]
mod peer;

use etherparse::TcpOptionElement;
use peer::{Peer, Seg, linux_client, ts_echo};
use tunstack::smoltcp::time::Duration;
use tunstack::{Error, TcpStream};

const SPORT: u16 = 40100;
/// The peer's next sequence number after the handshake (its ISN is 1000).
const PEER_NXT: u32 = 1001;

/// A connection from a Linux-like client, after the handshake: the peer, the accepted
/// stream, and our SND.NXT.
fn established(timestamps: bool) -> (Peer, TcpStream, u32) {
    let (peer, stream, synack) = linux_client(SPORT, timestamps);
    (peer, stream, synack.seq.wrapping_add(1))
}

/// The pure ACKs among `segs`.
fn acks(segs: &[Seg]) -> Vec<&Seg> {
    segs.iter()
        .filter(|s| s.flags == "A" && s.len == 0)
        .collect()
}

/// What the stack sends now and once its delayed-ACK timer has run.
fn exchange_and_wait(peer: &mut Peer) -> Vec<Seg> {
    let mut segs = peer.exchange();
    peer.now += Duration::from_millis(50);
    segs.extend(peer.exchange());
    segs
}

/// Our data reaches the peer and is acknowledged: SND.UNA moves to the returned value.
fn send_and_get_acked(peer: &mut Peer, stream: &TcpStream, snd_nxt: u32, bytes: usize) -> u32 {
    stream.write(&vec![7u8; bytes]).unwrap();
    let sent: usize = peer.exchange().iter().map(|s| s.len).sum();
    assert_eq!(sent, bytes);
    let una = snd_nxt.wrapping_add(bytes as u32);
    peer.send(SPORT, PEER_NXT, Some(una), "A", &[]);
    assert!(peer.exchange().is_empty());
    una
}

#[test]
fn rfc9293_3_10_7_4_rst_at_rcv_nxt_resets_the_connection() {
    let (mut peer, stream, _) = established(false);
    peer.send(SPORT, PEER_NXT, None, "R", &[]);
    assert!(peer.exchange().is_empty(), "an RST is never answered");
    assert!(matches!(
        stream.read(&mut [0; 8]),
        Err(Error::ConnectionReset)
    ));
}

#[test]
fn rfc5961_3_2_in_window_rst_gets_challenge_ack() {
    let (mut peer, stream, snd_nxt) = established(false);
    peer.send(SPORT, PEER_NXT + 100, None, "R", &[]);
    let answer = peer.exchange();
    let acks = acks(&answer);
    assert_eq!(acks.len(), 1, "one challenge ACK: {answer:?}");
    assert_eq!((acks[0].seq, acks[0].ack), (snd_nxt, PEER_NXT));
    assert!(stream.is_connected(), "an inexact RST must not reset");
    assert_eq!(peer.stack.stats().tcp_guard_answers, 1);
    // The peer answers the challenge with the exact RST: now it resets.
    peer.send(SPORT, acks[0].ack, None, "R", &[]);
    peer.exchange();
    assert!(matches!(stream.take_error(), Some(Error::ConnectionReset)));
}

#[test]
fn rfc5961_3_2_in_window_rst_in_syn_received_gets_challenge_ack() {
    let mut peer = Peer::new();
    let listener =
        tunstack::TcpListener::bind(&peer.stack, "0.0.0.0:80".parse().unwrap(), 8).unwrap();
    peer.send(SPORT, 1000, None, "S", &[]);
    let synack = peer.exchange().remove(0);
    peer.send(SPORT, PEER_NXT + 50, None, "R", &[]);
    let answer = peer.exchange();
    let acks = acks(&answer);
    assert_eq!(acks.len(), 1, "one challenge ACK: {answer:?}");
    assert_eq!(acks[0].ack, PEER_NXT);
    // The half-open connection lives: the handshake completes.
    peer.send(SPORT, PEER_NXT, Some(synack.seq.wrapping_add(1)), "A", &[]);
    peer.exchange();
    assert!(listener.accept().is_ok(), "the connection did not survive");
}

#[test]
fn rfc5961_3_2_out_of_window_rst_is_dropped_silently() {
    let (mut peer, stream, _) = established(false);
    peer.send(SPORT, PEER_NXT.wrapping_add(0x4000_0000), None, "R", &[]);
    assert!(peer.exchange().is_empty());
    assert!(stream.is_connected());
    assert_eq!(peer.stack.stats().tcp_guard_drops, 1);
}

#[test]
fn rfc5961_4_2_syn_in_established_gets_challenge_ack() {
    let (mut peer, stream, snd_nxt) = established(false);
    let sockets = peer.stack.socket_count();
    peer.send(SPORT, 77_777, None, "S", &[]);
    let answer = peer.exchange();
    let acks = acks(&answer);
    assert_eq!(acks.len(), 1, "one challenge ACK: {answer:?}");
    assert_eq!((acks[0].seq, acks[0].ack), (snd_nxt, PEER_NXT));
    assert!(stream.is_connected());
    assert_eq!(
        peer.stack.socket_count(),
        sockets,
        "no new socket for the SYN"
    );
}

#[test]
fn rfc5961_5_2_ack_far_below_snd_una_is_dropped_with_an_ack() {
    let (mut peer, stream, snd_nxt) = established(false);
    let una = send_and_get_acked(&mut peer, &stream, snd_nxt, 100);
    // The peer's window is 64240 << 7: an ACK 10 MB below SND.UNA is out of range.
    peer.send(
        SPORT,
        PEER_NXT,
        Some(una.wrapping_sub(10_000_000)),
        "PA",
        b"late",
    );
    let answer = peer.exchange();
    let acks = acks(&answer);
    assert_eq!(acks.len(), 1, "one ACK: {answer:?}");
    assert_eq!((acks[0].seq, acks[0].ack), (una, PEER_NXT));
    assert!(
        matches!(stream.read(&mut [0; 8]), Err(Error::WouldBlock)),
        "the text of an unacceptable segment was delivered"
    );
}

#[test]
fn rfc9293_3_10_7_4_old_ack_is_ignored_and_the_text_processed() {
    let (mut peer, stream, snd_nxt) = established(false);
    let una = send_and_get_acked(&mut peer, &stream, snd_nxt, 100);
    // Reordered: sent before the peer's ACK of our 100 bytes, so it acknowledges less.
    peer.send(SPORT, PEER_NXT, Some(una.wrapping_sub(2)), "PA", b"hello");
    let answer = exchange_and_wait(&mut peer);
    let mut buf = [0u8; 16];
    assert_eq!(stream.read(&mut buf).unwrap(), 5);
    assert_eq!(&buf[..5], b"hello");
    assert!(
        answer.iter().any(|s| s.ack == PEER_NXT + 5),
        "the text was not acknowledged: {answer:?}"
    );
    assert_eq!(peer.stack.stats().tcp_guard_acks_ignored, 1);
}

#[test]
fn rfc7323_5_3_paws_drops_an_old_tsval_with_an_ack() {
    let (mut peer, stream, synack) = linux_client(SPORT, true);
    let ack = synack.seq.wrapping_add(1);
    let ts = |value: u32| vec![TcpOptionElement::Timestamp(value, 0)];
    peer.send_with(SPORT, PEER_NXT, Some(ack), "PA", b"new", &ts(10));
    peer.exchange();
    assert_eq!(stream.read(&mut [0; 8]).unwrap(), 3);
    peer.send_with(SPORT, PEER_NXT + 3, Some(ack), "PA", b"old", &ts(5));
    let answer = peer.exchange();
    let acks = acks(&answer);
    assert_eq!(acks.len(), 1, "one ACK: {answer:?}");
    assert_eq!(acks[0].ack, PEER_NXT + 3);
    let echo = acks[0].options.iter().find_map(|o| match o {
        TcpOptionElement::Timestamp(_, echo) => Some(*echo),
        _ => None,
    });
    assert_eq!(echo, Some(10), "the ACK must echo TS.Recent");
    assert!(matches!(stream.read(&mut [0; 8]), Err(Error::WouldBlock)));
    // An RST is exempt from PAWS (RFC 7323 §5.3 R1).
    peer.send_with(SPORT, PEER_NXT + 3, None, "R", &[], &ts(1));
    peer.exchange();
    assert!(matches!(stream.take_error(), Some(Error::ConnectionReset)));
}

#[test]
fn rfc7323_4_3_ts_recent_follows_segments_in_order() {
    let (mut peer, stream, synack) = linux_client(SPORT, true);
    let ack = synack.seq.wrapping_add(1);
    let options = ts_echo(true, &synack);
    // The handshake's TSval (2) is TS.Recent; a later one in order replaces it.
    peer.send_with(SPORT, PEER_NXT, Some(ack), "PA", b"a", &options);
    peer.exchange();
    let ts = vec![TcpOptionElement::Timestamp(3, 0)];
    peer.send_with(SPORT, PEER_NXT + 1, Some(ack), "PA", b"b", &ts);
    let answer = exchange_and_wait(&mut peer);
    let echo = answer.iter().rev().find_map(|s| {
        s.options.iter().find_map(|o| match o {
            TcpOptionElement::Timestamp(_, echo) => Some(*echo),
            _ => None,
        })
    });
    assert_eq!(echo, Some(3));
    assert_eq!(stream.read(&mut [0; 8]).unwrap(), 2);
}

#[test]
fn rfc5961_7_challenge_acks_are_rate_limited() {
    let (mut peer, stream, _) = established(false);
    for _ in 0..5 {
        peer.send(SPORT, PEER_NXT + 100, None, "R", &[]);
        peer.send(SPORT, 99_999, None, "S", &[]);
    }
    let answer = peer.exchange();
    assert_eq!(
        acks(&answer).len(),
        1,
        "one challenge ACK per interval: {answer:?}"
    );
    assert_eq!(peer.stack.stats().tcp_guard_drops, 9);
    peer.now += Duration::from_millis(500);
    peer.send(SPORT, PEER_NXT + 100, None, "R", &[]);
    assert_eq!(
        acks(&peer.exchange()).len(),
        1,
        "the next interval may answer again"
    );
    assert!(stream.is_connected());
}
