//! Many concurrent connections to one port: connect N (bounded connects in flight, source
//! addresses taken in turn so no address runs out of ports), echo 1 byte on each, then
//! measure a 1-byte round trip on a probe connection against the same with none open, the
//! server's RSS and, optionally, its CPU while everything sits idle; finally check every
//! connection still echoes. With RTT steps, the connections are opened in steps and the
//! round trip is also measured at each, for the plot ([`crate::plot`]). The connections live
//! in worker processes ([`crate::scale_worker`]), as many as the open-file limit asks for.

use crate::latency::tcp_round_trips;
use crate::net;
use crate::procfs;
use crate::record::{Recorder, micros, percentile};
use crate::scale_worker::Phase;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// Options of the scale test.
pub struct Options {
    /// The echo server.
    pub target: SocketAddr,
    /// Source addresses, used in turn.
    pub sources: Vec<IpAddr>,
    /// Connections to open.
    pub conns: usize,
    /// Connects (and echoes) in flight at most.
    pub concurrency: usize,
    /// Round trips per RTT measurement.
    pub rtt_count: usize,
    /// The server process, for RSS and CPU.
    pub server_pid: Option<u32>,
    /// How long to watch the server's CPU with every connection idle (0: skip).
    pub idle_secs: f64,
    /// Each phase (connect all, echo on all) gives up after this long.
    pub phase_timeout: Duration,
    /// Numbers of open connections at which the round trip is also measured on the way to
    /// `conns` (only those between 0 and `conns` count; empty: none).
    pub rtt_steps: Vec<usize>,
}

/// Quiet time before each RTT measurement, so it sees idle connections only (after the
/// echo phase, 100k delayed ACKs are still arriving for a few tens of milliseconds).
const SETTLE: Duration = Duration::from_secs(1);

/// File descriptors a worker keeps free for itself.
const SPARE_FDS: u64 = 200;

/// A worker process and its command pipe.
struct Worker {
    /// Connections it holds when all are open.
    share: usize,
    child: Child,
    commands: ChildStdin,
    answers: BufReader<ChildStdout>,
}

/// Runs the test and records its `Scale:` metrics. With `idle_secs` set it is the idle
/// test: only failures, the server's RSS and its idle CPU are recorded.
pub fn run(options: &Options, recorder: &Recorder) -> io::Result<()> {
    let n = options.conns;
    let idle_test = options.idle_secs > 0.0;
    let mut probe = None;
    if !idle_test {
        let source = options.sources.first().copied();
        let mut stream = net::connect(options.target, source, options.phase_timeout)?;
        std::thread::sleep(SETTLE);
        let alone = tcp_round_trips(&mut stream, options.rtt_count)?;
        probe = Some((stream, alone));
    }
    let rss_before = options.server_pid.map(procfs::rss_bytes).transpose()?;

    let mut workers = spawn_workers(options)?;
    let mut connected = Phase::default();
    // Round trips by number of open connections, for the plot: none, each step, all.
    let mut series = Vec::new();
    if let Some((stream, alone)) = probe.as_mut().filter(|_| !options.rtt_steps.is_empty()) {
        series.push((0, alone.clone()));
        for step in rtt_steps(options) {
            let (phase, open) = connect_up_to(&mut workers, step)?;
            add(&mut connected, phase);
            std::thread::sleep(SETTLE);
            series.push((open, tcp_round_trips(stream, options.rtt_count)?));
        }
    }
    add(&mut connected, run_phase(&mut workers, "connect")?);
    let echoed = run_phase(&mut workers, "echo")?;
    let timings = (!idle_test).then_some(recorder);
    report_phase(timings, &format!("connect {n} conns"), &connected)?;
    report_phase(
        timings,
        &format!("echo 1 byte on each of {n} conns"),
        &echoed,
    )?;
    let failed = (connected.failures + echoed.failures) as f64;
    let metric = format!("Scale: conns that failed to connect or echo, of {n}");
    recorder.record(&metric, "conns", failed)?;

    if let Some((mut stream, mut alone)) = probe {
        std::thread::sleep(SETTLE);
        let mut crowded = tcp_round_trips(&mut stream, options.rtt_count)?;
        if !series.is_empty() {
            series.push((n, crowded.clone()));
        }
        record_rtts(recorder, n, &mut alone, &mut crowded)?;
        record_series(recorder, &mut series)?;
    }
    if let Some(pid) = options.server_pid {
        record_server(recorder, pid, n, rss_before, options.idle_secs)?;
    }
    let rechecked = run_phase(&mut workers, "echo")?;
    stop_workers(workers);
    report_phase(
        timings,
        &format!("echo again on each of {n} conns"),
        &rechecked,
    )?;
    let metric = format!("Scale: conns that failed the second echo, of {n}");
    recorder.record(&metric, "conns", rechecked.failures as f64)
}

/// The valid steps of `options.rtt_steps`: ascending, without repeats, above 0 and below
/// `conns`.
fn rtt_steps(options: &Options) -> Vec<usize> {
    let mut steps: Vec<usize> = options
        .rtt_steps
        .iter()
        .copied()
        .filter(|&step| step > 0 && step < options.conns)
        .collect();
    steps.sort_unstable();
    steps.dedup();
    steps
}

/// Adds a connect phase to the connect phases so far: their times and failures add up.
fn add(total: &mut Phase, phase: Phase) {
    total.elapsed += phase.elapsed;
    total.failures += phase.failures;
    total.first_error = total.first_error.take().or(phase.first_error);
}

/// Has the workers open connections until about `open` of all are, each worker the same
/// fraction of its share (rounded down, so a worker's part never shrinks from one step to
/// the next). Returns the phase and how many are open.
fn connect_up_to(workers: &mut [Worker], open: usize) -> io::Result<(Phase, usize)> {
    let shares: Vec<usize> = workers.iter().map(|w| w.share).collect();
    let parts = parts_of(&shares, open);
    let commands: Vec<String> = parts.iter().map(|part| format!("connect {part}")).collect();
    Ok((run_commands(workers, &commands)?, parts.iter().sum()))
}

/// Each worker's part of `open` connections: the same fraction of every share, rounded down.
fn parts_of(shares: &[usize], open: usize) -> Vec<usize> {
    let all: usize = shares.iter().sum();
    shares
        .iter()
        .map(|share| share * open / all.max(1))
        .collect()
}

/// The server's RSS now and before, and its CPU over `idle_secs` if that is not 0.
fn record_server(
    recorder: &Recorder,
    pid: u32,
    n: usize,
    rss_before: Option<u64>,
    idle_secs: f64,
) -> io::Result<()> {
    let mib = |bytes: u64| bytes as f64 / (1u64 << 20) as f64;
    let rss = mib(procfs::rss_bytes(pid)?);
    recorder.record(
        &format!("Scale: server RSS with {n} conns open"),
        "MiB",
        rss,
    )?;
    let before = mib(rss_before.unwrap_or(0));
    recorder.record("Scale: server RSS before opening them", "MiB", before)?;
    if idle_secs > 0.0 {
        let cpu = idle_cpu(pid, idle_secs)?;
        let metric = format!("Idle CPU of the server, {n} idle conns, {idle_secs} s");
        recorder.record(&metric, "%", cpu)?;
    }
    Ok(())
}

/// Reports a phase's first error; records its time if there is a recorder.
fn report_phase(recorder: Option<&Recorder>, what: &str, phase: &Phase) -> io::Result<()> {
    let secs = phase.elapsed.as_secs_f64();
    if let Some(error) = &phase.first_error {
        eprintln!(
            "scale: {what}: {} failed, the first: {error}",
            phase.failures
        );
    }
    match recorder {
        Some(recorder) => recorder.record(&format!("Scale: time to {what}"), "s", secs),
        None => {
            eprintln!("scale: {what}: {secs:.3} s");
            Ok(())
        }
    }
}

fn record_rtts(
    recorder: &Recorder,
    n: usize,
    alone: &mut [Duration],
    crowded: &mut [Duration],
) -> io::Result<()> {
    alone.sort_unstable();
    crowded.sort_unstable();
    let p50 = |v: &[Duration]| percentile(v, 0.5).map_or(f64::NAN, micros);
    let p99 = |v: &[Duration]| percentile(v, 0.99).map_or(f64::NAN, micros);
    recorder.record("Scale: TCP 1-byte RTT p50, no other conn", "µs", p50(alone))?;
    recorder.record(
        &format!("Scale: TCP 1-byte RTT p50, {n} idle conns"),
        "µs",
        p50(crowded),
    )?;
    recorder.record(
        &format!("Scale: TCP 1-byte RTT p99, {n} idle conns"),
        "µs",
        p99(crowded),
    )?;
    let ratio = p50(crowded) / p50(alone);
    recorder.record(
        &format!("Scale: RTT p50 with {n} idle conns / with none"),
        "×",
        ratio,
    )
}

/// Records the round trip's p50 and p99 at each number of open connections measured, as
/// `Scale: TCP 1-byte RTT p50 at K open conns` (the plot reads these).
fn record_series(recorder: &Recorder, series: &mut [(usize, Vec<Duration>)]) -> io::Result<()> {
    for (open, samples) in series {
        samples.sort_unstable();
        for (name, p) in [("p50", 0.5), ("p99", 0.99)] {
            let value = percentile(samples, p).map_or(f64::NAN, micros);
            let metric = format!("Scale: TCP 1-byte RTT {name} at {open} open conns");
            recorder.record(&metric, "µs", value)?;
        }
    }
    Ok(())
}

/// The server's CPU use over `secs` of idleness, in percent of one CPU.
fn idle_cpu(pid: u32, secs: f64) -> io::Result<f64> {
    let before = procfs::cpu_time(pid)?;
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let used = procfs::cpu_time(pid)?.saturating_sub(before);
    Ok(100.0 * used.as_secs_f64() / started.elapsed().as_secs_f64())
}

/// Starts enough `scale-worker` processes of this binary to hold `options.conns`.
fn spawn_workers(options: &Options) -> io::Result<Vec<Worker>> {
    let limit = net::raise_fd_limit()?;
    let per_worker = limit.saturating_sub(SPARE_FDS).max(1) as usize;
    let count = options.conns.div_ceil(per_worker).max(1);
    let concurrency = (options.concurrency / count).max(1);
    let sources: Vec<String> = options.sources.iter().map(IpAddr::to_string).collect();
    let exe = std::env::current_exe()?;
    let mut workers = Vec::with_capacity(count);
    for i in 0..count {
        let first = i * options.conns / count;
        let conns = (i + 1) * options.conns / count - first;
        let mut command = Command::new(&exe);
        command
            .arg("scale-worker")
            .args(["--target", &options.target.to_string()])
            .args(["--first", &first.to_string(), "--conns", &conns.to_string()])
            .args(["--concurrency", &concurrency.to_string()])
            .args([
                "--phase-timeout",
                &options.phase_timeout.as_secs_f64().to_string(),
            ]);
        if !sources.is_empty() {
            command.args(["--sources", &sources.join(",")]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let (Some(commands), Some(answers)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(io::Error::other("worker without pipes"));
        };
        workers.push(Worker {
            share: conns,
            child,
            commands,
            answers: BufReader::new(answers),
        });
    }
    eprintln!("scale: {count} worker process(es), up to {per_worker} connections each");
    Ok(workers)
}

/// Runs one phase in every worker at once; its time is the slowest worker's.
fn run_phase(workers: &mut [Worker], command: &str) -> io::Result<Phase> {
    let commands = vec![command.to_string(); workers.len()];
    run_commands(workers, &commands)
}

/// Runs one phase in every worker at once, each worker its own command of `commands`; its
/// time is the slowest worker's.
fn run_commands(workers: &mut [Worker], commands: &[String]) -> io::Result<Phase> {
    let started = Instant::now();
    for (worker, command) in workers.iter_mut().zip(commands) {
        writeln!(worker.commands, "{command}")?;
        worker.commands.flush()?;
    }
    let mut total = Phase::default();
    for (worker, command) in workers.iter_mut().zip(commands) {
        let mut line = String::new();
        worker.answers.read_line(&mut line)?;
        let phase = Phase::from_line(&line)
            .ok_or_else(|| io::Error::other(format!("a worker answered {line:?} to {command}")))?;
        total.failures += phase.failures;
        total.first_error = total.first_error.or(phase.first_error);
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

/// Closes the workers' command pipes (they exit, closing their connections) and reaps them.
fn stop_workers(workers: Vec<Worker>) {
    for worker in workers {
        let Worker {
            mut child,
            commands,
            ..
        } = worker;
        drop(commands);
        let _ = child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_grow_follow_the_shares_and_add_up_nearly() {
        let shares = [333, 333, 334];
        let mut before = vec![0; shares.len()];
        for open in 0..=1000 {
            let parts = parts_of(&shares, open);
            let sum: usize = parts.iter().sum();
            assert!(
                sum <= open && sum + shares.len() > open,
                "{open}: {parts:?}"
            );
            for (i, (&part, &share)) in parts.iter().zip(&shares).enumerate() {
                assert!(part <= share && part >= before[i], "{open}: {parts:?}");
            }
            before = parts;
        }
        assert_eq!(parts_of(&[10, 0, 30], 20), [5, 0, 15]);
        assert_eq!(parts_of(&[], 5), Vec::<usize>::new());
    }

    #[test]
    fn steps_between_none_and_all() {
        let options = Options {
            target: SocketAddr::from(([127, 0, 0, 1], 7)),
            sources: Vec::new(),
            conns: 1000,
            concurrency: 64,
            rtt_count: 10,
            server_pid: None,
            idle_secs: 0.0,
            phase_timeout: Duration::from_secs(1),
            rtt_steps: vec![333, 0, 10, 1000, 33, 10, 5000, 100],
        };
        assert_eq!(rtt_steps(&options), [10, 33, 100, 333]);
    }
}
