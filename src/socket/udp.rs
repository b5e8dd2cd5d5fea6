//! UDP: one connectionless socket per `<ip, port>`. Every datagram carries where it came
//! from ([`UdpSocket::recv_from`]) and where it goes ([`UdpSocket::send_to`]). A socket
//! [`connect`](UdpSocket::connect)ed to one peer hears only from it, and is told, like a
//! connected Linux socket, of an ICMP unreachable about a datagram it sent there: the next
//! `recv_from`, `send_to` or [`take_error`](UdpSocket::take_error) returns the error once
//! (`ConnectionRefused` for port unreachable).

use super::tcp::listen_endpoint_of;
use crate::error::{Error, Result};
use crate::flow::{SocketId, listen_endpoint, listen_socket_addr};
use crate::stack::{EntryKind, Inner, Stack, UdpEntry};
use smoltcp::socket::udp;
use smoltcp::wire::IpEndpoint;
use std::net::SocketAddr;

/// A UDP socket bound to `<ip, port>` on the stack.
///
/// ```
/// use tunstack::{Stack, StackConfig, UdpSocket, phy::MemoryLink};
/// use tunstack::smoltcp::time::Instant;
///
/// let (mut device, peer) = MemoryLink::pair(1500);
/// let stack = Stack::new(StackConfig::default(), &mut device, Instant::ZERO);
/// let socket = UdpSocket::bind(&stack, "0.0.0.0:0".parse().unwrap()).unwrap();
/// assert!(socket.local_addr().port() >= 49152); // an ephemeral port
/// socket.send_to(b"hello", "192.168.69.1:9000".parse().unwrap()).unwrap();
/// stack.poll(Instant::ZERO, &mut device);
/// assert!(peer.recv_raw().is_some()); // one datagram on the wire
/// ```
pub struct UdpSocket {
    stack: Stack,
    id: SocketId,
    endpoint: smoltcp::wire::IpListenEndpoint,
}

impl UdpSocket {
    /// Binds `addr`; port 0 picks a free ephemeral port, an unspecified ip means every
    /// address of the stack.
    pub fn bind(stack: &Stack, addr: SocketAddr) -> Result<UdpSocket> {
        let mut inner = stack.inner();
        let mut endpoint = listen_endpoint_of(&inner, addr)?;
        if endpoint.port == 0 {
            let start = inner.random();
            let range = inner.config.ephemeral_ports.clone();
            endpoint.port = inner
                .flows
                .free_udp_port(&range, start)
                .ok_or_else(|| Error::EphemeralPortsExhausted("udp".into()))?;
        }
        let (packets, bytes) = (inner.config.udp_packets, inner.config.udp_buffer);
        let buffer =
            || udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; packets], vec![0; bytes]);
        let mut socket = udp::Socket::new(buffer(), buffer());
        socket
            .bind(endpoint)
            .map_err(|e| Error::Unaddressable(format!("udp {}: {e}", listen_endpoint(endpoint))))?;
        let id = inner.insert(EntryKind::Udp(UdpEntry {
            socket: Some(socket),
            endpoint,
            peer: None,
            error: None,
        }));
        if !inner.flows.insert_udp(endpoint, id) {
            inner.sockets.remove(id.0);
            return Err(Error::AddrInUse(format!(
                "udp {}",
                listen_endpoint(endpoint)
            )));
        }
        log::info!("udp: bound {}", listen_endpoint(endpoint));
        Ok(UdpSocket {
            stack: stack.clone(),
            id,
            endpoint,
        })
    }

    /// Connects the socket to `peer` (no packet is sent): from now on it takes datagrams
    /// from `peer` only, and reports ICMP errors about datagrams it sent to `peer`.
    pub fn connect(&self, peer: SocketAddr) -> Result<()> {
        let mut inner = self.stack.inner();
        let entry = udp_entry(&mut inner, self.id)?;
        entry.peer = Some(IpEndpoint::from(peer));
        entry.error = None;
        Ok(())
    }

    /// The pending ICMP error of a connected socket, if any; taking it clears it.
    pub fn take_error(&self) -> Option<Error> {
        let mut inner = self.stack.inner();
        let entry = udp_entry(&mut inner, self.id).ok()?;
        entry.error.take().map(|cause| cause.to_error(false))
    }

    /// Queues one datagram to `target`. `WouldBlock` when the send buffer is full; a
    /// pending ICMP error of a connected socket instead, once.
    pub fn send_to(&self, buf: &[u8], target: SocketAddr) -> Result<usize> {
        if let Some(err) = self.take_error() {
            return Err(err);
        }
        let mut inner = self.stack.inner();
        // Off every subnet with no route: smoltcp would drop the datagram without a word.
        crate::socket::tcp::check_reachable(&inner, target.ip().into())?;
        match inner.send_udp_v6_fragmented(self.id, self.endpoint, target, buf) {
            Ok(true) => return Ok(buf.len()),
            Ok(false) => {}
            Err(Error::WouldBlock) => {
                inner.note_udp_send_blocked(self.id);
                return Err(Error::WouldBlock);
            }
            Err(err) => return Err(err),
        }
        let socket = udp_socket(&mut inner, self.id)?;
        if buf.len() > socket.payload_send_capacity() {
            return Err(Error::Unaddressable(format!(
                "datagram of {} bytes exceeds the send buffer",
                buf.len()
            )));
        }
        match socket.send_slice(buf, IpEndpoint::from(target)) {
            Ok(()) => {
                inner.mark_dirty(self.id);
                Ok(buf.len())
            }
            Err(udp::SendError::BufferFull) => {
                inner.note_udp_send_blocked(self.id);
                Err(Error::WouldBlock)
            }
            Err(udp::SendError::Unaddressable) => {
                Err(Error::Unaddressable(format!("cannot send to {target}")))
            }
        }
    }

    /// Takes the oldest datagram: its length (truncated to `buf`, like `recvfrom`) and
    /// sender. A pending ICMP error of a connected socket comes first, once.
    pub fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr)> {
        if let Some(err) = self.take_error() {
            return Err(err);
        }
        let mut inner = self.stack.inner();
        let socket = udp_socket(&mut inner, self.id)?;
        match socket.recv() {
            Ok((payload, meta)) => {
                let n = payload.len().min(buf.len());
                buf[..n].copy_from_slice(&payload[..n]);
                Ok((n, meta.endpoint.into()))
            }
            Err(_) => Err(Error::WouldBlock),
        }
    }

    /// The bound endpoint; the wildcard shows as `[::]`.
    pub fn local_addr(&self) -> SocketAddr {
        listen_socket_addr(self.endpoint)
    }

    /// The id [`Stack::take_ready`] reports when a datagram arrives.
    pub fn id(&self) -> SocketId {
        self.id
    }
}

fn udp_entry(inner: &mut Inner, id: SocketId) -> Result<&mut UdpEntry> {
    inner
        .sockets
        .get_mut(id.0)
        .and_then(|e| e.udp_mut())
        .ok_or(Error::NotConnected)
}

fn udp_socket(inner: &mut Inner, id: SocketId) -> Result<&mut udp::Socket<'static>> {
    udp_entry(inner, id)?
        .socket
        .as_mut()
        .ok_or(Error::NotConnected)
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        self.stack.inner().reap(self.id);
        log::info!("udp: closed {}", listen_endpoint(self.endpoint));
    }
}
