//! `tunstack echo` against hostile and unlucky peers on a real TUN (issue 6): malformed
//! packets, bad checksums, SYN, UDP, ICMP and fragment floods, scans, blind resets, loss,
//! peers that stop reading, vanish or just idle, signals mid-transfer and startup faults.
//! In every case the stack must stay up, count what it drops, and still echo
//! byte-identical afterwards (`hostile::assert_survived`).
//!
//! Hostile packets are crafted with scapy (tests/hostile/craft.py) and written into the host
//! side of the TUN; every address is inside the test's own namespace, so nothing leaves it.
//! Floods take a lock (`hostile::exclusive_load`) so they never run beside another flood or
//! beside a test that measures time. Needs root, and hping3, nmap, nftables and
//! python3-scapy besides the tools of tests/common (.ci/run installs them all).

mod common;
mod hostile;

/// Cases 1, 2, 9, 10: malformed and bad-checksum packets, nmap scans, blind RSTs and SYNs.
#[path = "hostile/crafted.rs"]
mod crafted;
/// Cases 3, 5, 8, 11: SYN flood, fragment trains, ping -f and large pings, UDP flood.
#[path = "hostile/floods.rs"]
mod floods;
/// Case 15: the IP rules a host keeps (issue 14) and the ICMP error rate limit.
#[path = "hostile/ip_rules.rs"]
mod ip_rules;
/// Cases 4, 12: more clients than the backlog, peers that stop reading, vanish or idle.
#[path = "hostile/misbehaving.rs"]
mod misbehaving;
/// Case 14: missing, forbidden, busy and deleted TUN devices.
#[path = "hostile/startup.rs"]
mod startup;
/// Cases 6, 7, 13: 10 MiB and full-size datagrams intact, 1 MiB through 5% loss, SIGTERM.
#[path = "hostile/transfers.rs"]
mod transfers;
