//! Devices: the TUN as a smoltcp `Device`, an in-memory link for tests, and the poll(2)
//! wait helper. The crate's `unsafe` and syscalls live here and nowhere else.

pub mod coalesce;
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

/// Serves every allocation of 128 KiB or more (a big socket buffer) with fresh pages from
/// the kernel, returned when freed. glibc otherwise raises that threshold after the first
/// such buffer is freed and hands out recycled heap memory that `calloc` must clear: 2 MiB
/// of memset per new connection with 1 MiB buffers, and resident memory for buffers no one
/// has written to. Fresh pages are zero already and cost memory only once touched. The
/// binary calls this at start; a library user may too. A no-op without glibc.
pub fn fresh_pages_for_big_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a malloc tunable; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
