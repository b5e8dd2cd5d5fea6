//! `tunstack-bench`: the benchmark client of scripts/bench.sh, plus the kernel echo servers
//! it is compared against (on every CPU, and on one thread). The same client code measures both servers; each measurement
//! is printed and appended to a results file, from which `report` builds the table and
//! `plot` the chart of round trip against open connections.

mod conn_rate;
mod kernel_blocking;
mod kernel_echo;
mod latency;
mod net;
mod pattern;
mod plot;
mod procfs;
mod record;
mod report;
mod scale;
mod scale_worker;
mod throughput;
mod tun_loop;
mod udp_rate;

use clap::{Args, Parser, Subcommand};
use record::Recorder;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Benchmark client for tunstack (and the kernel echo server it is compared with).
///
/// Run through scripts/bench.sh, which sets up the namespaces and servers.
#[derive(Debug, Parser)]
#[command(name = "tunstack-bench", version, about, long_about)]
struct Cli {
    #[command(flatten)]
    recording: Recording,
    #[command(subcommand)]
    command: Command,
}

/// Where measurements go.
#[derive(Debug, Args)]
struct Recording {
    /// Append each measurement as `side<TAB>metric<TAB>unit<TAB>value` to this file (for
    /// `plot`: the file to read).
    #[arg(long, global = true, value_name = "FILE")]
    results: Option<PathBuf>,
    /// Name of the server being measured: tunstack, kernel (the kernel echo server on every
    /// CPU), kernel-1 (on one epoll thread), or a floor (bare, bare-spin, tunstack-spin).
    #[arg(long, global = true, default_value = "tunstack")]
    side: String,
    /// Suffix for every metric name, e.g. "MTU 1500".
    #[arg(long, global = true)]
    tag: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// TCP and UDP echo on the kernel's stack, until killed. TCP runs on --threads epoll
    /// threads sharing the port with SO_REUSEPORT, or a thread per connection.
    KernelEcho(kernel_echo::Options),
    /// Wait until a TCP echo server answers (1 byte echoed), or fail after --timeout.
    Wait {
        #[arg(long)]
        target: SocketAddr,
        /// Seconds.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
    /// TCP echo throughput over --conns connections, every byte checked.
    Throughput {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 1)]
        conns: usize,
        /// Seconds each connection sends.
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
        /// PID of the server, for its CPU time per GB echoed (repeatable: several
        /// processes add up).
        #[arg(long)]
        server_pid: Vec<u32>,
    },
    /// TCP 1-byte round trips (TCP_NODELAY), p50/p99.
    TcpRtt {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 10_000)]
        count: usize,
    },
    /// UDP round trips of --size bytes, p50/p99.
    UdpRtt {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 10_000)]
        count: usize,
    },
    /// The floor: a bare loop that turns ICMP echo requests and UDP datagrams around on a
    /// TUN device, until killed.
    TunLoop {
        /// TUN device to serve (made by scripts/setup.sh).
        #[arg(long, default_value = "tun0")]
        tun: String,
        /// Poll the TUN without ever sleeping (takes a whole CPU).
        #[arg(long)]
        spin: bool,
    },
    /// ping(8) round trips, p50/p99.
    Ping {
        #[arg(long)]
        target: IpAddr,
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Seconds between echo requests (ping -i; below 0.2 needs root).
        #[arg(long, default_value_t = 0.002)]
        interval: f64,
    },
    /// UDP echo packets/s and loss with up to --window datagrams in flight.
    UdpRate {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 64)]
        window: usize,
        #[arg(long, default_value_t = 2.0)]
        secs: f64,
    },
    /// Sequential connections per second: connect, 1-byte echo, close.
    ConnRate {
        #[arg(long)]
        target: SocketAddr,
        /// Source addresses used in turn, as for scale.
        #[arg(long, value_parser = parse_sources)]
        sources: Option<Sources>,
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
    },
    /// Many concurrent connections to one port; RTT, server RSS and idle CPU meanwhile.
    Scale(ScaleArgs),
    /// One worker process of `scale` (started by it): phases on stdin, answers on stdout.
    #[command(hide = true)]
    ScaleWorker {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, value_parser = parse_sources)]
        sources: Option<Sources>,
        /// Index of this worker's first connection.
        #[arg(long, default_value_t = 0)]
        first: usize,
        #[arg(long)]
        conns: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 300.0)]
        phase_timeout: f64,
    },
    /// Print the Markdown table of medians for a results file.
    Report {
        /// The results file (as written with --results).
        file: PathBuf,
    },
    /// Draw the scale test's round trips against open connections (medians over runs) from
    /// the results file given with --results, as SVG.
    Plot {
        /// The SVG file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
struct ScaleArgs {
    #[arg(long)]
    target: SocketAddr,
    /// Source addresses: a list (a,b,c) or an IPv4 range (192.168.69.10-192.168.69.30).
    #[arg(long, value_parser = parse_sources)]
    sources: Option<Sources>,
    #[arg(long, default_value_t = 1000)]
    conns: usize,
    /// Connects (and echoes) in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Round trips per RTT measurement.
    #[arg(long, default_value_t = 2000)]
    rtt_count: usize,
    /// PID of the server, for its RSS and CPU time.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Seconds to watch the server's CPU while every connection is idle (0: skip).
    #[arg(long, default_value_t = 0.0)]
    idle_secs: f64,
    /// Seconds each phase (connect all, echo on all) may take.
    #[arg(long, default_value_t = 300.0)]
    phase_timeout: f64,
    /// Also measure the RTT on the way, with this many connections open (comma-separated,
    /// e.g. 1000,3333,10000); recorded with those at 0 and --conns, for `plot`.
    #[arg(long, value_delimiter = ',', value_name = "N,...")]
    rtt_steps: Vec<usize>,
}

/// Parsed `--sources`.
#[derive(Debug, Clone)]
struct Sources(Vec<IpAddr>);

fn parse_sources(text: &str) -> Result<Sources, String> {
    if let Some((first, last)) = text.split_once('-') {
        let parse = |s: &str| s.parse::<Ipv4Addr>().map_err(|e| format!("{s:?}: {e}"));
        let (first, last) = (u32::from(parse(first)?), u32::from(parse(last)?));
        if last < first || last - first > 4096 {
            return Err(format!("{text:?} is not a range of at most 4096 addresses"));
        }
        return Ok(Sources(
            (first..=last).map(|a| Ipv4Addr::from(a).into()).collect(),
        ));
    }
    text.split(',')
        .map(|s| {
            s.trim()
                .parse::<IpAddr>()
                .map_err(|e| format!("{s:?}: {e}"))
        })
        .collect::<Result<_, _>>()
        .map(Sources)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let recorder = Recorder {
        results: cli.recording.results,
        side: cli.recording.side,
        tag: cli.recording.tag,
    };
    match run(cli.command, &recorder) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tunstack-bench: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command, recorder: &Recorder) -> io::Result<()> {
    match command {
        Command::KernelEcho(options) => kernel_echo::run(&options),
        Command::Wait { target, timeout } => wait(target, Duration::from_secs_f64(timeout)),
        Command::Throughput {
            target,
            conns,
            secs,
            server_pid,
        } => throughput::run(
            &throughput::Options {
                target,
                conns,
                secs,
                server_pids: server_pid,
            },
            recorder,
        ),
        Command::TunLoop { tun, spin } => tun_loop::run(&tun, spin),
        Command::TcpRtt { target, count } => latency::tcp(target, count, recorder),
        Command::UdpRtt {
            target,
            size,
            count,
        } => latency::udp(target, size, count, recorder),
        Command::Ping {
            target,
            count,
            interval,
        } => latency::ping(target, count, interval, recorder),
        Command::UdpRate {
            target,
            size,
            window,
            secs,
        } => udp_rate::run(
            &udp_rate::Options {
                target,
                size,
                window,
                secs,
            },
            recorder,
        ),
        Command::ConnRate {
            target,
            sources,
            secs,
        } => {
            let sources = sources.map(|s| s.0).unwrap_or_default();
            conn_rate::run(target, &sources, secs, recorder)
        }
        Command::Scale(args) => scale::run(&scale_options(args), recorder),
        Command::ScaleWorker {
            target,
            sources,
            first,
            conns,
            concurrency,
            phase_timeout,
        } => scale_worker::run(&scale_worker::Options {
            target,
            sources: sources.map(|s| s.0).unwrap_or_default(),
            first,
            conns,
            concurrency: concurrency.max(1),
            phase_timeout: Duration::from_secs_f64(phase_timeout),
        }),
        Command::Report { file } => report::table(&file).map(|table| print!("{table}")),
        Command::Plot { out } => match &recorder.results {
            Some(results) => plot::draw(results, &out),
            None => Err(io::Error::other(
                "plot: which results file? (--results FILE)",
            )),
        },
    }
}

fn scale_options(args: ScaleArgs) -> scale::Options {
    scale::Options {
        target: args.target,
        sources: args.sources.map(|s| s.0).unwrap_or_default(),
        conns: args.conns,
        concurrency: args.concurrency.max(1),
        rtt_count: args.rtt_count,
        server_pid: args.server_pid,
        idle_secs: args.idle_secs,
        phase_timeout: Duration::from_secs_f64(args.phase_timeout),
        rtt_steps: args.rtt_steps,
    }
}

/// Retries a 1-byte echo until it works or `timeout` passes.
fn wait(target: SocketAddr, timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let attempt = net::connect(target, None, Duration::from_millis(500))
            .and_then(|mut stream| latency::tcp_round_trips(&mut stream, 0).map(drop));
        match attempt {
            Ok(()) => return Ok(()),
            Err(err) if Instant::now() >= deadline => {
                return Err(io::Error::new(
                    err.kind(),
                    format!("{target} not answering after {timeout:?}: {err}"),
                ));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line() {
        Cli::command().debug_assert();
        let cli = Cli::parse_from([
            "tunstack-bench",
            "scale",
            "--target",
            "192.168.69.2:7",
            "--rtt-steps",
            "1000,3333,10000",
        ]);
        let Command::Scale(args) = cli.command else {
            panic!("{:?}", cli.command);
        };
        assert_eq!(args.rtt_steps, [1000, 3333, 10000]);
        let cli = Cli::parse_from(["tunstack-bench", "scale", "--target", "192.168.69.2:7"]);
        let Command::Scale(args) = cli.command else {
            panic!("{:?}", cli.command);
        };
        assert!(args.rtt_steps.is_empty());
        let cli = Cli::parse_from([
            "tunstack-bench",
            "plot",
            "--results",
            "r.tsv",
            "--out",
            "p.svg",
        ]);
        assert_eq!(cli.recording.results, Some(PathBuf::from("r.tsv")));
        assert!(
            matches!(cli.command, Command::Plot { out } if out == std::path::Path::new("p.svg"))
        );
    }
}
