//! tunstack: a userspace TCP/UDP/ICMP stack behind a Linux TUN device.
