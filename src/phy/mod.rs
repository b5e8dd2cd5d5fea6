//! Devices: the TUN as a smoltcp `Device`, an in-memory link for tests, and the poll(2)
//! wait helper. The crate's `unsafe` and syscalls live here and nowhere else.

pub mod fault;
pub mod memory;
pub mod tun;
pub mod vnet;
pub mod wait;

pub use fault::{FaultConfig, FaultyDevice};
pub use memory::MemoryLink;
pub use tun::TunDevice;
