//! The `tunstack` binary: parse arguments, start logging, open the TUN, run an app.

mod cli;

use clap::Parser;
use cli::{Cli, Command, EchoArgs, StackArgs};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use tunstack::app::EchoServer;
use tunstack::phy::TunDevice;
use tunstack::runtime::{self, App};
use tunstack::smoltcp::time::Instant;
use tunstack::{SocketId, Stack, StackConfig};

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let result = match cli.command {
        Command::Echo(args) => run_echo(args),
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

/// Opens the TUN and builds a stack from the shared options.
fn open(args: &StackArgs) -> tunstack::Result<(TunDevice, Stack)> {
    let mut device = TunDevice::open(&args.tun, args.mtu)?;
    let mut config = StackConfig::default();
    if !args.addrs.is_empty() {
        config.addresses = args.addrs.clone();
    }
    config.tcp_buffer = args.tcp_buffer;
    config.mtu = smoltcp::phy::Device::capabilities(&device).max_transmission_unit;
    let stack = Stack::new(config, &mut device, Instant::ZERO);
    Ok((device, stack))
}

fn run_echo(args: EchoArgs) -> tunstack::Result<i32> {
    let (mut device, stack) = open(&args.stack)?;
    let addr = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), args.port);
    let mut echo = EchoApp(EchoServer::bind(&stack, addr, args.backlog)?);
    runtime::run(&stack, &mut device, &mut echo)
}

struct EchoApp(EchoServer);

impl App for EchoApp {
    fn on_ready(&mut self, _stack: &Stack, ready: &[SocketId]) {
        self.0.on_ready(ready);
    }
}
