//! The limits of a [`StackConfig`]: what the stack (and smoltcp under it) can work with.
//! Each check says which value is wrong, the valid range and why, so that no setting can
//! make smoltcp panic later (an MTU with no room for headers, a buffer over 1 GiB, a
//! multicast address of our own) or leave the stack silently useless.

use super::{
    MAX_ADDRESSES, MAX_MTU, MAX_TCP_BUFFER, MAX_TIMEOUT, MIN_MTU_IPV4, MIN_MTU_IPV6,
    MIN_TCP_BUFFER, MIN_TCP_MEMORY, MIN_TIMEOUT, StackConfig,
};
use crate::error::{Error, Result};
use smoltcp::time::Duration;
use smoltcp::wire::{IpAddress, IpCidr};

impl StackConfig {
    /// Checks every value against its limits (see each field); the error names the first
    /// one out of range, the range and why. [`Stack::try_new`](crate::Stack::try_new)
    /// calls this, and checks the device's MTU too.
    pub fn validate(&self) -> Result<()> {
        check_addresses(&self.addresses)?;
        check_mtu(self.mtu, &self.addresses)?;
        if !(MIN_TCP_BUFFER..=MAX_TCP_BUFFER).contains(&self.tcp_buffer) {
            return Err(invalid(format!(
                "tcp_buffer {} is outside {MIN_TCP_BUFFER}..={MAX_TCP_BUFFER}: at least 4 KiB \
                 (a few segments; less makes a transfer crawl), at most 1 GiB (TCP's largest window)",
                self.tcp_buffer
            )));
        }
        if self.tcp_memory < MIN_TCP_MEMORY {
            return Err(invalid(format!(
                "tcp_memory {} is below {MIN_TCP_MEMORY}: one connection's smallest buffers, both ways",
                self.tcp_memory
            )));
        }
        if self.udp_buffer == 0 || self.udp_packets == 0 {
            return Err(invalid(format!(
                "udp_buffer {} and udp_packets {} must both be at least 1: a UDP socket must hold a datagram",
                self.udp_buffer, self.udp_packets
            )));
        }
        let ports = &self.ephemeral_ports;
        if ports.is_empty() || *ports.start() == 0 {
            return Err(invalid(format!(
                "ephemeral_ports {}..={} must be a non-empty range of ports 1 to 65535",
                ports.start(),
                ports.end()
            )));
        }
        check_timeout("tcp_timeout", self.tcp_timeout)?;
        check_timeout("reassembly_timeout", self.reassembly_timeout)
    }
}

/// Whether a link of `mtu` bytes can carry the stack's traffic with `addresses`: 68 to
/// 65535 bytes, and at least 1280 if any address is IPv6.
pub fn check_mtu(mtu: usize, addresses: &[IpCidr]) -> Result<()> {
    if !(MIN_MTU_IPV4..=MAX_MTU).contains(&mtu) {
        return Err(invalid(format!(
            "mtu {mtu} is outside {MIN_MTU_IPV4}..={MAX_MTU}: IPv4 needs at least 68 bytes \
             (RFC 791), IPv6 1280 (RFC 8200 §5), and an IP packet is at most 65535 bytes"
        )));
    }
    let ipv6 = addresses.iter().find(|c| matches!(c, IpCidr::Ipv6(_)));
    if let Some(cidr) = ipv6
        && mtu < MIN_MTU_IPV6
    {
        return Err(invalid(format!(
            "mtu {mtu} is below {MIN_MTU_IPV6}, the minimum for IPv6 (RFC 8200 §5), but {cidr} \
             is an IPv6 address: remove the IPv6 addresses or use an MTU of 1280 or more"
        )));
    }
    Ok(())
}

fn check_addresses(addresses: &[IpCidr]) -> Result<()> {
    if addresses.is_empty() || addresses.len() > MAX_ADDRESSES {
        return Err(invalid(format!(
            "{} addresses: the stack takes 1 to {MAX_ADDRESSES}",
            addresses.len()
        )));
    }
    for (i, cidr) in addresses.iter().enumerate() {
        check_address(cidr)?;
        if addresses[..i].iter().any(|c| c.address() == cidr.address()) {
            return Err(invalid(format!(
                "address {} is given twice",
                cidr.address()
            )));
        }
    }
    Ok(())
}

/// Whether `cidr` can be one of the stack's own addresses: unicast, not loopback, not
/// its subnet's broadcast address, with a prefix of /1 or longer.
pub fn check_address(cidr: &IpCidr) -> Result<()> {
    let address = cidr.address();
    let why = if address.is_unspecified() {
        "the unspecified address is no one's address".to_string()
    } else if address.is_multicast() {
        "a multicast address names a group, not a host".to_string()
    } else if is_loopback(address) {
        "a loopback address never reaches a TUN (the kernel keeps it to itself)".to_string()
    } else if address.is_broadcast() {
        "255.255.255.255 is the broadcast address".to_string()
    } else if let IpCidr::Ipv4(v4) = cidr
        && v4.broadcast() == Some(v4.address())
    {
        format!("{address} is the broadcast address of {}", v4.network())
    } else if cidr.prefix_len() == 0 {
        "a /0 prefix puts every address on the link: use the TUN's subnet, like \
         192.168.69.2/24 or fd69::2/64"
            .to_string()
    } else {
        return Ok(());
    };
    Err(invalid(format!(
        "{cidr} cannot be the stack's address: {why}"
    )))
}

fn is_loopback(address: IpAddress) -> bool {
    match address {
        IpAddress::Ipv4(v4) => v4.is_loopback(),
        IpAddress::Ipv6(v6) => v6.is_loopback(),
    }
}

fn check_timeout(name: &str, value: Duration) -> Result<()> {
    if (MIN_TIMEOUT..=MAX_TIMEOUT).contains(&value) {
        return Ok(());
    }
    Err(invalid(format!(
        "{name} {value} is outside {MIN_TIMEOUT}..={MAX_TIMEOUT} (1 ms to a day)"
    )))
}

fn invalid(message: String) -> Error {
    Error::InvalidConfig(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT_ADDR4, DEFAULT_ADDR6};

    fn cidr(text: &str) -> IpCidr {
        text.parse().unwrap()
    }

    /// The message of the error `config` gives; panics if it is valid.
    fn rejection(config: &StackConfig) -> String {
        match config.validate() {
            Err(Error::InvalidConfig(message)) => message,
            other => panic!("expected InvalidConfig, got {other:?} for {config:?}"),
        }
    }

    #[test]
    fn the_default_config_is_valid() {
        StackConfig::default().validate().unwrap();
    }

    #[test]
    fn mtu_outside_68_to_65535_is_rejected_with_the_range() {
        let v4_only = vec![DEFAULT_ADDR4];
        for mtu in [0, 19, 20, 59, 67, 65536, 70000, usize::MAX] {
            let config = StackConfig {
                mtu,
                addresses: v4_only.clone(),
                ..StackConfig::default()
            };
            let message = rejection(&config);
            assert!(message.contains("68..=65535"), "mtu {mtu}: {message}");
        }
        for mtu in [68, 576, 65535] {
            check_mtu(mtu, &v4_only).unwrap();
        }
    }

    #[test]
    fn mtu_below_1280_is_rejected_with_an_ipv6_address() {
        let config = StackConfig {
            mtu: 1279,
            ..StackConfig::default()
        };
        let message = rejection(&config);
        assert!(message.contains("1280"), "{message}");
        assert!(message.contains("fd69::2/64"), "{message}");
        check_mtu(1280, &[DEFAULT_ADDR4, DEFAULT_ADDR6]).unwrap();
        check_mtu(100, &[DEFAULT_ADDR4]).unwrap();
    }

    #[test]
    fn tcp_buffer_outside_4_kib_to_1_gib_is_rejected() {
        for tcp_buffer in [0, 10, MIN_TCP_BUFFER - 1, MAX_TCP_BUFFER + 1] {
            let config = StackConfig {
                tcp_buffer,
                ..StackConfig::default()
            };
            let message = rejection(&config);
            assert!(message.contains("4096..=1073741824"), "{message}");
        }
        for tcp_buffer in [MIN_TCP_BUFFER, MAX_TCP_BUFFER] {
            let config = StackConfig {
                tcp_buffer,
                ..StackConfig::default()
            };
            config.validate().unwrap();
        }
    }

    #[test]
    fn tcp_memory_udp_sizes_and_ports_must_be_usable() {
        let cases = [
            StackConfig {
                tcp_memory: MIN_TCP_MEMORY - 1,
                ..StackConfig::default()
            },
            StackConfig {
                udp_buffer: 0,
                ..StackConfig::default()
            },
            StackConfig {
                udp_packets: 0,
                ..StackConfig::default()
            },
            StackConfig {
                ephemeral_ports: 0..=100,
                ..StackConfig::default()
            },
            #[allow(clippy::reversed_empty_ranges)]
            StackConfig {
                ephemeral_ports: 2000..=1000,
                ..StackConfig::default()
            },
        ];
        for config in &cases {
            rejection(config);
        }
    }

    #[test]
    fn timeouts_outside_1_ms_to_a_day_are_rejected() {
        for timeout in [Duration::ZERO, MAX_TIMEOUT + Duration::from_millis(1)] {
            let config = StackConfig {
                tcp_timeout: timeout,
                ..StackConfig::default()
            };
            assert!(rejection(&config).contains("tcp_timeout"));
            let config = StackConfig {
                reassembly_timeout: timeout,
                ..StackConfig::default()
            };
            assert!(rejection(&config).contains("reassembly_timeout"));
        }
    }

    #[test]
    fn addresses_must_be_unicast_hosts_on_a_real_subnet() {
        let bad = [
            ("0.0.0.0/24", "unspecified"),
            ("::/64", "unspecified"),
            ("224.0.0.1/24", "multicast"),
            ("ff02::1/64", "multicast"),
            ("127.0.0.1/8", "loopback"),
            ("::1/128", "loopback"),
            ("255.255.255.255/32", "broadcast"),
            ("192.168.69.255/24", "broadcast address of 192.168.69.0/24"),
            ("192.168.69.2/0", "/0"),
            ("fd69::2/0", "/0"),
        ];
        for (text, why) in bad {
            let config = StackConfig {
                addresses: vec![cidr(text)],
                ..StackConfig::default()
            };
            let message = rejection(&config);
            assert!(message.contains(why), "{text}: {message}");
        }
        for good in [
            "192.168.69.2/32",
            "10.0.0.1/31",
            "10.0.0.0/31",
            "fe80::2/64",
        ] {
            check_address(&cidr(good)).unwrap();
        }
    }

    #[test]
    fn try_new_checks_the_config_and_the_devices_mtu() {
        use crate::Stack;
        use crate::phy::MemoryLink;
        use smoltcp::time::Instant;
        let v4_only = StackConfig {
            addresses: vec![DEFAULT_ADDR4],
            ..StackConfig::default()
        };
        let cases = [
            (StackConfig::default(), 1000, "1280"),
            (v4_only.clone(), 19, "68..=65535"),
            (
                StackConfig {
                    tcp_buffer: 10,
                    ..StackConfig::default()
                },
                1500,
                "tcp_buffer",
            ),
        ];
        for (config, device_mtu, why) in cases {
            let (mut device, _peer) = MemoryLink::pair(device_mtu);
            match Stack::try_new(config, &mut device, Instant::ZERO) {
                Err(Error::InvalidConfig(message)) => assert!(message.contains(why), "{message}"),
                Err(other) => panic!("device mtu {device_mtu}: {other}"),
                Ok(_) => panic!("device mtu {device_mtu}: accepted"),
            }
        }
        let (mut device, _peer) = MemoryLink::pair(68);
        Stack::try_new(v4_only, &mut device, Instant::ZERO).unwrap();
    }

    #[test]
    fn one_to_eight_distinct_addresses() {
        let nine: Vec<IpCidr> = (1..=9).map(|i| cidr(&format!("10.0.0.{i}/24"))).collect();
        let config = StackConfig {
            addresses: nine.clone(),
            ..StackConfig::default()
        };
        assert!(rejection(&config).contains("1 to 8"));
        let config = StackConfig {
            addresses: nine[..8].to_vec(),
            ..StackConfig::default()
        };
        config.validate().unwrap();
        let config = StackConfig {
            addresses: Vec::new(),
            ..StackConfig::default()
        };
        assert!(rejection(&config).contains("1 to 8"));
        let config = StackConfig {
            addresses: vec![cidr("10.0.0.1/24"), cidr("10.0.0.1/16")],
            ..StackConfig::default()
        };
        assert!(rejection(&config).contains("twice"));
    }
}
