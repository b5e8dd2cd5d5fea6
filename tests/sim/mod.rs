//! Two stacks joined by an in-memory link on a virtual clock: protocol tests without root.
//! `Pair::run_until` polls both sides, lets the apps run, and jumps the clock to the next
//! timer when nothing is in flight — a minute of TCP timers passes in microseconds.
#![allow(dead_code)]

use std::net::SocketAddr;
use tunstack::app::EchoServer;
use tunstack::phy::MemoryLink;
use tunstack::smoltcp::time::{Duration, Instant};
use tunstack::smoltcp::wire::IpCidr;
use tunstack::{SocketId, Stack, StackConfig};

/// Server side: the echo stack's default addresses.
pub const SERVER4: &str = "192.168.69.2";
/// Client side, like the host end of the TUN.
pub const CLIENT4: &str = "192.168.69.1";

pub fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

pub fn client_config() -> StackConfig {
    StackConfig {
        addresses: vec![
            "192.168.69.1/24".parse::<IpCidr>().unwrap(),
            "fd69::1/64".parse::<IpCidr>().unwrap(),
        ],
        random_seed: 42,
        ..StackConfig::default()
    }
}

/// One stack and its end of the link.
pub struct Side {
    pub stack: Stack,
    pub link: MemoryLink,
    pub ready: Vec<SocketId>,
}

pub struct Pair {
    pub server: Side,
    pub client: Side,
    pub now: Instant,
    /// Serves the server side's ready sockets when present.
    pub echo: Option<EchoServer>,
}

impl Pair {
    pub fn new(server: StackConfig, client: StackConfig) -> Pair {
        let (mut s_link, mut c_link) = MemoryLink::pair(1500);
        let now = Instant::ZERO;
        Pair {
            server: Side {
                stack: Stack::new(server, &mut s_link, now),
                link: s_link,
                ready: Vec::new(),
            },
            client: Side {
                stack: Stack::new(client, &mut c_link, now),
                link: c_link,
                ready: Vec::new(),
            },
            now,
            echo: None,
        }
    }

    /// A pair whose server runs the echo app on port 7.
    pub fn with_echo(backlog: usize) -> Pair {
        let mut pair = Pair::new(StackConfig::default(), client_config());
        let echo = EchoServer::bind(&pair.server.stack, addr("::", 7), backlog).unwrap();
        pair.echo = Some(echo);
        pair
    }

    /// One round: both stacks poll, the echo app serves, ready ids are collected.
    pub fn step(&mut self) {
        for side in [&mut self.server, &mut self.client] {
            side.stack.poll(self.now, &mut side.link);
            side.stack.take_ready(&mut side.ready);
        }
        if let Some(echo) = self.echo.as_mut() {
            echo.on_ready(&self.server.ready);
            self.server.ready.clear();
        }
    }

    /// Advances the clock to the earliest timer of either stack (at most `cap`) when no
    /// packet is in flight; returns false if there is nothing to wait for at all.
    pub fn advance(&mut self, cap: Duration) -> bool {
        if self.server.link.pending() > 0 || self.client.link.pending() > 0 {
            return true;
        }
        let delays = [
            self.server.stack.poll_delay(self.now),
            self.client.stack.poll_delay(self.now),
        ];
        match delays.into_iter().flatten().min() {
            Some(d) if d == Duration::ZERO => true,
            Some(d) => {
                self.now += d.min(cap);
                true
            }
            None => false,
        }
    }

    /// Steps until `done` holds, at most `max_steps` rounds; panics with `what` otherwise.
    pub fn run_until(
        &mut self,
        what: &str,
        max_steps: usize,
        mut done: impl FnMut(&mut Pair) -> bool,
    ) {
        for _ in 0..max_steps {
            self.step();
            if done(self) {
                return;
            }
            if !self.advance(Duration::from_secs(1)) {
                self.now += Duration::from_millis(100);
            }
        }
        panic!(
            "{what}: not reached in {max_steps} steps (virtual time {})",
            self.now
        );
    }

    /// Runs until both stacks are idle (nothing in flight, no timer before `horizon`).
    pub fn settle(&mut self, horizon: Duration) {
        let end = self.now + horizon;
        for _ in 0..100_000 {
            self.step();
            if self.now >= end {
                return;
            }
            if !self.advance(end - self.now) {
                return;
            }
        }
    }
}
