//! Devices: the TUN as a smoltcp `Device`, an in-memory link for tests, and the poll(2)
//! wait helper. The crate's `unsafe` and syscalls live here and nowhere else.

pub mod fault;
pub mod memory;
pub mod tun;
pub mod vnet;
pub mod wait;

pub use fault::{FaultConfig, FaultyDevice};

/// Set in the `id` of an inbound packet's [`smoltcp::phy::PacketMeta`] by a device whose
/// packet was made on this host with its TCP/UDP checksum left partial (TUN offloads,
/// `NEEDS_CSUM`): the stack does not verify that checksum (there is nothing to verify).
pub const META_PARTIAL_CHECKSUM: u32 = 1;
pub use memory::MemoryLink;
pub use tun::TunDevice;
