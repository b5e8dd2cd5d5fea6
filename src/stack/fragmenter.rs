//! Outbound IPv4 fragments: what smoltcp's fragmenter holds is sent before anything else
//! may be dispatched.
//!
//! smoltcp 0.14 keeps the fragments of one IPv4 datagram at a time: `dispatch_ip`
//! (`iface/interface/mod.rs`, "start fragmentation", line 1308) writes the first fragment
//! and stores the rest in the interface's single `Fragmenter`, overwriting whatever it
//! still held, and `ipv4_egress` (`iface/interface/ipv4.rs`, line 10) sends one stored
//! fragment per `poll_egress`. A second big datagram dispatched before the first is out —
//! the echo reply to the next fragmented ping read in the same batch, or the next datagram
//! of a UDP socket in the same egress round — truncates the first to its fragment 0.
//!
//! So every path that can make smoltcp dispatch (each ingress packet, each egress round)
//! first calls [`drain_ipv4_fragments`]: the held fragments all leave, in order, before the
//! next datagram may start. IPv6 fragments are ours (smoltcp sends none) and wait in
//! `Inner::raw_tx` instead. Delete this module when smoltcp queues fragments itself.

use super::Meter;
use super::device::Tap;
use smoltcp::iface::{Interface, SocketSet};
use smoltcp::phy::Device;
use smoltcp::time::Instant;

/// Bound on the fragments of one datagram: 65,535 bytes in 48-byte pieces (IPv4's minimum
/// MTU of 68 less a 20-byte header), plus the round that resets the fragmenter.
const MAX_FRAGMENT_ROUNDS: usize = 65_535 / 48 + 2;

/// Sends what the interface's IPv4 fragmenter still holds. Returns false if the device
/// stopped taking packets before it was empty: the caller must then not let smoltcp
/// dispatch another datagram (it would overwrite the held one) and tries again later.
pub(super) fn drain_ipv4_fragments<D: Device>(
    iface: &mut Interface,
    meter: &mut Meter,
    device: &mut D,
    now: Instant,
) -> bool {
    // An empty set: `poll_at` then says only whether fragments wait (`Some(0)`), and
    // `poll_egress` sends one of them and nothing else. `Vec::new()` does not allocate.
    let mut no_sockets = SocketSet::new(Vec::new());
    for _ in 0..MAX_FRAGMENT_ROUNDS {
        if iface.poll_at(now, &no_sockets).is_none() {
            return true;
        }
        let mut tap = Tap {
            device: &mut *device,
            meter: &mut *meter,
            seq_offset: 0,
            sent: None,
            path: None,
        };
        let before = tap.meter.stats.tx_packets;
        iface.poll_egress(now, &mut tap, &mut no_sockets);
        if meter.stats.tx_packets == before && iface.poll_at(now, &no_sockets).is_some() {
            // Nothing left and nothing reset: the device took no packet.
            return false;
        }
    }
    iface.poll_at(now, &no_sockets).is_none()
}
