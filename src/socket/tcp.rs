//! TCP: [`TcpListener`] (a listening socket with a SYN queue and an accept queue) and
//! [`TcpStream`] (one data socket: accepted from a listener or made by `connect`).
//! Every call is non-blocking: `Err(Error::WouldBlock)` means wait for readiness.

use crate::error::{Error, Result};
use crate::flow::{SocketId, SocketPair, endpoint, listen_endpoint, listen_socket_addr};
use crate::stack::{EntryKind, Inner, Listener, Phase, Stack, TcpEntry};
use smoltcp::socket::tcp::{self, State};
use smoltcp::wire::{IpAddress, IpEndpoint, IpListenEndpoint};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;

/// A listening socket: `<tcp, ip, port>`. Each client that completes the handshake becomes
/// a new data socket sharing this ip:port, told apart by its socket pair.
pub struct TcpListener {
    stack: Stack,
    id: SocketId,
    endpoint: IpListenEndpoint,
}

impl TcpListener {
    /// Listens on `addr` (an unspecified ip means every address of the stack, IPv4 and IPv6).
    /// At most `backlog` established connections wait for [`accept`](Self::accept); more
    /// SYNs are dropped (the client retries) and counted.
    pub fn bind(stack: &Stack, addr: SocketAddr, backlog: usize) -> Result<TcpListener> {
        let mut inner = stack.inner();
        let endpoint = listen_endpoint_of(&inner, addr)?;
        if endpoint.port == 0 {
            return Err(Error::Unaddressable(
                "a listener needs a port other than 0".into(),
            ));
        }
        let id = inner.insert(EntryKind::Listener(Listener {
            endpoint,
            backlog: backlog.max(1),
            syn_queue: VecDeque::new(),
            accept_queue: VecDeque::new(),
        }));
        if !inner.flows.insert_listener(endpoint, id) {
            inner.sockets.remove(id.0);
            return Err(Error::AddrInUse(format!(
                "tcp {}",
                listen_endpoint(endpoint)
            )));
        }
        log::info!(
            "tcp: listening on {} (backlog {backlog})",
            listen_endpoint(endpoint)
        );
        Ok(TcpListener {
            stack: stack.clone(),
            id,
            endpoint,
        })
    }

    /// Takes the oldest established connection off the accept queue.
    pub fn accept(&self) -> Result<(TcpStream, SocketAddr)> {
        let mut inner = self.stack.inner();
        let next = inner
            .sockets
            .get_mut(self.id.0)
            .and_then(|e| e.listener_mut())
            .and_then(|l| l.accept_queue.pop_front());
        let Some(id) = next else {
            return Err(Error::WouldBlock);
        };
        let Some(tcp) = inner.sockets.get_mut(id.0).and_then(|e| e.tcp_mut()) else {
            return Err(Error::WouldBlock);
        };
        tcp.phase = Phase::Owned;
        let pair = tcp.pair;
        log::info!(
            "tcp: accepted {pair} (listener {})",
            listen_endpoint(self.endpoint)
        );
        // Data (or a FIN) may have arrived before accept: let the app look.
        inner.mark_ready(id);
        let stream = TcpStream {
            stack: self.stack.clone(),
            id,
            pair,
        };
        Ok((stream, pair.remote.into()))
    }

    /// The endpoint listened on; the wildcard shows as `[::]`.
    pub fn local_addr(&self) -> SocketAddr {
        listen_socket_addr(self.endpoint)
    }

    /// The id [`Stack::take_ready`] reports when a connection is ready to accept.
    pub fn id(&self) -> SocketId {
        self.id
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        let mut inner = self.stack.inner();
        let queued: Vec<SocketId> = inner
            .sockets
            .get_mut(self.id.0)
            .and_then(|e| e.listener_mut())
            .map(|l| {
                l.syn_queue
                    .drain(..)
                    .chain(l.accept_queue.drain(..))
                    .collect()
            })
            .unwrap_or_default();
        for id in queued {
            if let Some(tcp) = inner.sockets.get_mut(id.0).and_then(|e| e.tcp_mut()) {
                tcp.phase = Phase::Orphaned;
                if let Some(socket) = tcp.socket.as_mut() {
                    socket.abort();
                }
            }
            inner.mark_dirty(id);
        }
        inner.reap(self.id);
        log::info!("tcp: listener {} closed", listen_endpoint(self.endpoint));
    }
}

/// One TCP connection, identified by its socket pair.
///
/// ```
/// use tunstack::{Error, Stack, StackConfig, TcpStream, phy::MemoryLink};
/// use tunstack::smoltcp::time::Instant;
///
/// let (mut device, peer) = MemoryLink::pair(1500);
/// let stack = Stack::new(StackConfig::default(), &mut device, Instant::ZERO);
/// let stream = TcpStream::connect(&stack, "192.168.69.1:80".parse().unwrap()).unwrap();
/// assert_eq!(stream.local_addr().ip().to_string(), "192.168.69.2");
/// assert!(matches!(stream.write(b"x"), Err(Error::WouldBlock))); // not connected yet
/// stack.poll(Instant::ZERO, &mut device);
/// assert!(peer.recv_raw().is_some()); // the SYN
/// ```
pub struct TcpStream {
    stack: Stack,
    id: SocketId,
    pair: SocketPair,
}

impl TcpStream {
    /// Starts connecting to `remote` from an ephemeral port no live socket pair uses
    /// (TIME-WAIT included). Returns at once; the stream becomes writable when connected,
    /// and a refused, unreachable or timed-out attempt shows as an error on the next call.
    pub fn connect(stack: &Stack, remote: SocketAddr) -> Result<TcpStream> {
        let mut inner = stack.inner();
        let remote_ep = IpEndpoint::from(remote);
        if remote_ep.port == 0 || remote_ep.addr.is_unspecified() {
            return Err(Error::Unaddressable(format!("cannot connect to {remote}")));
        }
        check_reachable(&inner, remote_ep.addr)?;
        let local_addr = inner.source_for(remote_ep.addr)?;
        let start = inner.random();
        let range = inner.config.ephemeral_ports.clone();
        let port = inner
            .flows
            .free_tcp_port(local_addr, remote_ep, &range, start)
            .ok_or_else(|| Error::EphemeralPortsExhausted(endpoint(remote_ep)))?;
        let pair = SocketPair {
            local: IpEndpoint::new(local_addr, port),
            remote: remote_ep,
        };
        let mut socket = inner.new_tcp_socket();
        socket
            .connect(inner.iface.context(), pair.remote, pair.local)
            .map_err(|e| Error::Unaddressable(format!("connect {pair}: {e}")))?;
        let (timeout, now) = (inner.config.tcp_timeout, inner.now);
        let id = inner.insert(EntryKind::Tcp(TcpEntry::new(
            socket,
            pair,
            Phase::Owned,
            timeout,
            now,
        )));
        inner.flows.insert_tcp(pair, id);
        inner.mark_dirty(id);
        log::info!("tcp: connecting {pair}");
        Ok(TcpStream {
            stack: stack.clone(),
            id,
            pair,
        })
    }

    /// Reads queued bytes. `Ok(0)` is end of stream (the peer sent FIN).
    pub fn read(&self, buf: &mut [u8]) -> Result<usize> {
        self.with_socket(|socket, error| {
            if socket.recv_queue() == 0
                && let Some(err) = error
            {
                return (Err(err), false);
            }
            match socket.recv_slice(buf) {
                Ok(0)
                    if !buf.is_empty() && (socket.may_recv() || !synchronized(socket.state())) =>
                {
                    (Err(Error::WouldBlock), false)
                }
                Ok(n) => (Ok(n), n > 0),
                Err(tcp::RecvError::Finished) => (Ok(0), false),
                Err(tcp::RecvError::InvalidState) if socket.state() == State::Closed => {
                    (Ok(0), false)
                }
                Err(tcp::RecvError::InvalidState) => (Err(Error::WouldBlock), false),
            }
        })
    }

    /// Queues bytes for sending; returns how many fit (`WouldBlock` if none did).
    pub fn write(&self, buf: &[u8]) -> Result<usize> {
        self.with_entry(|entry| {
            let Some((socket, error)) = sending(entry) else {
                return (Err(Error::NotConnected), false);
            };
            if let Some(err) = error {
                return (Err(err), false);
            }
            if matches!(socket.state(), State::SynSent | State::SynReceived) {
                return (Err(Error::WouldBlock), false);
            }
            match socket.send_slice(buf) {
                Ok(0) if !buf.is_empty() => (Err(Error::WouldBlock), false),
                Ok(n) => (Ok(n), n > 0),
                Err(tcp::SendError::InvalidState) => (Err(Error::NotConnected), false),
            }
        })
    }

    /// Bytes [`write`](Self::write) would accept now.
    pub fn send_space(&self) -> usize {
        self.with_entry(|entry| {
            let Some((socket, _)) = sending(entry) else {
                return (0, false);
            };
            let space = if socket.may_send() {
                socket.send_capacity() - socket.send_queue()
            } else {
                0
            };
            (space, false)
        })
    }

    /// Sends FIN after the queued data: the peer reads end of stream; we can still read.
    pub fn shutdown_write(&self) {
        self.with_entry(|entry| {
            entry.close();
            ((), true)
        });
    }

    /// Aborts the connection (or the attempt) when the peer stays silent this long with
    /// a SYN, data or FIN outstanding; the stack's default is `StackConfig::tcp_timeout`.
    /// An idle connection with nothing outstanding never times out.
    pub fn set_timeout(&self, timeout: smoltcp::time::Duration) {
        let mut inner = self.stack.inner();
        if let Some(entry) = inner.sockets.get_mut(self.id.0).and_then(|e| e.tcp_mut()) {
            entry.timeout = timeout;
        }
        inner.mark_dirty(self.id);
    }

    /// True once the handshake completed (and until the connection is gone).
    pub fn is_connected(&self) -> bool {
        self.with_socket(|socket, _| (synchronized(socket.state()), false))
    }

    /// After [`TcpStream::shutdown_write`]: the peer has acknowledged our FIN, so every
    /// byte written before it was delivered (FIN-WAIT-2, TIME-WAIT, or closed cleanly).
    /// An app that exits before this loses what is still unacknowledged.
    pub fn fin_acknowledged(&self) -> bool {
        self.with_socket(|socket, error| {
            let done = matches!(
                socket.state(),
                State::FinWait2 | State::TimeWait | State::Closed
            );
            (done && error.is_none(), false)
        })
    }

    /// The TCP state, as in RFC 793.
    pub fn state(&self) -> State {
        self.with_socket(|socket, _| (socket.state(), false))
    }

    /// Why the connection failed (refused, reset, unreachable, timed out), if it did.
    pub fn take_error(&self) -> Option<Error> {
        self.with_socket(|_, error| (error, false))
    }

    /// The socket pair `<local ip, local port, remote ip, remote port>`.
    pub fn socket_pair(&self) -> SocketPair {
        self.pair
    }

    /// Our address and port.
    pub fn local_addr(&self) -> SocketAddr {
        self.pair.local.into()
    }

    /// The peer's address and port.
    pub fn peer_addr(&self) -> SocketAddr {
        self.pair.remote.into()
    }

    /// The id [`Stack::take_ready`] reports for this stream.
    pub fn id(&self) -> SocketId {
        self.id
    }

    /// Runs `f` on the smoltcp socket and the connection's error, if it failed; `f` says
    /// whether the socket now has work to send.
    fn with_socket<R>(
        &self,
        f: impl FnOnce(&mut tcp::Socket<'static>, Option<Error>) -> (R, bool),
    ) -> R
    where
        R: FromMissing,
    {
        self.with_entry(|entry| match socket_and_error(entry) {
            Some((socket, error)) => f(socket, error),
            None => (R::missing(), false),
        })
    }

    /// Runs `f` on the stream's entry in the stack; `f` says whether the socket now has
    /// work to send.
    fn with_entry<R>(&self, f: impl FnOnce(&mut TcpEntry) -> (R, bool)) -> R
    where
        R: FromMissing,
    {
        let mut inner = self.stack.inner();
        let Some(entry) = inner.sockets.get_mut(self.id.0).and_then(|e| e.tcp_mut()) else {
            return R::missing();
        };
        let (result, dirty) = f(entry);
        if dirty {
            inner.mark_dirty(self.id);
        }
        result
    }
}

/// The entry's smoltcp socket (unless lent) and the connection's error, if it failed.
fn socket_and_error(entry: &mut TcpEntry) -> Option<(&mut tcp::Socket<'static>, Option<Error>)> {
    let error = entry
        .error
        .map(|cause| cause.to_error(entry.was_established));
    Some((entry.socket.as_mut()?, error))
}

/// [`socket_and_error`] for sending: none once our side is closed with the FIN deferred
/// (smoltcp's socket, still in CLOSE-WAIT, would take more data; we must not).
fn sending(entry: &mut TcpEntry) -> Option<(&mut tcp::Socket<'static>, Option<Error>)> {
    if entry.fin_deferred {
        return None;
    }
    socket_and_error(entry)
}

/// What a call returns when the socket is gone (cannot happen while the handle lives).
trait FromMissing {
    fn missing() -> Self;
}

impl<T> FromMissing for Result<T> {
    fn missing() -> Self {
        Err(Error::NotConnected)
    }
}

impl FromMissing for Option<Error> {
    fn missing() -> Self {
        Some(Error::NotConnected)
    }
}

impl FromMissing for () {
    fn missing() -> Self {}
}

impl FromMissing for bool {
    fn missing() -> Self {
        false
    }
}

impl FromMissing for usize {
    fn missing() -> Self {
        0
    }
}

impl FromMissing for State {
    fn missing() -> Self {
        State::Closed
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        let mut inner = self.stack.inner();
        let Some(entry) = inner.sockets.get_mut(self.id.0).and_then(|e| e.tcp_mut()) else {
            return;
        };
        entry.phase = Phase::Orphaned;
        entry.release();
        let closed = entry
            .socket
            .as_ref()
            .is_some_and(|socket| socket.state() == State::Closed);
        log::info!("tcp: closed {}", self.pair);
        if closed {
            inner.reap(self.id);
        } else {
            inner.mark_dirty(self.id);
        }
    }
}

impl io::Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        TcpStream::read(self, buf).map_err(io::Error::from)
    }
}

impl io::Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        TcpStream::write(self, buf).map_err(io::Error::from)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn synchronized(state: State) -> bool {
    !matches!(
        state,
        State::Closed | State::Listen | State::SynSent | State::SynReceived
    )
}

/// `addr` as a listen endpoint, checking that a specified ip is one of the stack's.
/// Refuses at once a destination no packet can reach: on none of the stack's subnets and
/// no default route for its family. smoltcp would drop every SYN for want of a route
/// (`iface/interface/mod.rs:1035`, `route`) and the connect would only time out. The
/// stack sets no other routes, so the default ones are all there is to ask about.
pub(crate) fn check_reachable(inner: &Inner, remote: IpAddress) -> Result<()> {
    let iface = &inner.iface;
    if iface
        .ip_addrs()
        .iter()
        .any(|cidr| cidr.contains_addr(&remote))
    {
        return Ok(());
    }
    let routes = iface.routes();
    let routed = match remote {
        IpAddress::Ipv4(_) => routes.get_default_ipv4_route().is_some(),
        IpAddress::Ipv6(_) => routes.get_default_ipv6_route().is_some(),
    };
    if routed {
        return Ok(());
    }
    let subnets: Vec<String> = iface.ip_addrs().iter().map(|c| c.to_string()).collect();
    Err(Error::NetworkUnreachable(format!(
        "{remote} is on none of the stack's subnets ({}) and the stack has no route to it",
        subnets.join(", ")
    )))
}

pub(crate) fn listen_endpoint_of(inner: &Inner, addr: SocketAddr) -> Result<IpListenEndpoint> {
    if addr.ip().is_unspecified() {
        return Ok(IpListenEndpoint {
            addr: None,
            port: addr.port(),
        });
    }
    let ip = addr.ip().into();
    if !inner.is_local(ip) {
        return Err(Error::Unaddressable(format!(
            "{} is not an address of the stack",
            addr.ip()
        )));
    }
    Ok(IpListenEndpoint {
        addr: Some(ip),
        port: addr.port(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StackConfig;
    use crate::phy::MemoryLink;
    use smoltcp::time::Instant;

    #[test]
    fn connect_off_every_subnet_fails_at_once_with_network_unreachable() {
        let (mut device, _peer) = MemoryLink::pair(1500);
        let stack = Stack::new(StackConfig::default(), &mut device, Instant::ZERO);
        for remote in ["10.1.1.1:80", "[fd70::1]:80"] {
            let err = TcpStream::connect(&stack, remote.parse().unwrap()).err();
            assert!(
                matches!(err, Some(Error::NetworkUnreachable(_))),
                "{remote}: {err:?}"
            );
        }
        assert_eq!(stack.socket_count(), 0, "no socket is left behind");
        for remote in ["192.168.69.1:80", "[fd69::1]:80"] {
            TcpStream::connect(&stack, remote.parse().unwrap()).unwrap();
        }
    }
}
