//! The reference server: TCP and UDP echo on the kernel's stack. TCP runs on one thread
//! with epoll (like tunstack's single-threaded loop), so thousands of connections cost
//! nothing; each UDP socket gets a thread doing blocking recv_from/send_to.

use crate::net::{self, Epoll, READABLE, WRITABLE};
use slab::Slab;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::Duration;

/// Tokens below this are listeners; connection `k` of the slab has token `k + LISTENERS`.
const LISTENERS: u64 = 1 << 20;
/// Read size of one echo step.
const CHUNK: usize = 64 * 1024;

/// One TCP connection: bytes read but not yet written back, and whether the peer sent FIN.
struct Connection {
    stream: TcpStream,
    pending: Vec<u8>,
    peer_done: bool,
}

/// Serves TCP (and UDP unless `tcp_only`) echo on every address in `listen` until killed.
/// Several processes may serve TCP on the same port, to hold more connections than one
/// process may have file descriptors.
pub fn run(listen: &[SocketAddr], backlog: i32, tcp_only: bool) -> io::Result<()> {
    net::raise_fd_limit()?;
    let mut listeners = Vec::new();
    for &addr in listen {
        if !tcp_only {
            let udp = UdpSocket::bind(addr)?;
            thread::Builder::new()
                .name(format!("udp-echo {addr}"))
                .spawn(move || udp_echo(udp))?;
        }
        let listener = net::listen(addr, backlog)?;
        listener.set_nonblocking(true)?;
        listeners.push(listener);
        let what = if tcp_only { "tcp" } else { "tcp and udp" };
        eprintln!("kernel-echo: listening on {what} {addr}");
    }
    tcp_echo(&listeners)
}

fn udp_echo(socket: UdpSocket) {
    let mut buf = vec![0u8; 65536];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, peer)) => {
                if let Err(err) = socket.send_to(&buf[..n], peer) {
                    eprintln!("kernel-echo: udp send to {peer}: {err}");
                }
            }
            Err(err) => {
                eprintln!("kernel-echo: udp receive: {err}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn tcp_echo(listeners: &[TcpListener]) -> io::Result<()> {
    let mut epoll = Epoll::new(1024)?;
    for (token, listener) in listeners.iter().enumerate() {
        epoll.add(listener.as_raw_fd(), READABLE, token as u64)?;
    }
    let mut connections: Slab<Connection> = Slab::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        for (token, events) in epoll.wait(Duration::from_secs(1))? {
            if token < LISTENERS {
                accept_all(&listeners[token as usize], &epoll, &mut connections)?;
                continue;
            }
            let key = (token - LISTENERS) as usize;
            let Some(connection) = connections.get_mut(key) else {
                continue;
            };
            if serve(connection, events, &mut buf).is_err() || is_finished(connection) {
                let connection = connections.remove(key);
                let _ = epoll.delete(connection.stream.as_raw_fd());
                continue;
            }
            let interest = if connection.pending.is_empty() {
                READABLE
            } else {
                WRITABLE
            };
            epoll.modify(connection.stream.as_raw_fd(), interest, token)?;
        }
    }
}

fn accept_all(
    listener: &TcpListener,
    epoll: &Epoll,
    connections: &mut Slab<Connection>,
) -> io::Result<()> {
    loop {
        match listener.accept() {
            Ok((stream, _peer)) => {
                stream.set_nonblocking(true)?;
                stream.set_nodelay(true)?;
                let fd = stream.as_raw_fd();
                let key = connections.insert(Connection {
                    stream,
                    pending: Vec::new(),
                    peer_done: false,
                });
                epoll.add(fd, READABLE, key as u64 + LISTENERS)?;
            }
            Err(err) if err.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(err) => {
                // EMFILE and friends: report, keep serving the connections we have.
                eprintln!("kernel-echo: accept: {err}");
                return Ok(());
            }
        }
    }
}

/// Reads what is there and writes it back; what the socket does not take waits in
/// `pending`, and reading stops until it is gone (back-pressure).
fn serve(connection: &mut Connection, events: u32, buf: &mut [u8]) -> io::Result<()> {
    if events & WRITABLE != 0 || !connection.pending.is_empty() {
        flush(connection)?;
        if !connection.pending.is_empty() {
            return Ok(());
        }
    }
    loop {
        match connection.stream.read(buf) {
            Ok(0) => {
                connection.peer_done = true;
                return Ok(());
            }
            Ok(n) => {
                connection.pending.extend_from_slice(&buf[..n]);
                flush(connection)?;
                if !connection.pending.is_empty() {
                    return Ok(());
                }
            }
            Err(err) if err.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        }
    }
}

fn flush(connection: &mut Connection) -> io::Result<()> {
    while !connection.pending.is_empty() {
        match connection.stream.write(&connection.pending) {
            Ok(n) => {
                connection.pending.drain(..n);
            }
            Err(err) if err.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// After the peer's FIN and the last echoed byte: send our FIN; the caller closes.
fn is_finished(connection: &Connection) -> bool {
    if connection.peer_done && connection.pending.is_empty() {
        let _ = connection.stream.shutdown(Shutdown::Write);
        return true;
    }
    false
}
