//! The handshake as a listener sees it. A SYN gets a data socket in the SYN queue; when that
//! queue is full, a SYN-ACK carrying a SYN cookie instead, and no socket. An ACK for no
//! connection that returns a valid cookie gets its socket then: the socket is fed the SYN
//! the cookie describes, and its own ISN is mapped onto the cookie for the connection's life.

use super::device::{OnePacket, Sink, SinkTx};
use super::route::Route;
use super::{EntryKind, Inner, Listener, Phase, TcpEntry, Verdict};
use crate::flow::{SocketId, SocketPair};
use crate::packet::{Segment, SynOptions, syn_options, syn_segment, tcp_numbers};
use crate::stats::DropReason;
use smoltcp::phy::DeviceCapabilities;
use smoltcp::time::Duration;
use smoltcp::wire::{IpAddress, IpListenEndpoint};

/// How long after the last cookie sent ACKs are checked for one: two cookie epochs.
const COOKIE_CHECK_WINDOW: Duration = Duration::from_secs(128);

/// A TCP segment that no data socket owns, as the listener sees it.
pub(super) struct Arrival<'p> {
    /// The whole IP packet.
    pub packet: &'p [u8],
    pub pair: SocketPair,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
}

impl Inner {
    /// A SYN for a listener: a new data socket in its SYN queue, a SYN cookie, or a counted
    /// drop.
    pub(super) fn admit_syn(
        &mut self,
        listener_id: SocketId,
        arrival: &Arrival<'_>,
        caps: &DeviceCapabilities,
    ) -> Route {
        let pair = arrival.pair;
        let Some(listener) = self.listener(listener_id) else {
            return Route::to(Verdict::NoSocketRst { syn: true }, None);
        };
        if listener.accept_queue.len() >= listener.backlog {
            return Route::drop(
                DropReason::BacklogFull,
                format!("listener {}", pair.local.port),
            );
        }
        let listen_ep = listener.endpoint;
        // With cookies the SYN queue is only the fast path (exact options, no rewriting):
        // its size need not grow with the backlog. Without, it must take a backlog's burst.
        let syn_limit = if self.config.syn_cookies {
            self.config.syn_backlog
        } else {
            listener.backlog.max(self.config.syn_backlog)
        };
        let syn_full = listener.syn_queue.len() >= syn_limit;
        let oldest = listener.syn_queue.front().copied();
        if syn_full && self.config.syn_cookies {
            return self.send_cookie(listen_ep, arrival, caps);
        }
        if let Some(oldest) = oldest.filter(|_| syn_full) {
            // SYN cookies off: the oldest half-open connection makes room.
            self.meter.stats.drop(DropReason::SynQueueEvicted);
            log::debug!(
                "tcp: syn queue full on port {}: evicting {oldest}",
                pair.local.port
            );
            self.reap(oldest);
        }
        let Some(id) = self.listening_socket(listener_id, pair, self.tcp_buffer_size()) else {
            return Route::to(Verdict::NoSocketRst { syn: true }, None);
        };
        self.flows.insert_tcp(pair, id);
        if let Some(listener) = self
            .sockets
            .get_mut(listener_id.0)
            .and_then(|e| e.listener_mut())
        {
            listener.syn_queue.push_back(id);
        }
        Route::to(
            Verdict::NewConnection {
                listener: listen_ep,
                pair,
            },
            Some(id),
        )
    }

    /// Answers a SYN with a SYN-ACK whose sequence number is a cookie; makes no socket.
    fn send_cookie(
        &mut self,
        listener: IpListenEndpoint,
        arrival: &Arrival<'_>,
        caps: &DeviceCapabilities,
    ) -> Route {
        let pair = arrival.pair;
        let Some(client) = syn_options(arrival.packet) else {
            return Route::drop(DropReason::Malformed, "tcp options");
        };
        let cookie = self.cookies.make(&pair, arrival.seq, &client, self.now);
        // What a socket would send: its MSS for the link, its window unscaled (a SYN), its
        // window shift and SACK only if the client offered them.
        let ip_header = match pair.local.addr {
            IpAddress::Ipv4(_) => 20,
            IpAddress::Ipv6(_) => 40,
        };
        let mss = caps.max_transmission_unit.saturating_sub(ip_header + 20);
        let ours = SynOptions {
            mss: Some(u16::try_from(mss).unwrap_or(u16::MAX)),
            window_scale: client
                .window_scale
                .map(|_| window_shift(self.cookie_buffer_size())),
            sack: client.sack,
        };
        let segment = Segment {
            src: pair.local,
            dst: pair.remote,
            seq: cookie,
            ack: Some(arrival.seq.wrapping_add(1)),
            window: u16::try_from(self.cookie_buffer_size()).unwrap_or(u16::MAX),
        };
        if let Some(synack) = syn_segment(&segment, &ours)
            && self.queue_raw(vec![synack])
        {
            self.meter.stats.syn_cookies_sent += 1;
            self.cookies_sent_at = Some(self.now);
            log::trace!("tcp: {pair}: syn queue full, cookie {cookie:#010x}");
        }
        Route::to(Verdict::SynCookie { listener, pair }, None)
    }

    /// An ACK for no connection, to a listener: if it returns a valid cookie, the data
    /// socket the cookie stands for, ready for the ACK. While cookies are in use, an ACK
    /// whose cookie does not check is dropped, not reset: it may be a later segment of a
    /// cookie connection whose first ACK met a full accept queue (its client will resend
    /// from the first byte, which checks). `None` (answer RST) when no cookie went out lately.
    pub(super) fn accept_cookie(
        &mut self,
        listener_id: SocketId,
        arrival: &Arrival<'_>,
        caps: &DeviceCapabilities,
    ) -> Option<Route> {
        let recent = self
            .cookies_sent_at
            .is_some_and(|at| self.now < at + COOKIE_CHECK_WINDOW);
        if !recent {
            return None;
        }
        let pair = arrival.pair;
        let cookie = arrival.ack.wrapping_sub(1);
        let client_isn = arrival.seq.wrapping_sub(1);
        let Some(options) = self.cookies.check(&pair, client_isn, cookie, self.now) else {
            return Some(Route::drop(
                DropReason::BadCookie,
                format!("ack {} for {pair}", arrival.ack),
            ));
        };
        let listener = self.listener(listener_id)?;
        let listen_ep = listener.endpoint;
        if listener.accept_queue.len() >= listener.backlog {
            return Some(Route::drop(
                DropReason::BacklogFull,
                format!("listener {} (cookie)", pair.local.port),
            ));
        }
        let id = self.listening_socket(listener_id, pair, self.cookie_buffer_size())?;
        let Some(isn) = self.open_cookie_socket(id, arrival, &options, caps) else {
            log::warn!("tcp: {pair}: socket for a valid cookie sent no SYN-ACK; dropped");
            self.sockets.remove(id.0);
            return None;
        };
        let seq_offset = isn.wrapping_sub(cookie);
        if let Some(tcp) = self.sockets.get_mut(id.0).and_then(|e| e.tcp_mut()) {
            tcp.seq_offset = seq_offset;
        }
        self.flows.insert_tcp(pair, id);
        self.meter.stats.syn_cookies_accepted += 1;
        log::debug!("tcp: {pair}: syn cookie accepted");
        let mut route = Route::to(
            Verdict::CookieAccepted {
                listener: listen_ep,
                pair,
            },
            Some(id),
        );
        route.seq_offset = seq_offset;
        Some(route)
    }

    /// Feeds the new socket `id` (in LISTEN) the SYN a cookie describes, and returns the
    /// ISN of the SYN-ACK it answers with; that SYN-ACK is never sent (the peer had ours).
    fn open_cookie_socket(
        &mut self,
        id: SocketId,
        arrival: &Arrival<'_>,
        options: &SynOptions,
        caps: &DeviceCapabilities,
    ) -> Option<u32> {
        let client_isn = arrival.seq.wrapping_sub(1);
        let syn = Segment {
            src: arrival.pair.remote,
            dst: arrival.pair.local,
            seq: client_isn,
            ack: None,
            window: arrival.window,
        };
        let syn = syn_segment(&syn, options)?;
        let handle = self.lend(id)?;
        let now = self.now;
        let mut sink = Sink {
            packets: Vec::new(),
            caps: caps.clone(),
        };
        {
            let Inner { iface, scratch, .. } = self;
            let mut one = OnePacket {
                packet: &syn,
                tx: Some(SinkTx(&mut sink.packets)),
                caps: caps.clone(),
            };
            iface.poll_ingress_single(now, &mut one, scratch);
            iface.poll_egress(now, &mut sink, scratch);
        }
        self.unlend(id, handle);
        let mut isn = None;
        for packet in sink.packets {
            match tcp_numbers(&packet) {
                Some((seq, ack, true, true)) if isn.is_none() && ack == arrival.seq => {
                    isn = Some(seq);
                }
                // Not the socket's: IP fragments the interface still had to send.
                _ => {
                    self.queue_raw(vec![packet]);
                }
            }
        }
        isn
    }

    /// The buffer of a SYN-cookie connection: fixed, because the window scale in the
    /// cookie's SYN-ACK must be the one its socket, made later, will use.
    fn cookie_buffer_size(&self) -> usize {
        self.config.tcp_buffer.min(COOKIE_BUFFER)
    }

    /// A new data socket in LISTEN on exactly the pair's local address and port, with
    /// `buffer` bytes each way, in the slab (not yet in the flow table or a queue), owned by
    /// `listener_id`'s SYN queue.
    fn listening_socket(
        &mut self,
        listener_id: SocketId,
        pair: SocketPair,
        buffer: usize,
    ) -> Option<SocketId> {
        let mut socket = self.new_tcp_socket_sized(buffer);
        let endpoint = IpListenEndpoint {
            addr: Some(pair.local.addr),
            port: pair.local.port,
        };
        socket.listen(endpoint).ok()?;
        let entry = TcpEntry::new(
            socket,
            pair,
            Phase::SynQueue(listener_id),
            self.config.tcp_timeout,
            self.now,
        );
        Some(self.insert(EntryKind::Tcp(entry)))
    }

    fn listener(&self, id: SocketId) -> Option<&Listener> {
        match &self.sockets.get(id.0)?.kind {
            EntryKind::Listener(l) => Some(l),
            _ => None,
        }
    }
}

/// The window shift a smoltcp socket with `rx_capacity` bytes of receive buffer uses: the
/// smallest that fits the buffer in 16 bits (smoltcp's `rx_cap_log2 - 16`; buffers are at
/// most 1 GiB).
/// Buffer of each SYN-cookie connection (or `tcp_buffer` if smaller).
const COOKIE_BUFFER: usize = 64 * 1024;

pub(super) fn window_shift(rx_capacity: usize) -> u8 {
    let bits = usize::BITS - rx_capacity.leading_zeros();
    bits.saturating_sub(16) as u8
}

#[cfg(test)]
mod tests {
    use super::window_shift;

    #[test]
    fn window_shift_matches_smoltcp() {
        assert_eq!(window_shift(1024), 0);
        assert_eq!(window_shift(65535), 0);
        assert_eq!(window_shift(64 * 1024), 1);
        assert_eq!(window_shift(256 * 1024), 3);
        assert_eq!(window_shift((1 << 30) - 1), 14);
    }
}
