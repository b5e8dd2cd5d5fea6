//! TCP echo throughput: each connection has a writer thread sending the pattern for a fixed
//! time, then FIN, and a reader thread checking every echoed byte against the pattern until
//! the server's FIN. Throughput is the bytes echoed by all connections over the time from
//! the common start to the last connection's end. Over the same span, the CPU it cost
//! (utime + stime from /proc), per GB echoed: the server's processes alone, and those plus
//! this client and the kernel's softirq threads. Softirq work done in a task's context is
//! charged to that task (tick accounting; kernels with IRQ_TIME_ACCOUNTING would not), so
//! the second holds the packet processing of both ends, and nothing of other processes.

use crate::net;
use crate::pattern::Pattern;
use crate::procfs;
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
    /// The server's processes, whose CPU time is recorded per GB echoed (none: not).
    pub server_pids: Vec<u32>,
}

/// CPU time used so far by the server's processes, and by those, this client and the
/// softirq threads together.
struct CpuSample {
    server: Duration,
    all: Duration,
}

impl CpuSample {
    fn take(server_pids: &[u32], softirq_pids: &[u32]) -> io::Result<CpuSample> {
        let mut server = Duration::ZERO;
        for &pid in server_pids {
            server += procfs::cpu_time(pid)?;
        }
        let mut all = server + procfs::cpu_time(std::process::id())?;
        for &pid in softirq_pids {
            all += procfs::cpu_time(pid)?;
        }
        Ok(CpuSample { server, all })
    }
}

/// Runs the test and records `TCP echo throughput, N conn(s)` in MB/s (10^6 bytes/s), then
/// the CPU seconds per GB (10^9 bytes) echoed if the server's PIDs are given.
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
    let softirq_pids = procfs::softirq_threads()?;
    let cpu_before = CpuSample::take(&options.server_pids, &softirq_pids)?;
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
    let cpu_after = CpuSample::take(&options.server_pids, &softirq_pids)?;
    if let Some(err) = failure {
        return Err(err);
    }
    if echoed != written {
        return Err(io::Error::other(format!(
            "wrote {written} bytes but {echoed} came back"
        )));
    }
    let plural = if options.conns == 1 { "" } else { "s" };
    let conns = format!("{} conn{plural}", options.conns);
    let metric = format!("TCP echo throughput, {conns}");
    recorder.record(&metric, "MB/s", echoed as f64 / elapsed.as_secs_f64() / 1e6)?;
    if options.server_pids.is_empty() {
        return Ok(());
    }
    let gigabytes = echoed as f64 / 1e9;
    if gigabytes <= 0.0 {
        return Err(io::Error::other("nothing was echoed: no CPU per GB"));
    }
    let per_gb =
        |before: Duration, after: Duration| after.saturating_sub(before).as_secs_f64() / gigabytes;
    recorder.record(
        &format!("CPU per GB echoed, server, {conns}"),
        "s/GB",
        per_gb(cpu_before.server, cpu_after.server),
    )?;
    recorder.record(
        &format!("CPU per GB echoed, client + server + softirq threads, {conns}"),
        "s/GB",
        per_gb(cpu_before.all, cpu_after.all),
    )
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
