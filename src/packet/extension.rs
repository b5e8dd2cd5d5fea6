//! IPv6 extension headers as a host must process them (RFC 8200 §4): the chain from the
//! fixed header to the upper-layer header, with each header's rule applied — Hop-by-Hop
//! only first (§4.3), options by their action bits (§4.2), a Routing header with Segments
//! Left 0 ignored and any other refused (§4.4, RFC 5095 §3), an atomic fragment passed as
//! a whole packet (RFC 6946 §4). Says where the upper-layer header starts, or why the
//! packet is discarded and what the Parameter Problem says. Reads untrusted bytes with
//! checked accesses only; allocates nothing.

use std::fmt;

/// The fixed IPv6 header's length: where the first extension header starts.
pub const IPV6_HEADER_LEN: usize = 40;

const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const DESTINATION_OPTIONS: u8 = 60;

/// What the extension headers of one whole IPv6 packet decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extensions {
    /// Process the packet: its upper-layer header (`protocol`) starts at byte `start`
    /// ([`IPV6_HEADER_LEN`] when there are no extension headers).
    Upper {
        /// The upper-layer protocol number (6, 17, 58, or one the stack does not speak).
        protocol: u8,
        /// Offset of the upper-layer header in the packet.
        start: usize,
    },
    /// Discard the packet, without an answer.
    Discard(Discard),
    /// Discard the packet and answer with an ICMPv6 Parameter Problem.
    Problem(HeaderProblem),
}

/// Why a packet is discarded silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    /// An unrecognized option whose action bits are 01, or 11 in a packet to a multicast
    /// address (RFC 8200 §4.2).
    Option {
        /// The option type.
        option: u8,
    },
    /// An option or header that runs past its header or the packet.
    Truncated,
    /// A fragment header (not atomic) in a packet that is whole or already reassembled.
    Fragment,
}

/// What a Parameter Problem answer says (RFC 4443 §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderProblem {
    /// What is wrong.
    pub kind: ProblemKind,
    /// Offset of the offending byte in the packet.
    pub pointer: u32,
}

/// The header field a Parameter Problem points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// A Hop-by-Hop header anywhere but right after the fixed header: an unrecognized Next
    /// Header (code 1, RFC 8200 §4.3).
    HopByHopNotFirst,
    /// A Routing header with Segments Left above 0: a host routes no further; the pointer
    /// is at its Routing Type (code 0, RFC 8200 §4.4; type 0 is deprecated, RFC 5095 §3).
    Routing {
        /// The Routing Type.
        routing_type: u8,
        /// The Segments Left field.
        segments_left: u8,
    },
    /// An unrecognized option whose action bits are 10, or 11 to a unicast address
    /// (code 2, RFC 8200 §4.2).
    Option {
        /// The option type.
        option: u8,
    },
}

impl HeaderProblem {
    /// The ICMPv6 Parameter Problem code.
    pub fn code(&self) -> u8 {
        match self.kind {
            ProblemKind::Routing { .. } => 0,
            ProblemKind::HopByHopNotFirst => 1,
            ProblemKind::Option { .. } => 2,
        }
    }
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProblemKind::HopByHopNotFirst => write!(f, "hop-by-hop header not first"),
            ProblemKind::Routing {
                routing_type,
                segments_left,
            } => write!(
                f,
                "routing header type {routing_type}, segments left {segments_left}"
            ),
            ProblemKind::Option { option } => write!(f, "unrecognized option {option:#04x}"),
        }
    }
}

impl fmt::Display for Discard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Discard::Option { option } => {
                write!(f, "unrecognized option {option:#04x}, action: discard")
            }
            Discard::Truncated => write!(f, "extension header truncated"),
            Discard::Fragment => write!(f, "fragment header in a whole packet"),
        }
    }
}

/// True if the IPv6 `packet` has extension headers: the fixed header's Next Header is
/// not TCP, UDP or ICMPv6. A cheap test for the common case; false for IPv4.
pub fn has_extensions(packet: &[u8]) -> bool {
    matches!(
        (packet.first().map(|b| b >> 4), packet.get(6)),
        (Some(6), Some(next)) if !matches!(next, 6 | 17 | 58)
    )
}

/// Walks the extension headers of a whole IPv6 `packet` (at least a fixed header).
pub fn walk(packet: &[u8]) -> Extensions {
    let Some(&first) = packet.get(6) else {
        return Extensions::Discard(Discard::Truncated);
    };
    let to_multicast = packet.get(24) == Some(&0xff);
    let (mut next, mut next_field, mut at) = (first, 6, IPV6_HEADER_LEN);
    // Each header is at least 8 bytes: the walk ends within len / 8 rounds.
    while at <= packet.len() {
        let len = match next {
            HOP_BY_HOP if at != IPV6_HEADER_LEN => {
                return problem(ProblemKind::HopByHopNotFirst, next_field);
            }
            FRAGMENT => 8,
            HOP_BY_HOP | ROUTING | DESTINATION_OPTIONS => match packet.get(at + 1) {
                Some(&units) => (usize::from(units) + 1) * 8,
                None => return Extensions::Discard(Discard::Truncated),
            },
            protocol => {
                return Extensions::Upper {
                    protocol,
                    start: at,
                };
            }
        };
        let Some(header) = packet.get(at..at + len) else {
            return Extensions::Discard(Discard::Truncated);
        };
        let verdict = match next {
            ROUTING => routing(header, at),
            FRAGMENT => fragment(header),
            _ => options(header, at, to_multicast),
        };
        if let Some(verdict) = verdict {
            return verdict;
        }
        (next, next_field, at) = (header[0], at, at + len);
    }
    Extensions::Discard(Discard::Truncated)
}

/// True if the upper-layer message of the IPv6 `packet`, past any extension headers, is
/// an ICMPv6 error (type below 128): never answered with another (RFC 4443 §2.4(e.1)).
pub fn carries_icmpv6_error(packet: &[u8]) -> bool {
    let (mut next, mut at) = (packet.get(6).copied(), IPV6_HEADER_LEN);
    while let Some(kind) = next {
        let len = match kind {
            58 => return packet.get(at).is_some_and(|t| *t < 128),
            FRAGMENT => 8,
            HOP_BY_HOP | ROUTING | DESTINATION_OPTIONS => match packet.get(at + 1) {
                Some(&units) => (usize::from(units) + 1) * 8,
                None => return false,
            },
            _ => return false,
        };
        next = packet.get(at).copied();
        at += len;
    }
    false
}

fn problem(kind: ProblemKind, pointer: usize) -> Extensions {
    Extensions::Problem(HeaderProblem {
        kind,
        pointer: u32::try_from(pointer).unwrap_or(u32::MAX),
    })
}

/// A Routing header (at least 8 bytes, at offset `at`): ignored when no segment is left.
fn routing(header: &[u8], at: usize) -> Option<Extensions> {
    let (&routing_type, &segments_left) = (header.get(2)?, header.get(3)?);
    let kind = ProblemKind::Routing {
        routing_type,
        segments_left,
    };
    (segments_left > 0).then(|| problem(kind, at + 2))
}

/// A Fragment header: an atomic fragment (offset 0, M clear) is a whole packet.
fn fragment(header: &[u8]) -> Option<Extensions> {
    let (&high, &low) = (header.get(2)?, header.get(3)?);
    let atomic = high == 0 && low & 0xf9 == 0;
    (!atomic).then_some(Extensions::Discard(Discard::Fragment))
}

/// The options of a Hop-by-Hop or Destination Options header (at offset `at`), by type:
/// padding and Router Alert are understood, any other by its two high bits (§4.2).
fn options(header: &[u8], at: usize, to_multicast: bool) -> Option<Extensions> {
    let mut i = 2;
    while i < header.len() {
        let option = header[i];
        if option == 0 {
            i += 1; // Pad1
            continue;
        }
        let Some(&data_len) = header.get(i + 1) else {
            return Some(Extensions::Discard(Discard::Truncated));
        };
        let end = i + 2 + usize::from(data_len);
        if end > header.len() {
            return Some(Extensions::Discard(Discard::Truncated));
        }
        // PadN (1) and Router Alert (5) need nothing from a host.
        if !matches!(option, 1 | 5) {
            match option >> 6 {
                0 => {}
                1 => return Some(Extensions::Discard(Discard::Option { option })),
                3 if to_multicast => return Some(Extensions::Discard(Discard::Option { option })),
                _ => return Some(problem(ProblemKind::Option { option }, at + i)),
            }
        }
        i = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed header to `dst_first` (0xfd unicast, 0xff multicast) with `next`, then `rest`.
    fn packet(next: u8, dst_first: u8, rest: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(rest.len() as u16).to_be_bytes());
        p.extend_from_slice(&[next, 64]);
        p.extend_from_slice(&[0xfd; 16]);
        p.push(dst_first);
        p.extend_from_slice(&[0x69; 15]);
        p.extend_from_slice(rest);
        p
    }

    const UDP_HEADER: [u8; 8] = [0x9c, 0x40, 0, 7, 0, 8, 0, 0];

    fn with_udp(header: &[u8]) -> Vec<u8> {
        let mut rest = header.to_vec();
        rest.extend_from_slice(&UDP_HEADER);
        rest
    }

    #[test]
    fn no_extension_headers_is_the_upper_layer_at_40() {
        let p = packet(17, 0xfd, &UDP_HEADER);
        assert!(!has_extensions(&p));
        assert_eq!(
            walk(&p),
            Extensions::Upper {
                protocol: 17,
                start: 40
            }
        );
    }

    #[test]
    fn padding_and_skippable_options_are_passed_over() {
        // Destination Options: Pad1, PadN(2), unknown type 0x1e (action 00) with 0 bytes.
        let dest = [17, 0, 0, 1, 0, 0x1e, 0, 0];
        let p = packet(60, 0xfd, &with_udp(&dest));
        assert!(has_extensions(&p));
        assert_eq!(
            walk(&p),
            Extensions::Upper {
                protocol: 17,
                start: 48
            }
        );
    }

    #[test]
    fn option_action_bits_decide() {
        for (option, unicast, multicast) in [
            (
                0x5e,
                Some(Discard::Option { option: 0x5e }),
                Some(Discard::Option { option: 0x5e }),
            ),
            (0x9e, None, None),
            (0xde, None, Some(Discard::Option { option: 0xde })),
        ] {
            let dest = [17, 0, option, 0, 1, 2, 0, 0];
            for (dst, expected) in [(0xfd, unicast), (0xff, multicast)] {
                let got = walk(&packet(60, dst, &with_udp(&dest)));
                match expected {
                    Some(discard) => assert_eq!(got, Extensions::Discard(discard)),
                    None => assert_eq!(
                        got,
                        Extensions::Problem(HeaderProblem {
                            kind: ProblemKind::Option { option },
                            pointer: 42
                        }),
                        "option {option:#x} to {dst:#x}"
                    ),
                }
            }
        }
    }

    #[test]
    fn hop_by_hop_must_come_first() {
        let hop = [60, 0, 1, 4, 0, 0, 0, 0];
        let dest = [17, 0, 1, 4, 0, 0, 0, 0];
        let mut rest = hop.to_vec();
        rest.extend_from_slice(&with_udp(&dest));
        assert_eq!(
            walk(&packet(0, 0xfd, &rest)),
            Extensions::Upper {
                protocol: 17,
                start: 56
            }
        );
        let late = [0, 0, 1, 4, 0, 0, 0, 0];
        let mut rest = late.to_vec();
        rest.extend_from_slice(&with_udp(&hop));
        assert_eq!(
            walk(&packet(60, 0xfd, &rest)),
            problem(ProblemKind::HopByHopNotFirst, 40)
        );
    }

    #[test]
    fn routing_header_is_ignored_only_with_no_segment_left() {
        let mut rh = vec![17, 2, 0, 0, 0, 0, 0, 0];
        rh.extend_from_slice(&[0x11; 16]);
        assert_eq!(
            walk(&packet(43, 0xfd, &with_udp(&rh))),
            Extensions::Upper {
                protocol: 17,
                start: 64
            }
        );
        rh[3] = 1;
        assert_eq!(
            walk(&packet(43, 0xfd, &with_udp(&rh))),
            problem(
                ProblemKind::Routing {
                    routing_type: 0,
                    segments_left: 1
                },
                42
            )
        );
    }

    #[test]
    fn atomic_fragment_passes_and_a_real_one_does_not() {
        let atomic = [17, 0, 0, 0, 0, 0, 0x12, 0x34];
        assert_eq!(
            walk(&packet(44, 0xfd, &with_udp(&atomic))),
            Extensions::Upper {
                protocol: 17,
                start: 48
            }
        );
        let first = [17, 0, 0, 1, 0, 0, 0x12, 0x34];
        assert_eq!(
            walk(&packet(44, 0xfd, &with_udp(&first))),
            Extensions::Discard(Discard::Fragment)
        );
    }

    #[test]
    fn an_icmpv6_error_behind_extension_headers_is_found() {
        let dest = [58, 0, 0x9e, 4, 1, 2, 3, 4];
        let mut rest = dest.to_vec();
        rest.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]); // destination unreachable
        assert!(carries_icmpv6_error(&packet(60, 0xfd, &rest)));
        rest[8] = 128; // echo request
        assert!(!carries_icmpv6_error(&packet(60, 0xfd, &rest)));
        assert!(!carries_icmpv6_error(&packet(60, 0xfd, &with_udp(&dest))));
        assert!(!carries_icmpv6_error(&packet(60, 0xfd, &dest[..4])));
    }

    #[test]
    fn truncated_headers_and_options_are_discarded_and_nothing_panics() {
        let dest = [17, 0, 0xc2, 9, 0, 0, 0, 0]; // option data runs past the header
        assert_eq!(
            walk(&packet(60, 0xfd, &with_udp(&dest))),
            Extensions::Discard(Discard::Truncated)
        );
        assert_eq!(
            walk(&packet(60, 0xfd, &[17, 3, 0, 0])),
            Extensions::Discard(Discard::Truncated)
        );
        let whole = packet(0, 0xfd, &with_udp(&[60, 0, 1, 4, 0, 0, 0, 0]));
        for cut in 0..whole.len() {
            let _ = walk(&whole[..cut]);
        }
        for seed in 0..2000u32 {
            let bytes: Vec<u8> = (0..64u32)
                .map(|i| (seed.wrapping_mul(2654435761).wrapping_add(i * 97) >> 7) as u8)
                .collect();
            let _ = walk(&packet(bytes[0] % 64, 0xfd, &bytes));
        }
    }
}
