//! The echo app (RFC 862) on TCP and UDP, written only against the public socket API.
//! Each TCP client gets its own data socket; bytes go back in order, and a client that does
//! not read gets back-pressure: we read only as much as its send buffer can take.

use crate::error::{Error, Result};
use crate::flow::SocketId;
use crate::socket::tcp::{TcpListener, TcpStream};
use crate::socket::udp::UdpSocket;
use crate::stack::Stack;
use smoltcp::socket::tcp::State;
use std::collections::HashMap;
use std::net::SocketAddr;

/// Largest UDP datagram we echo (the IPv4 UDP payload limit).
const MAX_DATAGRAM: usize = 65507;

/// TCP and UDP echo servers on one port.
pub struct EchoServer {
    listener: TcpListener,
    udp: UdpSocket,
    connections: HashMap<SocketId, TcpStream>,
    /// A datagram whose echo did not fit in the send buffer yet.
    pending: Option<(Vec<u8>, SocketAddr)>,
    buf: Vec<u8>,
}

impl EchoServer {
    /// Listens on TCP and UDP `addr` with the given TCP backlog.
    pub fn bind(stack: &Stack, addr: SocketAddr, backlog: usize) -> Result<EchoServer> {
        let listener = TcpListener::bind(stack, addr, backlog)?;
        let udp = UdpSocket::bind(stack, addr)?;
        log::info!(
            "echo: listening on tcp {} and udp {}",
            listener.local_addr(),
            udp.local_addr()
        );
        Ok(EchoServer {
            listener,
            udp,
            connections: HashMap::new(),
            pending: None,
            buf: vec![0; MAX_DATAGRAM],
        })
    }

    /// Connections being served.
    pub fn connections(&self) -> usize {
        self.connections.len()
    }

    /// Serves the sockets the stack reported ready.
    pub fn on_ready(&mut self, ready: &[SocketId]) {
        for &id in ready {
            if id == self.listener.id() {
                self.accept_all();
            } else if id == self.udp.id() {
                self.echo_datagrams();
            } else {
                self.serve(id);
            }
        }
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _peer)) => {
                    let id = stream.id();
                    self.connections.insert(id, stream);
                    self.serve(id);
                }
                Err(Error::WouldBlock) => break,
                Err(err) => {
                    log::warn!("echo: accept failed: {err}");
                    break;
                }
            }
        }
    }

    /// Echoes what one connection has, as far as its send buffer allows.
    fn serve(&mut self, id: SocketId) {
        let Some(stream) = self.connections.get(&id) else {
            return;
        };
        let keep = loop {
            let space = stream.send_space().min(self.buf.len());
            if space == 0 {
                // Full send buffer: wait for ACKs. No buffer at all: the connection is over.
                break stream.take_error().is_none() && stream.state() != State::Closed;
            }
            match stream.read(&mut self.buf[..space]) {
                Ok(0) => break false, // FIN: our FIN follows the echoed bytes
                Ok(n) => {
                    if let Err(err) = write_all(stream, &self.buf[..n]) {
                        log::info!("echo: {}: {err}", stream.socket_pair());
                        break false;
                    }
                }
                Err(Error::WouldBlock) => break true,
                Err(err) => {
                    log::info!("echo: {}: {err}", stream.socket_pair());
                    break false;
                }
            }
        };
        if !keep {
            self.connections.remove(&id);
        }
    }

    fn echo_datagrams(&mut self) {
        if let Some((datagram, peer)) = self.pending.take()
            && !send_echo(&self.udp, &datagram, peer)
        {
            self.pending = Some((datagram, peer));
            return;
        }
        loop {
            match self.udp.recv_from(&mut self.buf) {
                Ok((n, peer)) => {
                    // Echoed from the receive buffer; copied only when it has to wait.
                    if !send_echo(&self.udp, &self.buf[..n], peer) {
                        self.pending = Some((self.buf[..n].to_vec(), peer));
                        return;
                    }
                }
                Err(Error::WouldBlock) => return,
                Err(err) => {
                    log::warn!("echo: udp receive failed: {err}");
                    return;
                }
            }
        }
    }
}

/// Sends one echo; false if the send buffer is full (the caller keeps it for later).
fn send_echo(udp: &UdpSocket, datagram: &[u8], peer: SocketAddr) -> bool {
    match udp.send_to(datagram, peer) {
        Ok(_) => true,
        Err(Error::WouldBlock) => false,
        Err(err) => {
            log::debug!("echo: udp echo to {peer} failed: {err}");
            true
        }
    }
}

/// Writes all of `data`; the caller checked that the send buffer has room.
fn write_all(stream: &TcpStream, mut data: &[u8]) -> Result<()> {
    while !data.is_empty() {
        let n = stream.write(data)?;
        data = &data[n..];
    }
    Ok(())
}
