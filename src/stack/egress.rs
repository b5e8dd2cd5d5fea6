//! Egress and socket lifecycle: sockets that are dirty (touched by a packet or the app) or
//! whose timer is due are lent to the interface one at a time to transmit; afterwards their
//! next deadline goes into the timer queue, SYN-queue sockets that completed the handshake
//! move to the accept queue, and closed sockets nobody holds are reaped.

use super::device::{Tap, TapTx};
use super::fragmenter;
use super::{Entry, EntryKind, ErrorCause, Inner, Phase};
use crate::flow::SocketId;
use smoltcp::iface::PollResult;
use smoltcp::phy::{self, Device};
use smoltcp::socket::tcp::State;
use smoltcp::time::{Duration, Instant};
use std::cmp::Reverse;

/// Segments one socket may send per poll before others get their turn.
const EGRESS_BURST: usize = 256;

/// The timer heap is cleaned of stale entries when it holds this many per socket (plus
/// the slack below): often enough to bound it, rarely enough to cost O(1) per push.
const STALE_TIMERS_FACTOR: usize = 2;
const STALE_TIMERS_SLACK: usize = 64;

/// Packets built outside smoltcp that may wait for the device.
pub(super) const RAW_TX_LIMIT: usize = 1024;

impl Inner {
    /// Transmits for every dirty socket and every socket whose timer is due.
    pub fn egress<D: Device>(&mut self, now: Instant, device: &mut D) -> bool {
        if !fragmenter::drain_ipv4_fragments(&mut self.iface, &mut self.meter, device, now) {
            // The device is full: nothing may be dispatched until it takes the rest.
            return true;
        }
        let raw_before = self.raw_tx.len();
        self.send_raw(now, device);
        // Swapped, not taken: both lists keep their capacity from poll to poll.
        let mut due = std::mem::take(&mut self.due);
        std::mem::swap(&mut due, &mut self.dirty);
        for id in &due {
            if let Some(entry) = self.sockets.get_mut(id.0) {
                entry.dirty = false;
            }
        }
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if let Some(entry) = self.sockets.get_mut(id.0)
                && entry.deadline == Some(at)
            {
                entry.deadline = None;
                due.push(id);
            }
        }
        due.sort_unstable();
        due.dedup();
        let mut sent = false;
        for &id in &due {
            sent |= self.egress_socket(now, device, id);
        }
        due.clear();
        self.due = due;
        if sent || raw_before != self.raw_tx.len() {
            // Room again (or soon): the apps that found none try again.
            for id in std::mem::take(&mut self.udp_blocked) {
                self.mark_ready(id);
            }
        }
        // Remaining IP fragments of earlier replies (e.g. a large ping's echo reply).
        let Inner {
            iface,
            scratch,
            meter,
            ..
        } = self;
        let mut tap = Tap {
            device,
            meter,
            seq_offset: 0,
            sent: None,
            path: None,
        };
        iface.poll_egress(now, &mut tap, scratch) == PollResult::SocketStateChanged || sent
    }

    fn egress_socket<D: Device>(&mut self, now: Instant, device: &mut D, id: SocketId) -> bool {
        self.enforce_timeout(now, id);
        if let Some(tcp) = self.sockets.get_mut(id.0).and_then(|e| e.tcp_mut())
            && tcp.finish_close()
        {
            log::debug!("tcp: {}: all data acknowledged, FIN sent", tcp.pair);
        }
        let state_before = self.tcp_state(id);
        let seq_offset = self.seq_offset(id);
        let path_mtu = self.path_mtu_of(id, now);
        let Some(handle) = self.lend(id) else {
            return false;
        };
        self.tail_probe(now, id, state_before, &device.capabilities(), seq_offset);
        let mut rounds = 0;
        let drained;
        let poll_at = {
            let Inner {
                iface,
                scratch,
                meter,
                sockets,
                raw_tx,
                ..
            } = self;
            let sent = sockets.get_mut(id.0).and_then(Entry::sent_mut);
            let mut tap = Tap {
                device,
                meter,
                seq_offset,
                sent,
                path: path_mtu.map(|mtu| (mtu, raw_tx)),
            };
            // Each round may leave IPv4 fragments or pieces of a segment cut to the path
            // MTU behind: they go before the next one.
            while rounds < EGRESS_BURST
                && fragmenter::drain_ipv4_fragments(iface, tap.meter, tap.device, now)
                && tap.send_pending(now)
                && iface.poll_egress(now, &mut tap, scratch) == PollResult::SocketStateChanged
            {
                rounds += 1;
            }
            drained = fragmenter::drain_ipv4_fragments(iface, tap.meter, tap.device, now)
                && tap.send_pending(now);
            iface.poll_at(now, scratch)
        };
        self.unlend(id, handle);
        if rounds >= EGRESS_BURST || !drained {
            self.mark_dirty(id);
        } else if let Some(at) = poll_at {
            // "Now" after a pass that sent all it could: retry in 1 ms rather than spin.
            let at = if at <= now {
                now + Duration::from_millis(1)
            } else {
                at
            };
            self.schedule(id, at);
        }
        let give_up_at = self
            .sockets
            .get_mut(id.0)
            .and_then(|e| e.tcp_mut())
            .and_then(|t| {
                t.update_waiting(now);
                t.give_up_at()
            });
        if let Some(at) = give_up_at {
            self.schedule(id, at.max(now + Duration::from_millis(1)));
        }
        if let Some(at) = self.probe_at(id) {
            self.schedule(id, at.max(now + Duration::from_millis(1)));
        }
        let state_after = self.tcp_state(id);
        if state_before.is_some() {
            self.refresh_tcp(id, state_before != state_after);
        }
        rounds > 0
    }

    /// Queues packets made outside smoltcp for the next egress (bounded: a flood of big
    /// pings cannot grow it without limit). Returns false if they were dropped.
    pub(crate) fn queue_raw(&mut self, packets: Vec<Vec<u8>>) -> bool {
        if self.raw_tx.len() + packets.len() > RAW_TX_LIMIT {
            log::debug!("egress: raw queue full, {} packets dropped", packets.len());
            self.meter.stats.tx_unsent += packets.len() as u64;
            return false;
        }
        self.raw_tx.extend(packets);
        true
    }

    fn send_raw<D: Device>(&mut self, now: Instant, device: &mut D) {
        while let Some(packet) = self.raw_tx.pop_front() {
            let Some(token) = device.transmit(now) else {
                self.raw_tx.push_front(packet);
                return;
            };
            let tap = TapTx::counting(token, &mut self.meter, now);
            phy::TxToken::consume(tap, packet.len(), |buf| buf.copy_from_slice(&packet));
        }
    }

    /// The user timeout: a peer silent for `timeout` while something of ours awaits its
    /// answer is gone; the connection is aborted (RST) and reports `TimedOut`.
    fn enforce_timeout(&mut self, now: Instant, id: SocketId) {
        let Some(tcp) = self.sockets.get_mut(id.0).and_then(|e| e.tcp_mut()) else {
            return;
        };
        tcp.update_waiting(now);
        if tcp.give_up_at().is_some_and(|at| now >= at)
            && let Some(socket) = tcp.socket.as_mut()
        {
            socket.abort();
            self.note_error(id, ErrorCause::TimedOut);
            self.mark_ready(id);
        }
    }

    /// Arms the socket's timer for `at`, unless an earlier one is already armed.
    fn schedule(&mut self, id: SocketId, at: Instant) {
        if let Some(entry) = self.sockets.get_mut(id.0)
            && entry.deadline.is_none_or(|current| at < current)
        {
            entry.deadline = Some(at);
            if self.timers.len() >= STALE_TIMERS_FACTOR * self.sockets.len() + STALE_TIMERS_SLACK {
                self.drop_stale_timers();
            }
            self.timers.push(Reverse((at, id)));
        }
    }

    /// A timer armed earlier than a socket's existing one leaves the later one in the heap
    /// until it comes due (lazy deletion). Dropping the stale ones once they outnumber the
    /// sockets keeps the heap, and the memory it holds, proportional to the sockets.
    fn drop_stale_timers(&mut self) {
        let sockets = &self.sockets;
        self.timers.retain(|Reverse((at, id))| {
            sockets
                .get(id.0)
                .is_some_and(|entry| entry.deadline == Some(*at))
        });
    }

    /// The sequence-number offset of a SYN-cookie connection; 0 for any other socket.
    pub(super) fn seq_offset(&self, id: SocketId) -> u32 {
        self.sockets
            .get(id.0)
            .and_then(|e| e.tcp())
            .map_or(0, |t| t.seq_offset)
    }

    fn tcp_state(&self, id: SocketId) -> Option<State> {
        self.sockets
            .get(id.0)?
            .tcp()?
            .socket
            .as_ref()
            .map(|s| s.state())
    }

    fn note_error(&mut self, id: SocketId, cause: ErrorCause) {
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
