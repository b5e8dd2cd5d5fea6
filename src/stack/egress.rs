//! Egress: sockets that are dirty (touched by a packet or the app) or whose timer is due
//! are lent to the interface one at a time to transmit; afterwards their next deadline goes
//! into the timer queue and [`super::lifecycle`] moves them along their life.

use super::device::{Tap, TapTx};
use super::fragmenter;
use super::{Entry, ErrorCause, Inner};
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
}
