//! The socket table: a snapshot of every socket like `ss -tuan` shows it — the listener with
//! its queues, each data socket with its state and socket pair, each UDP socket.

use super::{EntryKind, Inner, Stack};
use crate::flow::{SocketId, endpoint, listen_endpoint};
use std::fmt;

/// The kind of a socket in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    /// A TCP listening socket.
    TcpListener,
    /// A TCP data socket (accepted or connected).
    Tcp,
    /// A UDP socket.
    Udp,
}

/// One row of the socket table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketInfo {
    /// The socket's id.
    pub id: SocketId,
    /// Listener, TCP data socket or UDP.
    pub kind: SocketKind,
    /// TCP state (`LISTEN`, `ESTABLISHED`, ...) or `UNCONN` for UDP.
    pub state: String,
    /// Local endpoint, `*` for the wildcard address.
    pub local: String,
    /// Remote endpoint (`*:*` for listeners and UDP).
    pub remote: String,
    /// Bytes waiting to be read (for a listener: connections in the accept queue).
    pub recv_queue: usize,
    /// Bytes waiting to be sent and acknowledged (for a listener: the backlog).
    pub send_queue: usize,
    /// For a listener: half-open connections in the SYN queue.
    pub syn_queue: usize,
}

impl fmt::Display for SocketInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = if self.kind == SocketKind::Udp {
            "udp"
        } else {
            "tcp"
        };
        write!(
            f,
            "{proto:<5} {:<12} {:>7} {:>7} {:<28} {:<28}",
            self.state, self.recv_queue, self.send_queue, self.local, self.remote
        )?;
        if self.kind == SocketKind::TcpListener {
            write!(f, " syn-queue {}", self.syn_queue)?;
        }
        Ok(())
    }
}

impl SocketInfo {
    /// The header line matching [`SocketInfo`]'s `Display`.
    pub const HEADER: &'static str =
        "proto state        recv-q  send-q  local                        remote";
}

impl Stack {
    /// Every socket the stack holds, listeners first, then in id order.
    pub fn socket_table(&self) -> Vec<SocketInfo> {
        let inner = self.inner();
        let mut rows: Vec<SocketInfo> = inner
            .sockets
            .iter()
            .map(|(i, e)| row(&inner, SocketId(i), &e.kind))
            .collect();
        rows.sort_by_key(|r| (r.kind != SocketKind::TcpListener, r.id));
        rows
    }
}

fn row(_inner: &Inner, id: SocketId, kind: &EntryKind) -> SocketInfo {
    match kind {
        EntryKind::Listener(l) => SocketInfo {
            id,
            kind: SocketKind::TcpListener,
            state: "LISTEN".into(),
            local: listen_endpoint(l.endpoint),
            remote: "*:*".into(),
            recv_queue: l.accept_queue.len(),
            send_queue: l.backlog,
            syn_queue: l.syn_queue.len(),
        },
        EntryKind::Tcp(t) => {
            let (state, rq, sq) = t.socket.as_ref().map_or(("LENT".to_string(), 0, 0), |s| {
                (
                    s.state().to_string().to_uppercase().replace('-', "_"),
                    s.recv_queue(),
                    s.send_queue(),
                )
            });
            SocketInfo {
                id,
                kind: SocketKind::Tcp,
                state,
                local: endpoint(t.pair.local),
                remote: endpoint(t.pair.remote),
                recv_queue: rq,
                send_queue: sq,
                syn_queue: 0,
            }
        }
        EntryKind::Udp(u) => {
            let (rq, sq) = u
                .socket
                .as_ref()
                .map_or((0, 0), |s| (s.recv_queue(), s.send_queue()));
            SocketInfo {
                id,
                kind: SocketKind::Udp,
                state: "UNCONN".into(),
                local: listen_endpoint(u.endpoint),
                remote: "*:*".into(),
                recv_queue: rq,
                send_queue: sq,
                syn_queue: 0,
            }
        }
    }
}
