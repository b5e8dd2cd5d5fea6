//! Sequential connection rate: connect, echo 1 byte, send FIN, wait for the server's FIN,
//! close; again and again for a fixed time. Each cycle is one whole connection lifetime.
//! Source addresses are taken in turn: every closed connection leaves the client a
//! TIME_WAIT port for 60 s, and one address has only so many ports.

use crate::net;
use crate::record::Recorder;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::time::{Duration, Instant};

/// A connect, echo or close slower than this fails the test.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Runs connection cycles for `secs` from `sources` in turn (the default address if
/// empty); records `TCP connection rate` in conn/s.
pub fn run(
    target: SocketAddr,
    sources: &[IpAddr],
    secs: f64,
    recorder: &Recorder,
) -> io::Result<()> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let mut done = 0u64;
    while Instant::now() < deadline {
        let source = sources.get(done as usize % sources.len().max(1)).copied();
        cycle(target, source, done as u8)
            .map_err(|err| io::Error::new(err.kind(), format!("connection {}: {err}", done + 1)))?;
        done += 1;
    }
    let rate = done as f64 / started.elapsed().as_secs_f64();
    recorder.record(
        "TCP connection rate (connect, 1-byte echo, close)",
        "conn/s",
        rate,
    )
}

fn cycle(target: SocketAddr, source: Option<IpAddr>, value: u8) -> io::Result<()> {
    let mut stream = net::connect(target, source, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.write_all(&[value])?;
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte)?;
    if byte[0] != value {
        return Err(io::Error::other(format!(
            "sent {value}, got {} back",
            byte[0]
        )));
    }
    stream.shutdown(Shutdown::Write)?;
    match stream.read(&mut byte)? {
        0 => Ok(()),
        _ => Err(io::Error::other("bytes after the echo")),
    }
}
