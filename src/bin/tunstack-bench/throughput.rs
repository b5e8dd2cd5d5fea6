//! TCP echo throughput: each connection has a writer thread sending the pattern for a fixed
//! time, then FIN, and a reader thread checking every echoed byte against the pattern until
//! the server's FIN. Throughput is the bytes echoed by all connections over the time from
//! the common start to the last connection's end.

use crate::net;
use crate::pattern::Pattern;
use crate::record::Recorder;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// Size of each write and read.
const CHUNK: usize = 64 * 1024;
/// A connection silent for this long fails the test.
const STALL: Duration = Duration::from_secs(10);

/// Options of the throughput test.
pub struct Options {
    /// The echo server.
    pub target: SocketAddr,
    /// Connections in parallel.
    pub conns: usize,
    /// How long each writer sends.
    pub secs: f64,
}

/// Runs the test and records `TCP echo throughput, N conn(s)` in MB/s (10^6 bytes/s).
pub fn run(options: &Options, recorder: &Recorder) -> io::Result<()> {
    let pattern = Arc::new(Pattern::new());
    let mut streams = Vec::new();
    for _ in 0..options.conns {
        streams.push(net::connect(options.target, None, STALL)?);
    }
    let barrier = Arc::new(Barrier::new(2 * options.conns + 1));
    let send_for = Duration::from_secs_f64(options.secs);
    let mut threads = Vec::new();
    for (index, stream) in streams.into_iter().enumerate() {
        stream.set_read_timeout(Some(STALL))?;
        stream.set_write_timeout(Some(STALL))?;
        let start = Pattern::start_of(index);
        let writer = stream.try_clone()?;
        let (p, b) = (pattern.clone(), barrier.clone());
        threads.push(thread::spawn(move || {
            write_pattern(writer, &p, start, send_for, &b)
        }));
        let (p, b) = (pattern.clone(), barrier.clone());
        threads.push(thread::spawn(move || {
            read_and_verify(stream, &p, start, &b)
        }));
    }
    barrier.wait();
    let started = Instant::now();
    let mut written = 0u64;
    let mut echoed = 0u64;
    let mut failure = None;
    for (i, thread) in threads.into_iter().enumerate() {
        let result = thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("a test thread panicked")));
        match result {
            Ok(n) if i % 2 == 0 => written += n,
            Ok(n) => echoed += n,
            Err(err) => failure = failure.or(Some(err)),
        }
    }
    let elapsed = started.elapsed();
    if let Some(err) = failure {
        return Err(err);
    }
    if echoed != written {
        return Err(io::Error::other(format!(
            "wrote {written} bytes but {echoed} came back"
        )));
    }
    let plural = if options.conns == 1 { "" } else { "s" };
    let metric = format!("TCP echo throughput, {} conn{plural}", options.conns);
    recorder.record(&metric, "MB/s", echoed as f64 / elapsed.as_secs_f64() / 1e6)
}

/// Sends the pattern for `send_for`, then FIN; returns the bytes sent.
fn write_pattern(
    mut stream: TcpStream,
    pattern: &Pattern,
    start: u64,
    send_for: Duration,
    barrier: &Barrier,
) -> io::Result<u64> {
    barrier.wait();
    let deadline = Instant::now() + send_for;
    let mut sent = 0u64;
    while Instant::now() < deadline {
        let n = stream.write(pattern.window(start + sent, CHUNK))?;
        sent += n as u64;
    }
    stream.shutdown(Shutdown::Write)?;
    Ok(sent)
}

/// Reads the echo until FIN, comparing it with the pattern; returns the bytes read.
fn read_and_verify(
    mut stream: TcpStream,
    pattern: &Pattern,
    start: u64,
    barrier: &Barrier,
) -> io::Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut received = 0u64;
    barrier.wait();
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(received),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                return Err(io::Error::new(
                    err.kind(),
                    format!("reading the echo after {received} bytes: {err}"),
                ));
            }
        };
        if buf[..n] != *pattern.window(start + received, n) {
            let wrong = buf[..n]
                .iter()
                .zip(pattern.window(start + received, n))
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            return Err(io::Error::other(format!(
                "echo differs from what was sent at byte {}",
                received + wrong as u64
            )));
        }
        received += n as u64;
    }
}
