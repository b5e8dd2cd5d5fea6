//! Socket lifecycle: what happens to a TCP socket after the interface touched it — the SYN
//! queue to the accept queue, the owner told, the closed socket reaped — and the stack's
//! own shutdown (close every connection, then reset what is left).

use super::{EntryKind, ErrorCause, Inner, Phase};
use crate::flow::SocketId;
use smoltcp::socket::tcp::State;

impl Inner {
    pub(super) fn note_error(&mut self, id: SocketId, cause: ErrorCause) {
        if let Some(tcp) = self.sockets.get_mut(id.0).and_then(|e| e.tcp_mut())
            && tcp.error.is_none()
        {
            log::info!("tcp: {}: {cause:?}", tcp.pair);
            tcp.error = Some(cause);
        }
    }

    /// Moves a TCP socket along its life after the interface touched it.
    pub(super) fn refresh_tcp(&mut self, id: SocketId, notify_owner: bool) {
        let Some(tcp) = self.sockets.get_mut(id.0).and_then(|e| e.tcp_mut()) else {
            return;
        };
        let Some(state) = tcp.socket.as_ref().map(|s| s.state()) else {
            return;
        };
        let synchronized = !matches!(
            state,
            State::Closed | State::Listen | State::SynSent | State::SynReceived
        );
        if synchronized && !tcp.was_established {
            tcp.was_established = true;
            self.meter.stats.tcp_established += 1;
            log::debug!("tcp: {} established", tcp.pair);
        }
        match tcp.phase {
            Phase::SynQueue(listener) if synchronized => {
                tcp.phase = Phase::AcceptQueue(listener);
                if let Some(l) = self
                    .sockets
                    .get_mut(listener.0)
                    .and_then(|e| e.listener_mut())
                {
                    l.syn_queue.retain(|queued| *queued != id);
                    l.accept_queue.push_back(id);
                }
                self.mark_ready(listener);
            }
            Phase::SynQueue(_) | Phase::AcceptQueue(_) | Phase::Orphaned
                if matches!(state, State::Closed | State::Listen) =>
            {
                self.reap(id);
            }
            Phase::Owned if notify_owner => self.mark_ready(id),
            _ => {}
        }
    }

    /// Removes a socket from the slab, the flow table and its listener's queues.
    pub fn reap(&mut self, id: SocketId) {
        let Some(entry) = self.sockets.try_remove(id.0) else {
            return;
        };
        match entry.kind {
            EntryKind::Tcp(tcp) => {
                self.flows.remove_tcp(&tcp.pair);
                if let Phase::SynQueue(l) | Phase::AcceptQueue(l) = tcp.phase
                    && let Some(listener) = self.sockets.get_mut(l.0).and_then(|e| e.listener_mut())
                {
                    listener.syn_queue.retain(|queued| *queued != id);
                    listener.accept_queue.retain(|queued| *queued != id);
                }
                self.meter.stats.tcp_reaped += 1;
                log::debug!("tcp: {} reaped", tcp.pair);
            }
            EntryKind::Udp(udp) => self.flows.remove_udp(&udp.endpoint),
            EntryKind::Listener(listener) => self.flows.remove_listener(&listener.endpoint),
        }
    }

    /// Listeners stop; every connection closes gracefully (FIN after queued data), but one
    /// holding data its app never read is reset at once, as Linux's close(2) does
    /// (RFC 2525 §2.17): nobody will read it.
    pub fn close_all(&mut self) {
        let ids: Vec<SocketId> = self.sockets.iter().map(|(i, _)| SocketId(i)).collect();
        for id in ids {
            let Some(entry) = self.sockets.get_mut(id.0) else {
                continue;
            };
            match &mut entry.kind {
                EntryKind::Listener(listener) => {
                    let endpoint = listener.endpoint;
                    self.flows.remove_listener(&endpoint);
                }
                EntryKind::Tcp(tcp) => {
                    tcp.release();
                    self.mark_dirty(id);
                }
                EntryKind::Udp(_) => {}
            }
        }
    }

    /// Resets every TCP connection that is not closed yet: the stack is about to stop, and
    /// a peer must not wait for a host that is gone. Left alone: TIME-WAIT, and FIN-WAIT-2
    /// with nothing unread (our FIN is acknowledged and the peer sent nothing more; data
    /// arriving later would have been reset anyway). Returns how many were reset.
    pub fn abort_all(&mut self) -> usize {
        let mut aborted = 0;
        for index in 0..self.sockets.capacity() {
            let Some(socket) = self
                .sockets
                .get_mut(index)
                .and_then(|e| e.tcp_mut())
                .and_then(|t| t.socket.as_mut())
            else {
                continue;
            };
            let done = match socket.state() {
                State::Closed | State::Listen | State::TimeWait => true,
                State::FinWait2 => socket.recv_queue() == 0,
                _ => false,
            };
            if !done {
                socket.abort();
                aborted += 1;
                self.mark_dirty(SocketId(index));
            }
        }
        aborted
    }

    /// No connection has a FIN (or data ahead of it) still unacknowledged.
    pub fn is_quiet(&self) -> bool {
        self.sockets.iter().all(
            |(_, entry)| match entry.tcp().and_then(|t| t.socket.as_ref()) {
                Some(socket) => matches!(
                    socket.state(),
                    State::Closed | State::Listen | State::TimeWait | State::FinWait2
                ),
                None => true,
            },
        )
    }
}
