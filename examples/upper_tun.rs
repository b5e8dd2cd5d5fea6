//! A TCP server on a real TUN that sends back what it is sent, in upper case: the smallest
//! complete app on tunstack, walked through in docs/writing-apps.md.
//!
//! Run: `sudo scripts/setup.sh`, `cargo build --release --example upper_tun`, then
//! `sudo target/release/examples/upper_tun` (without sudo after `sudo scripts/setup.sh
//! --user $USER`, where /dev/net/tun is 0666); from another terminal
//! `nc 192.168.69.2 8000`, and `cargo run --release -- ss` to see its sockets.

use std::collections::HashMap;
use tunstack::control::ControlServer;
use tunstack::phy::TunDevice;
use tunstack::runtime::{self, App, RunOptions};
use tunstack::smoltcp::phy::Device;
use tunstack::smoltcp::socket::tcp::State;
use tunstack::smoltcp::time::{Duration, Instant};
use tunstack::{Error, SocketId, Stack, StackConfig, TcpListener, TcpStream};

const TUN: &str = "tun0";

/// The app: a listener and the data socket of each client.
struct Upper {
    listener: TcpListener,
    connections: HashMap<SocketId, TcpStream>,
    buf: Vec<u8>,
}

impl App for Upper {
    fn on_ready(&mut self, _stack: &Stack, ready: &[SocketId]) {
        for &id in ready {
            if id == self.listener.id() {
                while let Ok((conn, peer)) = self.listener.accept() {
                    log::info!("upper: {} (from {peer})", conn.socket_pair());
                    let id = conn.id();
                    self.connections.insert(id, conn);
                    self.serve(id); // its first bytes may be here already
                }
            } else {
                self.serve(id);
            }
        }
    }
}

impl Upper {
    /// Answers what client `id` sent, but never more than its send buffer takes now: the
    /// rest stays in the receive buffer (the client's window closes) until ACKs make room
    /// and the stack reports `id` ready again. Reading more than that and writing it would
    /// lose what `write` did not take.
    fn serve(&mut self, id: SocketId) {
        let Some(conn) = self.connections.get(&id) else {
            return;
        };
        let open = loop {
            let space = conn.send_space().min(self.buf.len());
            if space == 0 {
                // A full send buffer: wait. No buffer at all: the connection is over.
                break conn.take_error().is_none() && conn.state() != State::Closed;
            }
            match conn.read(&mut self.buf[..space]) {
                Ok(0) => break false, // FIN: dropping `conn` sends ours after the data
                Ok(n) => {
                    self.buf[..n].make_ascii_uppercase();
                    match conn.write(&self.buf[..n]) {
                        Ok(written) if written == n => {}
                        Ok(written) => {
                            log::warn!("upper: took {written} of {n} bytes: closing");
                            break false;
                        }
                        Err(err) => {
                            log::info!("upper: {}: {err}", conn.socket_pair());
                            break false;
                        }
                    }
                }
                Err(Error::WouldBlock) => break true,
                Err(err) => {
                    log::info!("upper: {}: {err}", conn.socket_pair());
                    break false;
                }
            }
        };
        if !open {
            self.connections.remove(&id);
        }
    }
}

/// A seed for ISNs, ports and SYN cookies that differs per run (std seeds its hashers
/// from the OS).
fn random_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::process::id())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The library logs through the `log` crate; any logger shows it. RUST_LOG=debug for
    // more, RUST_LOG=tunstack::trace=trace for every packet.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    // An existing TUN (scripts/setup.sh makes tun0); None: its own MTU; true: offloads.
    let mut tun = TunDevice::open(TUN, None, true)?;
    let config = StackConfig {
        mtu: tun.capabilities().max_transmission_unit,
        random_seed: random_seed(),
        ..StackConfig::default() // 192.168.69.2/24 and fd69::2/64
    };
    let stack = Stack::new(config, &mut tun, Instant::ZERO);
    let listener = TcpListener::bind(&stack, "[::]:8000".parse()?, 128)?;
    log::info!("upper: listening on {}", listener.local_addr());
    let mut app = Upper {
        listener,
        connections: HashMap::new(),
        buf: vec![0; 64 * 1024],
    };
    let options = RunOptions {
        // Answers `tunstack ss --tun tun0` (in this network namespace).
        control: Some(ControlServer::bind(TUN)?),
        // `tunstack echo`'s defaults (--busy-poll-us, --rhythm-lead-us); zero is off.
        busy_poll: Duration::from_micros(50),
        rhythm_lead: Duration::from_micros(150),
    };
    // Until SIGINT or SIGTERM, which close every connection with FIN first.
    let code = runtime::run(&stack, &mut tun, &mut app, &options)?;
    std::process::exit(code)
}
