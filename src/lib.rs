//! tunstack: a userspace TCP/UDP/ICMP stack behind a Linux TUN device.
//!
//! The kernel hands the TUN's raw IP packets to a [`Stack`]; a flow table keyed by the
//! socket pair `<src ip, src port, dst ip, dst port>` picks the one socket each packet is
//! for, and smoltcp's `Interface` runs the protocol for just that socket. On top sits a BSD-
//! like socket layer: [`TcpListener`] with a real backlog, [`TcpStream`] (accepted or
//! connected), and [`UdpSocket`] with `send_to`/`recv_from`.
//!
//! Everything is non-blocking and single-threaded: calls return [`Error::WouldBlock`] when
//! they would wait; [`Stack::poll`] moves packets; [`Stack::take_ready`] says which sockets
//! to look at. See `docs/writing-apps.md`.
#![deny(missing_docs)]

pub mod app;
pub mod config;
pub mod control;
pub mod error;
pub mod flow;
pub mod packet;
pub mod pcap;
pub mod phy;
pub mod rhythm;
pub mod runtime;
pub mod socket;
pub mod stack;
pub mod stats;
pub mod trace;

pub use config::StackConfig;
pub use error::{Error, Result};
pub use flow::{SocketId, SocketPair};
/// The smoltcp version this stack is built on, re-exported for `Instant`, `Duration`, states.
pub use smoltcp;
pub use socket::tcp::{TcpListener, TcpStream};
pub use socket::udp::UdpSocket;
pub use stack::{PacketObserver, Stack, Verdict};
pub use stats::Stats;

/// docs/writing-apps.md, so that `cargo test --doc` compiles (and, where no TUN is needed,
/// runs) every snippet in it.
#[cfg(doctest)]
#[doc = include_str!("../docs/writing-apps.md")]
pub struct WritingAppsDoc;
