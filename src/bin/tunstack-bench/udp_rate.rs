//! UDP echo rate: keep up to `window` numbered datagrams in flight for a fixed time and
//! count the echoes. A window that stays silent for a while is written off as lost and
//! reopened, so loss slows the test down instead of stopping it. Loss is counted after a
//! short drain for late answers.

use crate::net;
use crate::record::Recorder;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// No answer for this long: the datagrams in flight are taken as lost.
const SILENCE: Duration = Duration::from_millis(20);
/// How long late answers are still counted after sending stops.
const DRAIN: Duration = Duration::from_millis(300);

/// Options of the UDP rate test.
pub struct Options {
    /// The echo server.
    pub target: SocketAddr,
    /// Datagram payload size (at least 8: the sequence number).
    pub size: usize,
    /// Datagrams in flight at most.
    pub window: usize,
    /// How long to send.
    pub secs: f64,
}

/// What came back.
#[derive(Default)]
struct Tally {
    sent: u64,
    /// Distinct echoes received while sending.
    received: u64,
    /// Distinct echoes received in all, drain included.
    received_total: u64,
    seen: Vec<bool>,
}

impl Tally {
    /// Counts the echo of `seq` once; true if it was new.
    fn answer(&mut self, seq: u64) -> bool {
        match self.seen.get_mut(seq as usize) {
            Some(seen) if !*seen => {
                *seen = true;
                self.received_total += 1;
                true
            }
            _ => false,
        }
    }
}

/// Runs the test; records `UDP echo N B` in packets/s and `UDP echo N B loss` in %.
pub fn run(options: &Options, recorder: &Recorder) -> io::Result<()> {
    let local: IpAddr = if options.target.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let socket = UdpSocket::bind(SocketAddr::new(local, 0))?;
    socket.connect(options.target)?;
    socket.set_nonblocking(true)?;
    let size = options.size.max(8);
    let mut tally = Tally::default();
    let started = Instant::now();
    let send_for = Duration::from_secs_f64(options.secs);
    pump(
        &socket,
        size,
        options.window.max(1),
        started + send_for,
        &mut tally,
    )?;
    let elapsed = started.elapsed();
    tally.received = tally.received_total;
    drain(&socket, size, &mut tally)?;
    let rate = tally.received as f64 / elapsed.as_secs_f64();
    let loss = 100.0 * (tally.sent - tally.received_total) as f64 / tally.sent.max(1) as f64;
    recorder.record(&format!("UDP echo {size} B"), "pkt/s", rate)?;
    recorder.record(&format!("UDP echo {size} B loss"), "%", loss)
}

/// Sends and receives until `deadline`.
fn pump(
    socket: &UdpSocket,
    size: usize,
    window: usize,
    deadline: Instant,
    tally: &mut Tally,
) -> io::Result<()> {
    let mut datagram = vec![0x5au8; size];
    let mut in_flight = 0usize;
    let mut last_answer = Instant::now();
    let mut buf = vec![0u8; size + 1];
    while Instant::now() < deadline {
        while in_flight < window {
            datagram[..8].copy_from_slice(&tally.sent.to_be_bytes());
            match socket.send(&datagram) {
                Ok(_) => {
                    tally.sent += 1;
                    tally.seen.push(false);
                    in_flight += 1;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) => return Err(err),
            }
        }
        net::wait_for(socket.as_raw_fd(), libc::POLLIN, Duration::from_millis(5))?;
        let answers = receive_all(socket, size, &mut buf, tally)?;
        if answers > 0 {
            in_flight = in_flight.saturating_sub(answers);
            last_answer = Instant::now();
        } else if last_answer.elapsed() >= SILENCE {
            in_flight = 0;
            last_answer = Instant::now();
        }
    }
    Ok(())
}

/// Counts late answers for [`DRAIN`].
fn drain(socket: &UdpSocket, size: usize, tally: &mut Tally) -> io::Result<()> {
    let mut buf = vec![0u8; size + 1];
    let until = Instant::now() + DRAIN;
    while tally.received_total < tally.sent && Instant::now() < until {
        net::wait_for(socket.as_raw_fd(), libc::POLLIN, Duration::from_millis(10))?;
        receive_all(socket, size, &mut buf, tally)?;
    }
    Ok(())
}

/// Reads every datagram waiting; returns how many new echoes there were.
fn receive_all(
    socket: &UdpSocket,
    size: usize,
    buf: &mut [u8],
    tally: &mut Tally,
) -> io::Result<usize> {
    let mut answers = 0;
    loop {
        match socket.recv(buf) {
            Ok(n) if n == size => {
                let mut seq = [0u8; 8];
                seq.copy_from_slice(&buf[..8]);
                if tally.answer(u64::from_be_bytes(seq)) {
                    answers += 1;
                }
            }
            Ok(_) => {} // not ours
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(answers),
            // ECONNREFUSED from an ICMP port unreachable: nothing to count, keep going.
            Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => return Ok(answers),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        }
    }
}
