//! The `tunstack` binary: parse arguments, start logging, open the TUN, run an app.

mod cli;

use clap::Parser;
use cli::{Cli, Command, ConnectArgs, EchoArgs, StackArgs};
use std::io::stdout;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::process::ExitCode;
use tunstack::app::{ConnectClient, EchoServer, connect::CHUNK};
use tunstack::control::{self, ControlServer};
use tunstack::pcap::PcapObserver;
use tunstack::phy::TunDevice;
use tunstack::phy::wait::read_fd;
use tunstack::phy::{FaultConfig, FaultyDevice};
use tunstack::runtime::{self, App, RunOptions};
use tunstack::smoltcp::time::{Duration, Instant};
use tunstack::trace::{self, Observers, Tracer};
use tunstack::{SocketId, Stack, StackConfig};

fn main() -> ExitCode {
    tunstack::phy::fresh_pages_for_big_buffers();
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let result = match cli.command {
        Command::Echo(args) => run_echo(args),
        Command::Connect(args) => run_connect(args),
        Command::Ss(args) => control::query(&args.tun).map(|text| {
            print!("{text}");
            0
        }),
    };
    match result {
        Ok(0) => ExitCode::SUCCESS,
        Ok(code) => ExitCode::from(code.clamp(1, 255) as u8),
        Err(err) => {
            eprintln!("tunstack: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Checks the shared options, opens the TUN and builds a stack from them. What the flags
/// alone decide is checked before the TUN is opened (no root needed to hear about it).
fn open(args: &StackArgs) -> tunstack::Result<(TunDevice, Stack)> {
    let mut config = stack_config(args, args.mtu.unwrap_or(StackConfig::default().mtu))?;
    config.validate()?;
    let faults = args.drop_pct | args.corrupt_pct | args.duplicate_pct != 0;
    if faults && !args.no_offload {
        log::info!("tun: offloads off: fault injection drops and corrupts whole packets");
    }
    let mut device = TunDevice::open(&args.tun, args.mtu, !args.no_offload && !faults)?;
    let mtu = smoltcp::phy::Device::capabilities(&device).max_transmission_unit;
    let origin = match args.mtu {
        Some(mtu) => format!("--mtu {mtu}"),
        None => format!("the MTU of {} ({mtu})", args.tun),
    };
    let (addresses, warning) = args
        .addresses_for(mtu, &origin)
        .map_err(tunstack::Error::InvalidConfig)?;
    if let Some(warning) = warning {
        log::warn!("{warning}");
    }
    config.addresses = addresses;
    config.mtu = mtu;
    config.random_seed = os_random_seed();
    config.icmp_msgs_per_sec = args.icmp_msgs_per_sec;
    config.icmp_msgs_burst = args.icmp_msgs_burst;
    config.icmp_ratelimit = Duration::from_millis(args.icmp_ratelimit_ms);
    config.echo_broadcast = args.echo_broadcast;
    let stack = Stack::try_new(config, &mut device, Instant::ZERO)?;
    install_observers(args, &stack)?;
    Ok((device, stack))
}

/// The stack's configuration from the flags, for a link of `mtu` bytes.
fn stack_config(args: &StackArgs, mtu: usize) -> tunstack::Result<StackConfig> {
    let origin = format!("--mtu {mtu}");
    let (addresses, _) = args
        .addresses_for(mtu, &origin)
        .map_err(tunstack::Error::InvalidConfig)?;
    Ok(StackConfig {
        addresses,
        mtu,
        tcp_buffer: args.tcp_buffer,
        tcp_memory: args.tcp_memory,
        tcp_timeout: Duration::from_micros((args.tcp_timeout * 1e6) as u64),
        ..StackConfig::default()
    })
}

/// The packet trace (--trace or RUST_LOG at trace for tunstack::trace) and the pcap writer.
fn install_observers(args: &StackArgs, stack: &Stack) -> tunstack::Result<()> {
    let mut observers = Observers(Vec::new());
    if args.trace || log::log_enabled!(target: trace::TARGET, log::Level::Trace) {
        observers.push(Box::new(Tracer::logging()));
    }
    if let Some(path) = &args.pcap {
        log::info!(
            "pcap: writing every packet to {} (a FIFO waits for its reader)",
            path.display()
        );
        let pcap = PcapObserver::create(path).map_err(|e| {
            tunstack::Error::Device(format!("cannot write pcap {}: {e}", path.display()))
        })?;
        observers.push(Box::new(pcap));
    }
    if !observers.is_empty() {
        stack.set_observer(Box::new(observers));
    }
    Ok(())
}

/// A seed from the OS (std's hasher keys come from getrandom), so ISNs and ephemeral
/// ports differ between runs.
fn os_random_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::process::id())
}

/// Runs `app` on the stack, through the fault injector when faults are asked for, with
/// the control socket for `tunstack ss`.
fn serve(
    args: &StackArgs,
    device: TunDevice,
    stack: &Stack,
    app: &mut dyn App,
) -> tunstack::Result<i32> {
    let options = RunOptions {
        control: ControlServer::bind(&args.tun)
            .inspect_err(|err| log::warn!("tunstack ss will not work: {err}"))
            .ok(),
        busy_poll: Duration::from_micros(args.busy_poll_us),
        rhythm_lead: Duration::from_micros(args.rhythm_lead_us),
    };
    let faults = FaultConfig {
        drop_pct: args.drop_pct,
        corrupt_pct: args.corrupt_pct,
        duplicate_pct: args.duplicate_pct,
        seed: args.seed,
    };
    if faults.is_none() {
        let mut device = device;
        return runtime::run(stack, &mut device, app, &options);
    }
    log::info!(
        "faults: drop {}%, corrupt {}%, duplicate {}%, seed {}",
        faults.drop_pct,
        faults.corrupt_pct,
        faults.duplicate_pct,
        faults.seed
    );
    let mut device = FaultyDevice::new(device, faults);
    runtime::run(stack, &mut device, app, &options)
}

fn run_echo(args: EchoArgs) -> tunstack::Result<i32> {
    let (device, stack) = open(&args.stack)?;
    let addr = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), args.port);
    let mut echo = EchoApp(EchoServer::bind(&stack, addr, args.backlog)?);
    serve(&args.stack, device, &stack, &mut echo)
}

struct EchoApp(EchoServer);

impl App for EchoApp {
    fn on_ready(&mut self, _stack: &Stack, ready: &[SocketId]) {
        self.0.on_ready(ready);
    }
}

fn run_connect(args: ConnectArgs) -> tunstack::Result<i32> {
    let (device, stack) = open(&args.stack)?;
    let remote = SocketAddr::new(args.host, args.port);
    // Finite and positive: cli::parse_seconds.
    let wait = std::time::Duration::from_secs_f64(args.wait);
    let output = Box::new(stdout());
    let client = if args.udp {
        ConnectClient::udp(&stack, remote, output, wait)?
    } else {
        let client = ConnectClient::tcp(&stack, remote, output)?;
        client.set_timeout(Duration::from_micros(wait.as_micros() as u64));
        client
    };
    let mut app = ConnectApp {
        client,
        buf: vec![0; CHUNK],
    };
    serve(&args.stack, device, &stack, &mut app)
}

/// Feeds stdin to the client, only while it can take more (back-pressure).
struct ConnectApp {
    client: ConnectClient,
    buf: Vec<u8>,
}

impl App for ConnectApp {
    fn on_ready(&mut self, _stack: &Stack, _ready: &[SocketId]) {
        self.client.pump();
    }

    fn fds(&self, out: &mut Vec<RawFd>) {
        if self.client.wants_input() {
            out.push(std::io::stdin().as_fd().as_raw_fd());
        }
    }

    fn on_fd(&mut self, _stack: &Stack, _fd: RawFd) {
        let stdin = std::io::stdin();
        match read_fd(stdin.as_fd(), &mut self.buf) {
            Ok(n) => self.client.push_input(&self.buf[..n]),
            Err(err) => {
                log::warn!("connect: reading stdin failed: {err}");
                self.client.push_input(&[]);
            }
        }
    }

    fn finished(&self) -> Option<i32> {
        self.client.exit_code()
    }

    fn timeout(&self) -> Option<Duration> {
        self.client
            .linger_left()
            .map(|d| Duration::from_micros(d.as_micros() as u64 + 1))
    }
}
