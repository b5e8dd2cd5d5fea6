//! What the stack keeps per socket: the smoltcp socket itself (lent out to a one-socket
//! `SocketSet` while a packet for it is processed) and our own bookkeeping around it:
//! SYN and accept queues, who owns the socket, why it closed. Also where TCP sockets are
//! made (buffer sizes, options).

use super::Inner;
use crate::config::MIN_TCP_BUFFER;
use crate::error::Error;
use crate::flow::SocketPair;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::{Socket, tcp, udp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{IpEndpoint, IpListenEndpoint};
use std::collections::VecDeque;

use crate::flow::SocketId;

/// One slot of the socket slab.
pub(crate) struct Entry {
    pub kind: EntryKind,
    /// Queued for egress in this poll.
    pub dirty: bool,
    /// Queued in the ready list for the app.
    pub ready: bool,
    /// The timer-queue deadline that is live for this socket.
    pub deadline: Option<Instant>,
}

// Data sockets are nearly every entry: boxing them would add a pointer chase per packet.
#[allow(clippy::large_enum_variant)]
pub(crate) enum EntryKind {
    Listener(Listener),
    Tcp(TcpEntry),
    Udp(UdpEntry),
}

/// A listening socket: no smoltcp socket of its own, just the queues.
pub(crate) struct Listener {
    pub endpoint: IpListenEndpoint,
    pub backlog: usize,
    /// Half-open connections (SYN-RECEIVED), oldest first.
    pub syn_queue: VecDeque<SocketId>,
    /// Established connections waiting for `accept()`, oldest first.
    pub accept_queue: VecDeque<SocketId>,
}

/// What a TCP socket has put on the wire, in the numbers the peer sees.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Sent {
    /// The end of the highest sequence range sent so far: a segment that ends at or before
    /// it is a retransmission.
    pub snd_max: Option<u32>,
    /// The ACK number of the last segment sent (RCV.NXT as the peer knows it), and whether
    /// it advertised a zero window.
    pub ack: Option<(u32, bool)>,
    /// When new data last went out or the peer last acknowledged some: the tail-loss probe
    /// counts from here ([`super::tail`]).
    pub progress_at: Option<Instant>,
}

/// Where a TCP data socket is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Half-open, in `listener`'s SYN queue.
    SynQueue(SocketId),
    /// Established, in `listener`'s accept queue.
    AcceptQueue(SocketId),
    /// Held by the app as a `TcpStream`.
    Owned,
    /// The app dropped its handle; the socket finishes closing, then is reaped.
    Orphaned,
}

pub(crate) struct TcpEntry {
    /// `None` only while lent to the interface.
    pub socket: Option<tcp::Socket<'static>>,
    pub pair: SocketPair,
    pub phase: Phase,
    /// Why the connection ended, when it ended abnormally.
    pub error: Option<ErrorCause>,
    /// The handshake completed at some point.
    pub was_established: bool,
    /// Abort when a SYN, data or FIN is outstanding and the peer is silent this long.
    pub timeout: Duration,
    /// When the peer was last heard from (any segment routed to this socket).
    pub last_heard: Instant,
    /// Since when something of ours has been waiting for the peer (None: nothing is).
    pub waiting_since: Option<Instant>,
    /// What the socket last sent, as on the wire.
    pub sent: Sent,
    /// SYN-cookie connections only: the socket's ISN minus the cookie the peer saw as ours.
    /// Inbound ACK numbers are shifted up by it, outbound sequence numbers down. Zero for
    /// every other connection: then nothing is rewritten (nor need it be, for the rare
    /// cookie connection whose socket picked the cookie itself as ISN).
    pub seq_offset: u32,
    /// The last fast retransmit smoltcp was made to start, by a SACK hole
    /// ([`super::sack`]) or a probe ([`super::tail`]).
    pub recovery: Option<Recovery>,
    /// The peer's last ACK number and window field, as on the wire.
    pub peer_ack: Option<(u32, u16)>,
    /// The round trip in ms, smoothed, from the peer's echoes of our timestamps.
    pub srtt_ms: Option<u32>,
    /// Our FIN waits for everything before it to be acknowledged: see [`TcpEntry::close`].
    pub fin_deferred: bool,
    /// What the guard in front of smoltcp knows of the connection ([`super::guard`]).
    pub guard: super::guard::Guard,
}

/// A fast retransmit started on top of smoltcp: from which ACK number, when, and how
/// many times it was started again for that same ACK number (its retransmission lost).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    pub ack: u32,
    pub at: Instant,
    pub repeats: u32,
    /// The end of what had been sent when it started: the peer SACKing anything beyond it
    /// while still acknowledging `ack` got data sent after the retransmission, not the
    /// retransmission itself (RFC 8985's rule, on a link that does not reorder).
    pub sent_end: Option<u32>,
    /// That happened: the retransmission is lost, and is to be started again now.
    pub lost: bool,
}

impl Recovery {
    /// A fast retransmit from `ack` started `now` (the `repeats`th time), with everything
    /// up to `sent_end` sent.
    pub fn new(ack: u32, now: Instant, repeats: u32, sent_end: Option<u32>) -> Recovery {
        Recovery {
            ack,
            at: now,
            repeats,
            sent_end,
            lost: false,
        }
    }
}

impl TcpEntry {
    /// A new entry for `socket`, heard from `now`.
    pub fn new(
        socket: tcp::Socket<'static>,
        pair: SocketPair,
        phase: Phase,
        timeout: Duration,
        now: Instant,
    ) -> TcpEntry {
        TcpEntry {
            socket: Some(socket),
            pair,
            phase,
            error: None,
            was_established: false,
            timeout,
            last_heard: now,
            waiting_since: None,
            sent: Sent::default(),
            seq_offset: 0,
            recovery: None,
            peer_ack: None,
            srtt_ms: None,
            fin_deferred: false,
            guard: super::guard::Guard::default(),
        }
    }

    /// Closes our side: FIN after the queued data. When the peer has closed first
    /// (CLOSE-WAIT) and data of ours is still unacknowledged, the FIN waits until it is
    /// (`finish_close`, at every egress): in LAST-ACK smoltcp answers the peer's duplicate
    /// ACKs with challenge ACKs and never fast-retransmits, so a segment lost there would
    /// wait out the retransmission timeout, doubling each time — an echo client that
    /// half-closes (`nc -N`) would see its last bytes seconds late. Costs that client one
    /// round trip for the FIN, and only when data was still in flight.
    pub fn close(&mut self) {
        let Some(socket) = self.socket.as_mut() else {
            return;
        };
        self.fin_deferred = socket.state() == tcp::State::CloseWait && socket.send_queue() > 0;
        if !self.fin_deferred {
            socket.close();
        }
    }

    /// The app lets go of the connection (its handle dropped, or the stack stops): FIN as
    /// [`TcpEntry::close`] does, but RST if received data was never read — nobody will
    /// read it now (RFC 2525 §2.17; Linux's close(2) does the same). True if reset.
    pub fn release(&mut self) -> bool {
        let Some(socket) = self.socket.as_mut() else {
            return false;
        };
        if socket.recv_queue() == 0 {
            self.close();
            return false;
        }
        log::info!("tcp: {}: closed with unread data: reset", self.pair);
        socket.abort();
        true
    }

    /// Data reached a socket its app has let go of: nobody can read it, so the
    /// connection is reset (Linux: `TCPAbortOnData`). True if reset.
    pub fn abort_on_orphan_data(&mut self) -> bool {
        if !matches!(self.phase, Phase::Orphaned) {
            return false;
        }
        let Some(socket) = self.socket.as_mut() else {
            return false;
        };
        if socket.recv_queue() == 0 || socket.state() == tcp::State::Closed {
            return false;
        }
        log::info!("tcp: {}: data for a closed socket: reset", self.pair);
        socket.abort();
        true
    }

    /// Sends the deferred FIN once nothing before it is unacknowledged (or closes at once
    /// if the connection left CLOSE-WAIT otherwise, e.g. reset). True if it closed now.
    pub fn finish_close(&mut self) -> bool {
        if !self.fin_deferred {
            return false;
        }
        self.close();
        !self.fin_deferred
    }

    /// Something of ours awaits the peer's answer: a SYN, data, or a FIN.
    pub fn awaits_peer(&self) -> bool {
        self.socket.as_ref().is_some_and(|s| {
            (s.send_queue() > 0 && !matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait))
                || matches!(
                    s.state(),
                    tcp::State::SynSent
                        | tcp::State::SynReceived
                        | tcp::State::FinWait1
                        | tcp::State::Closing
                        | tcp::State::LastAck
                )
        })
    }

    /// Notes whether something awaits the peer, and since when; the clock starts when we
    /// begin to wait, not at the last word from the peer (an idle connection may have been
    /// quiet for hours before it sends).
    pub fn update_waiting(&mut self, now: Instant) {
        if self.awaits_peer() {
            self.waiting_since.get_or_insert(now);
        } else {
            self.waiting_since = None;
        }
    }

    /// The moment the user timeout fires, if something awaits the peer.
    pub fn give_up_at(&self) -> Option<Instant> {
        self.waiting_since
            .map(|since| since.max(self.last_heard) + self.timeout)
    }
}

pub(crate) struct UdpEntry {
    pub socket: Option<udp::Socket<'static>>,
    pub endpoint: IpListenEndpoint,
    /// The one peer of a connected socket: datagrams come only from it, and ICMP errors
    /// about datagrams to it are reported ([`UdpEntry::error`]).
    pub peer: Option<IpEndpoint>,
    /// An ICMP error about a datagram to `peer`, until the app is told.
    pub error: Option<ErrorCause>,
}

/// Why a TCP connection ended abnormally, or what a connected UDP socket was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorCause {
    Reset,
    /// ICMP port unreachable (a connected UDP socket's peer has no socket there).
    Refused,
    Unreachable,
    TimedOut,
}

impl ErrorCause {
    pub fn to_error(self, was_established: bool) -> Error {
        match (self, was_established) {
            (ErrorCause::Reset, false) => Error::ConnectionRefused,
            (ErrorCause::Reset, true) => Error::ConnectionReset,
            (ErrorCause::Refused, _) => Error::ConnectionRefused,
            (ErrorCause::Unreachable, _) => Error::Unreachable,
            (ErrorCause::TimedOut, _) => Error::TimedOut,
        }
    }
}

impl Entry {
    pub fn new(kind: EntryKind) -> Entry {
        Entry {
            kind,
            dirty: false,
            ready: false,
            deadline: None,
        }
    }

    pub fn tcp(&self) -> Option<&TcpEntry> {
        match &self.kind {
            EntryKind::Tcp(t) => Some(t),
            _ => None,
        }
    }

    pub fn tcp_mut(&mut self) -> Option<&mut TcpEntry> {
        match &mut self.kind {
            EntryKind::Tcp(t) => Some(t),
            _ => None,
        }
    }

    /// What a TCP socket has sent, for the tap that counts it.
    pub fn sent_mut(&mut self) -> Option<&mut Sent> {
        self.tcp_mut().map(|t| &mut t.sent)
    }

    pub fn listener_mut(&mut self) -> Option<&mut Listener> {
        match &mut self.kind {
            EntryKind::Listener(l) => Some(l),
            _ => None,
        }
    }

    pub fn udp_mut(&mut self) -> Option<&mut UdpEntry> {
        match &mut self.kind {
            EntryKind::Udp(u) => Some(u),
            _ => None,
        }
    }
}

/// Making TCP sockets, and lending sockets to the interface while it works on one.
impl Inner {
    /// Moves a socket into the scratch set. `None` if it has no smoltcp socket.
    pub(super) fn lend(&mut self, id: SocketId) -> Option<SocketHandle> {
        let entry = self.sockets.get_mut(id.0)?;
        let socket: Socket<'static> = match &mut entry.kind {
            EntryKind::Tcp(tcp) => Socket::Tcp(tcp.socket.take()?),
            EntryKind::Udp(udp) => Socket::Udp(udp.socket.take()?),
            EntryKind::Listener(_) => return None,
        };
        Some(self.scratch.add(socket))
    }

    /// Puts a lent socket back in its slot.
    pub(super) fn unlend(&mut self, id: SocketId, handle: SocketHandle) {
        let socket = self.scratch.remove(handle);
        match (self.sockets.get_mut(id.0).map(|e| &mut e.kind), socket) {
            (Some(EntryKind::Tcp(tcp)), Socket::Tcp(s)) => tcp.socket = Some(s),
            (Some(EntryKind::Udp(udp)), Socket::Udp(s)) => udp.socket = Some(s),
            _ => log::error!("stack: socket {id} came back to the wrong slot; dropped"),
        }
    }

    /// A TCP socket with buffers sized for how many sockets are open now.
    pub(crate) fn new_tcp_socket(&self) -> tcp::Socket<'static> {
        self.new_tcp_socket_sized(self.tcp_buffer_size())
    }

    /// The buffer (each way) a new TCP socket gets: its share of `tcp_memory`, within
    /// [`MIN_TCP_BUFFER`] and `tcp_buffer`.
    pub(crate) fn tcp_buffer_size(&self) -> usize {
        let share = self.config.tcp_memory / 2 / (self.sockets.len() + 1);
        share.max(MIN_TCP_BUFFER).min(self.config.tcp_buffer)
    }

    pub(crate) fn new_tcp_socket_sized(&self, size: usize) -> tcp::Socket<'static> {
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; size]),
            tcp::SocketBuffer::new(vec![0; size]),
        );
        socket.set_nagle_enabled(false);
        socket.set_congestion_control(tcp::CongestionControl::Cubic);
        socket.set_tsval_generator(Some(tsval));
        socket
    }
}

/// TCP timestamps (RFC 7323): the stack's `now` in milliseconds, from 1 (an echo of 0
/// means "none"). Offered back to every peer that offers them: Linux reuses a TIME_WAIT
/// port (`tcp_tw_reuse`) only towards a peer that sends them. smoltcp only echoes them
/// (no RTT sampling); the tail-loss probe takes round trips from the peer's echoes
/// ([`super::tail`]), the guard does PAWS ([`super::guard`]).
///
/// smoltcp asks for them through a bare `fn() -> u32` (`TcpTimestampGenerator`,
/// `wire/tcp.rs` line 871), which cannot be handed `now`; so every call into the stack
/// records its `now` here first ([`set_clock`]), per thread as a stack is. The core reads
/// no clock of its own.
pub(super) fn tsval() -> u32 {
    CLOCK_MS.with(|ms| ms.get()).wrapping_add(1)
}

thread_local! {
    static CLOCK_MS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Records the `now` the stack was called with, for [`tsval`].
pub(super) fn set_clock(now: Instant) {
    CLOCK_MS.with(|ms| ms.set(now.total_millis() as u32));
}
