//! The scripted peer on the in-memory link: exact segments built with etherparse go to a
//! stack, and its answers come back parsed (flags, numbers, window, options). Shared by the
//! test files that play one end of a connection by hand (`#[path]`-included, so only they
//! compile it).
#![allow(dead_code)]

use etherparse::{PacketBuilder, SlicedPacket, TcpOptionElement, TransportSlice};
use tunstack::phy::MemoryLink;
use tunstack::smoltcp::time::Instant;
use tunstack::{Stack, StackConfig, TcpListener};

pub const PEER: [u8; 4] = [192, 168, 69, 1];
pub const US: [u8; 4] = [192, 168, 69, 2];
pub const PEER6: [u8; 16] = [0xfd, 0x69, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const US6: [u8; 16] = [0xfd, 0x69, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

pub struct Peer {
    pub stack: Stack,
    pub device: MemoryLink,
    pub wire: MemoryLink,
    pub now: Instant,
    /// Every packet the peer received, as it came off the link.
    pub received: Vec<Vec<u8>>,
    /// The peer speaks IPv6 (from `PEER6` to `US6`) instead of IPv4.
    pub v6: bool,
}

/// What the stack sent back: (flags as "SA"/"A"/"R"/..., seq, ack, payload length), with
/// the window field and the options.
#[derive(Debug, Clone, PartialEq)]
pub struct Seg {
    pub flags: String,
    pub seq: u32,
    pub ack: u32,
    pub len: usize,
    pub window: u16,
    pub options: Vec<TcpOptionElement>,
}

/// The options a Linux client puts in its SYN.
pub const LINUX_SYN: [TcpOptionElement; 4] = [
    TcpOptionElement::MaximumSegmentSize(1460),
    TcpOptionElement::SelectiveAcknowledgementPermitted,
    TcpOptionElement::Noop,
    TcpOptionElement::WindowScale(7),
];

impl Peer {
    pub fn new() -> Peer {
        Peer::with_config(StackConfig::default())
    }

    pub fn with_config(config: StackConfig) -> Peer {
        let (mut device, wire) = MemoryLink::pair(1500);
        let stack = Stack::new(config, &mut device, Instant::ZERO);
        Peer {
            stack,
            device,
            wire,
            now: Instant::ZERO,
            received: Vec::new(),
            v6: false,
        }
    }

    pub fn send(&mut self, sport: u16, seq: u32, ack: Option<u32>, flags: &str, payload: &[u8]) {
        self.send_with(sport, seq, ack, flags, payload, &[]);
    }

    pub fn send_with(
        &mut self,
        sport: u16,
        seq: u32,
        ack: Option<u32>,
        flags: &str,
        payload: &[u8],
        options: &[TcpOptionElement],
    ) {
        let ip = match self.v6 {
            true => PacketBuilder::ipv6(PEER6, US6, 64),
            false => PacketBuilder::ipv4(PEER, US, 64),
        };
        let mut builder = ip.tcp(sport, 80, seq, 64240);
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
        let builder = builder.options(options).unwrap();
        let mut packet = Vec::new();
        builder.write(&mut packet, payload).unwrap();
        self.wire.send_raw(packet);
    }

    /// Polls the stack and returns the TCP segments it sent.
    pub fn exchange(&mut self) -> Vec<Seg> {
        self.stack.poll(self.now, &mut self.device);
        let mut out = Vec::new();
        while let Some(packet) = self.wire.recv_raw() {
            self.received.push(packet.clone());
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
                    window: tcp.window_size(),
                    options: tcp.options_iterator().map(|o| o.unwrap()).collect(),
                });
            }
        }
        out
    }

    /// Handshake from `sport`; returns the stack's ISN.
    pub fn handshake(&mut self, sport: u16) -> u32 {
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

/// Our timestamp on a segment we sent, for the peer to echo.
pub fn our_tsval(seg: &Seg) -> u32 {
    seg.options
        .iter()
        .find_map(|o| match o {
            TcpOptionElement::Timestamp(tsval, _) => Some(*tsval),
            _ => None,
        })
        .expect("no timestamp on our segment")
}

/// What the peer puts on a segment answering our `seg`: the echo of our timestamp when
/// timestamps were negotiated, nothing otherwise.
pub fn ts_echo(timestamps: bool, seg: &Seg) -> Vec<TcpOptionElement> {
    if timestamps {
        vec![TcpOptionElement::Timestamp(2, our_tsval(seg))]
    } else {
        Vec::new()
    }
}

/// A Linux-like client on port `sport` (SACK, window scaling, timestamps if `timestamps`)
/// through the handshake with a listener on port 80, and the stream accepted there: the
/// peer, the stream and our SYN-ACK.
pub fn linux_client(sport: u16, timestamps: bool) -> (Peer, tunstack::TcpStream, Seg) {
    linux_client_of(Peer::new(), sport, timestamps)
}

/// [`linux_client`] with the given peer (e.g. one that speaks IPv6).
pub fn linux_client_of(
    mut peer: Peer,
    sport: u16,
    timestamps: bool,
) -> (Peer, tunstack::TcpStream, Seg) {
    let listener = TcpListener::bind(&peer.stack, "[::]:80".parse().unwrap(), 8).unwrap();
    let mut syn = LINUX_SYN.to_vec();
    if timestamps {
        syn.push(TcpOptionElement::Timestamp(1, 0));
    }
    peer.send_with(sport, 1000, None, "S", &[], &syn);
    let synack = peer.exchange().remove(0);
    let ack = synack.seq.wrapping_add(1);
    let options = ts_echo(timestamps, &synack);
    peer.send_with(sport, 1001, Some(ack), "A", &[], &options);
    peer.exchange();
    let (stream, _) = listener.accept().unwrap();
    (peer, stream, synack)
}
