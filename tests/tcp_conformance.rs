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

/// The first `len` bytes of the last packet the peer received: what an ICMP error quotes.
fn quote_last(peer: &Peer, len: usize) -> Vec<u8> {
    let last = peer.received.last().expect("the stack sent nothing");
    last[..len.min(last.len())].to_vec()
}

/// Our data segments after `from` in what the peer received: (packet length, payload).
fn data_packets(peer: &Peer, from: usize) -> Vec<(usize, usize)> {
    peer.received[from..]
        .iter()
        .filter_map(|packet| {
            let sliced = etherparse::SlicedPacket::from_ip(packet).ok()?;
            match sliced.transport? {
                etherparse::TransportSlice::Tcp(tcp) if !tcp.payload().is_empty() => {
                    Some((packet.len(), tcp.payload().len()))
                }
                _ => None,
            }
        })
        .collect()
}

/// Writes 3000 bytes more and lets the retransmission timer run once (the peer
/// acknowledges nothing): the data packets the stack sent meanwhile, as `data_packets`.
fn more_data_and_a_retransmission(peer: &mut Peer, stream: &TcpStream) -> Vec<(usize, usize)> {
    let from = peer.received.len();
    stream.write(&[2u8; 3000]).unwrap();
    peer.exchange();
    peer.now += Duration::from_millis(1500);
    peer.exchange();
    data_packets(peer, from)
}

/// An ICMP "fragmentation needed" from the peer with next-hop MTU `mtu`, quoting `quoted`.
fn frag_needed(quoted: &[u8], mtu: u16) -> Vec<u8> {
    let kind = etherparse::Icmpv4Type::DestinationUnreachable(
        etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu },
    );
    let mut packet = Vec::new();
    etherparse::PacketBuilder::ipv4(peer::PEER, peer::US, 64)
        .icmpv4(kind)
        .write(&mut packet, quoted)
        .unwrap();
    packet
}

/// After a "too big" message quoting our segment, every segment of the flow — new data
/// and the retransmission of what the message says was lost — fits `mtu`.
fn path_mtu_lowers_the_segment_size(v6: bool, icmp: impl Fn(&[u8]) -> Vec<u8>, mtu: usize) {
    let mut peer = Peer::new();
    peer.v6 = v6;
    let (mut peer, stream, _) = peer::linux_client_of(peer, SPORT, true);
    stream.write(&[1u8; 3000]).unwrap();
    let first = peer.exchange();
    assert!(first.iter().any(|s| s.len > mtu), "{first:?}");
    let quoted = quote_last(&peer, if v6 { 1232 } else { 548 });
    peer.wire.send_raw(icmp(&quoted));
    let sent = more_data_and_a_retransmission(&mut peer, &stream);
    assert!(!sent.is_empty(), "nothing sent after the message");
    assert!(
        sent.iter().all(|&(len, _)| len <= mtu),
        "segments above the path MTU {mtu}: {sent:?}"
    );
    assert_eq!(peer.stack.stats().path_mtu_updates, 1);
}

#[test]
fn rfc1191_3_frag_needed_quoting_our_segment_lowers_the_segment_size() {
    path_mtu_lowers_the_segment_size(false, |quoted| frag_needed(quoted, 1000), 1000);
}

#[test]
fn rfc8201_4_packet_too_big_lowers_the_segment_size() {
    let icmp = |quoted: &[u8]| {
        let mut packet = Vec::new();
        etherparse::PacketBuilder::ipv6(peer::PEER6, peer::US6, 64)
            .icmpv6(etherparse::Icmpv6Type::PacketTooBig { mtu: 1280 })
            .write(&mut packet, quoted)
            .unwrap();
        packet
    };
    path_mtu_lowers_the_segment_size(true, icmp, 1280);
}

#[test]
fn rfc5927_4_1_a_too_big_message_for_no_segment_in_flight_is_ignored() {
    let (mut peer, stream, _) = established(true);
    stream.write(&[1u8; 3000]).unwrap();
    peer.exchange();
    let mut quoted = quote_last(&peer, 548);
    // A sequence number far from anything we sent: forged or stale.
    let tcp = 20;
    quoted[tcp + 4..tcp + 8].copy_from_slice(&123_456u32.to_be_bytes());
    peer.wire.send_raw(frag_needed(&quoted, 600));
    let sent = more_data_and_a_retransmission(&mut peer, &stream);
    assert!(sent.iter().any(|&(len, _)| len > 600), "{sent:?}");
    assert_eq!(peer.stack.stats().path_mtu_updates, 0);
}
