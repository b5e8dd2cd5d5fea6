//! A hand-driven peer on the in-memory link: exact segments built with etherparse, the
//! stack's answers parsed back. For the cases two real stacks would never produce.

use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use tunstack::phy::MemoryLink;
use tunstack::smoltcp::time::{Duration, Instant};
use tunstack::stats::DropReason;
use tunstack::{Error, Stack, StackConfig, TcpListener};

const PEER: [u8; 4] = [192, 168, 69, 1];
const US: [u8; 4] = [192, 168, 69, 2];

struct Peer {
    stack: Stack,
    device: MemoryLink,
    wire: MemoryLink,
    now: Instant,
}

/// What the stack sent back: (flags as "SA"/"A"/"R"/..., seq, ack, payload length).
#[derive(Debug, Clone, PartialEq)]
struct Seg {
    flags: String,
    seq: u32,
    ack: u32,
    len: usize,
}

impl Peer {
    fn new() -> Peer {
        let (mut device, wire) = MemoryLink::pair(1500);
        let stack = Stack::new(StackConfig::default(), &mut device, Instant::ZERO);
        Peer {
            stack,
            device,
            wire,
            now: Instant::ZERO,
        }
    }

    fn send(&mut self, sport: u16, seq: u32, ack: Option<u32>, flags: &str, payload: &[u8]) {
        let mut builder = PacketBuilder::ipv4(PEER, US, 64).tcp(sport, 80, seq, 64240);
        for flag in flags.chars() {
            builder = match flag {
                'S' => builder.syn(),
                'F' => builder.fin(),
                'R' => builder.rst(),
                'P' => builder.psh(),
                _ => builder,
            };
        }
        if let Some(ack) = ack {
            builder = builder.ack(ack);
        }
        let mut packet = Vec::new();
        builder.write(&mut packet, payload).unwrap();
        self.wire.send_raw(packet);
    }

    /// Polls the stack and returns the TCP segments it sent.
    fn exchange(&mut self) -> Vec<Seg> {
        self.stack.poll(self.now, &mut self.device);
        let mut out = Vec::new();
        while let Some(packet) = self.wire.recv_raw() {
            let sliced = SlicedPacket::from_ip(&packet).unwrap();
            if let Some(TransportSlice::Tcp(tcp)) = sliced.transport {
                let mut flags = String::new();
                for (on, c) in [
                    (tcp.syn(), 'S'),
                    (tcp.fin(), 'F'),
                    (tcp.rst(), 'R'),
                    (tcp.ack(), 'A'),
                ] {
                    if on {
                        flags.push(c);
                    }
                }
                out.push(Seg {
                    flags,
                    seq: tcp.sequence_number(),
                    ack: tcp.acknowledgment_number(),
                    len: tcp.payload().len(),
                });
            }
        }
        out
    }

    /// Handshake from `sport`; returns the stack's ISN.
    fn handshake(&mut self, sport: u16) -> u32 {
        self.send(sport, 1000, None, "S", &[]);
        let synack = self.exchange();
        assert_eq!(synack.len(), 1, "{synack:?}");
        assert_eq!(synack[0].flags, "SA");
        assert_eq!(synack[0].ack, 1001);
        let isn = synack[0].seq;
        self.send(sport, 1001, Some(isn.wrapping_add(1)), "A", &[]);
        self.exchange();
        isn
    }
}

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
fn syn_flood_evicts_oldest_half_open_and_a_real_client_still_connects() {
    let mut peer = Peer::new();
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
