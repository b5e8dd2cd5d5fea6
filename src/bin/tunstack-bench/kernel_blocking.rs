//! The kernel echo server's other shape: a thread per connection doing blocking reads and
//! writes, with an accepting thread per address. The scheduler spreads the connections'
//! threads over every CPU the process may use, evenly whatever the connections' hashes.
//! Not for the scale test: a thread per connection does not hold 100,000 connections.

use crate::net;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Read size of one echo step.
const CHUNK: usize = 64 * 1024;
/// Stack of a connection's thread (its buffer is on the heap).
const STACK: usize = 128 * 1024;

/// Accepts on every address in `listen`, a thread per connection; returns the first
/// accepting thread's error.
pub fn serve(listen: &[SocketAddr], backlog: i32) -> io::Result<()> {
    let mut listeners = Vec::new();
    for &addr in listen {
        listeners.push((addr, net::listen(addr, backlog)?));
    }
    let (failed, failure) = mpsc::channel();
    for (addr, listener) in listeners {
        let failed = failed.clone();
        thread::Builder::new()
            .name(format!("tcp-accept {addr}"))
            .spawn(move || {
                let Err(err) = accept_forever(&listener);
                let _ = failed.send(io::Error::new(
                    err.kind(),
                    format!("accept on {addr}: {err}"),
                ));
            })?;
    }
    drop(failed);
    Err(failure
        .recv()
        .unwrap_or_else(|_| io::Error::other("every accepting thread ended")))
}

/// Accepts and starts a thread per connection; returns only on an error that is not a
/// passing shortage (EMFILE, ENOMEM: reported, and accepting goes on after a pause).
fn accept_forever(listener: &TcpListener) -> io::Result<std::convert::Infallible> {
    loop {
        let stream = match listener.accept() {
            Ok((stream, _peer)) => stream,
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            Err(err) if is_shortage(&err) => {
                eprintln!("kernel-echo: accept: {err}");
                thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(err) => return Err(err),
        };
        let spawned = thread::Builder::new()
            .name("tcp-echo".to_string())
            .stack_size(STACK)
            .spawn(move || {
                if let Err(err) = echo(stream) {
                    eprintln!("kernel-echo: connection: {err}");
                }
            });
        if let Err(err) = spawned {
            // The connection is dropped (reset); the client reports it.
            eprintln!("kernel-echo: cannot start a connection's thread: {err}");
        }
    }
}

fn is_shortage(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Writes back what it reads until the peer's FIN, then sends ours.
fn echo(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return stream.shutdown(Shutdown::Write),
            Ok(n) => stream.write_all(&buf[..n])?,
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        }
    }
}
