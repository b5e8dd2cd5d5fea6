//! The reference server: TCP and UDP echo on the kernel's stack, in one of two shapes.
//! Epoll: `threads` threads, each with its own epoll and its own listener on every address,
//! all bound with SO_REUSEPORT, so the kernel spreads connections over the threads and
//! thousands of connections cost nothing (one thread is the shape of tunstack's loop).
//! Thread per connection: a blocking read/write loop per connection (see
//! [`crate::kernel_blocking`]). Each UDP socket gets a thread doing blocking
//! recv_from/send_to.

use crate::kernel_blocking;
use crate::net::{self, Epoll, READABLE, WRITABLE};
use slab::Slab;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Tokens below this are listeners; connection `k` of the slab has token `k + LISTENERS`.
const LISTENERS: u64 = 1 << 20;
/// Read size of one echo step.
const CHUNK: usize = 64 * 1024;

/// How the TCP side is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// This many threads, each with its own epoll and SO_REUSEPORT listeners.
    Epoll { threads: usize },
    /// A thread per connection, blocking reads and writes.
    ThreadPerConnection,
}

/// What `kernel-echo` serves, and how (its command line).
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Address to serve TCP and UDP echo on; repeatable.
    #[arg(long, required = true)]
    pub listen: Vec<SocketAddr>,
    /// TCP listen backlog.
    #[arg(long, default_value_t = 1024)]
    pub backlog: i32,
    /// Serve TCP only (a further process sharing the TCP port with SO_REUSEPORT).
    #[arg(long)]
    pub tcp_only: bool,
    /// Epoll threads, each with its own SO_REUSEPORT listener (1: the shape of tunstack's
    /// single loop) [default: the CPUs this process may run on].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// A thread per connection with blocking reads and writes, instead of epoll.
    #[arg(long, conflicts_with = "threads")]
    pub thread_per_connection: bool,
}

impl Options {
    /// How TCP is served: a thread per connection, or `--threads` epoll threads, by
    /// default one per CPU this process may run on (sched_getaffinity, as `taskset` set it).
    pub fn shape(&self) -> Shape {
        if self.thread_per_connection {
            return Shape::ThreadPerConnection;
        }
        let threads = self.threads.map_or_else(
            || thread::available_parallelism().map_or(1, |n| n.get()),
            usize::from,
        );
        Shape::Epoll { threads }
    }
}

/// One TCP connection: bytes read but not yet written back, and whether the peer sent FIN.
struct Connection {
    stream: TcpStream,
    pending: Vec<u8>,
    peer_done: bool,
}

/// Serves TCP (and UDP unless `tcp_only`) echo on every address in `listen` until killed
/// or until a serving thread fails (its error is returned). Several processes may serve
/// TCP on the same port, to hold more connections than one process may have descriptors.
pub fn run(options: &Options) -> io::Result<()> {
    net::raise_fd_limit()?;
    for &addr in &options.listen {
        if !options.tcp_only {
            let udp = UdpSocket::bind(addr)?;
            thread::Builder::new()
                .name(format!("udp-echo {addr}"))
                .spawn(move || udp_echo(udp))?;
        }
    }
    let what = if options.tcp_only {
        "tcp"
    } else {
        "tcp and udp"
    };
    let addrs: Vec<String> = options.listen.iter().map(|a| a.to_string()).collect();
    match options.shape() {
        Shape::Epoll { threads } => {
            let threads = threads.max(1);
            eprintln!(
                "kernel-echo: {what} on {}; {threads} epoll thread(s), SO_REUSEPORT",
                addrs.join(", ")
            );
            serve_epoll(&options.listen, options.backlog, threads)
        }
        Shape::ThreadPerConnection => {
            eprintln!(
                "kernel-echo: {what} on {}; a thread per connection",
                addrs.join(", ")
            );
            kernel_blocking::serve(&options.listen, options.backlog)
        }
    }
}

/// Binds every thread's listeners first (so a failure is reported before anything is
/// served), then runs `threads` epoll loops; returns the first loop's error.
fn serve_epoll(listen: &[SocketAddr], backlog: i32, threads: usize) -> io::Result<()> {
    let mut sets = Vec::new();
    for _ in 0..threads {
        let mut listeners = Vec::new();
        for &addr in listen {
            let listener = net::listen(addr, backlog)?;
            listener.set_nonblocking(true)?;
            listeners.push(listener);
        }
        sets.push(listeners);
    }
    let (failed, failure) = mpsc::channel();
    for (index, listeners) in sets.into_iter().enumerate() {
        let failed = failed.clone();
        thread::Builder::new()
            .name(format!("tcp-echo {index}"))
            .spawn(move || {
                let Err(err) = tcp_echo(&listeners);
                let _ = failed.send(io::Error::new(
                    err.kind(),
                    format!("epoll thread {index}: {err}"),
                ));
            })?;
    }
    drop(failed);
    Err(failure
        .recv()
        .unwrap_or_else(|_| io::Error::other("every epoll thread ended")))
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

/// One epoll loop over `listeners` and the connections it accepts; returns only on error.
fn tcp_echo(listeners: &[TcpListener]) -> io::Result<std::convert::Infallible> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        options: Options,
    }

    fn shape_of(args: &[&str]) -> Result<Shape, clap::error::ErrorKind> {
        let mut argv = vec!["kernel-echo", "--listen", "0.0.0.0:7"];
        argv.extend_from_slice(args);
        Command::try_parse_from(argv)
            .map(|command| command.options.shape())
            .map_err(|err| err.kind())
    }

    #[test]
    fn shapes_from_the_command_line() {
        assert_eq!(
            shape_of(&["--threads", "1"]),
            Ok(Shape::Epoll { threads: 1 })
        );
        assert_eq!(
            shape_of(&["--thread-per-connection"]),
            Ok(Shape::ThreadPerConnection)
        );
        let cpus = thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(shape_of(&[]), Ok(Shape::Epoll { threads: cpus }));
        assert!(shape_of(&["--threads", "0"]).is_err());
        assert_eq!(
            shape_of(&["--threads", "2", "--thread-per-connection"]),
            Err(clap::error::ErrorKind::ArgumentConflict)
        );
    }
}
