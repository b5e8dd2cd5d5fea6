//! Round trips: 1 byte over TCP (TCP_NODELAY), a datagram over UDP, and ping(8), one at a
//! time; p50 and p99 of each.

use crate::net;
use crate::record::Recorder;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

/// Round trips not counted, to warm caches and the neighbour table.
const WARMUP: usize = 100;
/// A round trip slower than this fails the TCP test (counts as lost for UDP).
const TIMEOUT: Duration = Duration::from_secs(2);

/// `count` 1-byte round trips on `stream`, after a warm-up; the times, unsorted.
pub fn tcp_round_trips(stream: &mut TcpStream, count: usize) -> io::Result<Vec<Duration>> {
    stream.set_read_timeout(Some(TIMEOUT))?;
    let mut samples = Vec::with_capacity(count);
    let mut byte = [0u8; 1];
    for i in 0..count + WARMUP {
        let sent = [i as u8];
        let started = Instant::now();
        stream.write_all(&sent)?;
        stream.read_exact(&mut byte)?;
        let elapsed = started.elapsed();
        if byte != sent {
            return Err(io::Error::other(format!(
                "round trip {i}: sent {sent:?}, got {byte:?} back"
            )));
        }
        if i >= WARMUP {
            samples.push(elapsed);
        }
    }
    Ok(samples)
}

/// Records `TCP 1-byte RTT p50/p99` over one new connection to `target`.
pub fn tcp(target: SocketAddr, count: usize, recorder: &Recorder) -> io::Result<()> {
    let mut stream = net::connect(target, None, TIMEOUT)?;
    let mut samples = tcp_round_trips(&mut stream, count)?;
    recorder.record_latency("TCP 1-byte RTT", &mut samples)
}

/// Records `UDP N-byte RTT p50/p99` and its loss; each datagram carries its sequence number
/// so a late answer to an earlier one is not mistaken for the current one.
pub fn udp(target: SocketAddr, size: usize, count: usize, recorder: &Recorder) -> io::Result<()> {
    let local: IpAddr = if target.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let socket = UdpSocket::bind(SocketAddr::new(local, 0))?;
    socket.connect(target)?;
    socket.set_read_timeout(Some(TIMEOUT))?;
    let size = size.max(8);
    let mut datagram = vec![0xa5u8; size];
    let mut answer = vec![0u8; size + 1];
    let mut samples = Vec::with_capacity(count);
    let mut lost = 0usize;
    for seq in 0..(count + WARMUP) as u64 {
        datagram[..8].copy_from_slice(&seq.to_be_bytes());
        let started = Instant::now();
        socket.send(&datagram)?;
        let answered = loop {
            match socket.recv(&mut answer) {
                Ok(n) if n == size && answer[..n] == datagram[..] => break true,
                Ok(_) => continue, // an earlier, late answer
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break false;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
        };
        if seq < WARMUP as u64 {
            continue;
        }
        if answered {
            samples.push(started.elapsed());
        } else {
            lost += 1;
        }
    }
    if samples.is_empty() {
        return Err(io::Error::other(format!("no UDP answer from {target}")));
    }
    recorder.record_latency(&format!("UDP {size} B RTT"), &mut samples)?;
    if lost > 0 {
        eprintln!("udp rtt: {lost} of {count} datagrams got no answer within {TIMEOUT:?}");
    }
    Ok(())
}

/// Runs `ping -n -c COUNT -i INTERVAL TARGET` and records `ping RTT p50/p99` from its
/// per-reply `time=` fields.
pub fn ping(target: IpAddr, count: usize, interval: f64, recorder: &Recorder) -> io::Result<()> {
    let output = Command::new("ping")
        .args(["-n", "-q", "-c", "20", "-i", "0.01", "-W", "1"])
        .arg(target.to_string())
        .output()?;
    if !output.status.success() {
        return Err(io::Error::other(format!("warm-up ping {target} failed")));
    }
    let deadline = (count as f64 * interval).ceil() as u64 + 5;
    let output = Command::new("ping")
        .args([
            "-n",
            "-c",
            &count.to_string(),
            "-i",
            &interval.to_string(),
            "-W",
            "1",
        ])
        .args(["-w", &deadline.to_string()])
        .arg(target.to_string())
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut samples: Vec<Duration> = text.lines().filter_map(reply_time).collect();
    if samples.len() < count {
        eprintln!("ping: {} of {count} replies", samples.len());
    }
    if samples.is_empty() {
        return Err(io::Error::other(format!(
            "ping {target}: no replies ({})",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    recorder.record_latency("ping RTT", &mut samples)
}

/// The `time=0.045 ms` of one ping reply line.
fn reply_time(line: &str) -> Option<Duration> {
    let rest = &line[line.find("time=")? + 5..];
    let number = rest.split_whitespace().next()?;
    let ms: f64 = number.parse().ok()?;
    let unit = rest.split_whitespace().nth(1)?;
    (unit == "ms").then(|| Duration::from_secs_f64(ms / 1e3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ping_reply_times() {
        let line = "64 bytes from 192.168.69.2: icmp_seq=2 ttl=64 time=0.085 ms";
        assert_eq!(reply_time(line), Some(Duration::from_micros(85)));
        assert_eq!(reply_time("--- 192.168.69.2 ping statistics ---"), None);
        assert_eq!(
            reply_time("rtt min/avg/max/mdev = 0.085/0.183/0.379/0.138 ms"),
            None
        );
    }
}
