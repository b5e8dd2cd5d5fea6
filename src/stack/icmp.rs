//! The ICMP the stack makes itself instead of smoltcp: the errors a host sends — port
//! unreachable, and the ICMPv6 Parameter Problem for extension headers smoltcp cannot
//! process — decided (and rate-limited, [`super::icmp_limit`]) while routing, before
//! smoltcp sees the packet; the echo reply that reflects a Record Route option (smoltcp
//! drops IP options, RFC 1122 §3.2.2.6 says reflect them); and the copy of an IPv6 packet
//! with its extension headers taken out, which is what smoltcp gets. smoltcp's
//! `iface/interface/ipv6.rs` (`process_nxt_hdr`, its `_` arm, line 352) answers every extension header
//! but a leading Hop-by-Hop with "unrecognized next header"; this module is the one place
//! that compensates. Every packet is built in one reused buffer: nothing allocates per packet.

use super::device::TapTx;
use super::route::Route;
use super::verdict::IcmpError;
use super::{Inner, Verdict};
use crate::packet::extension::{HeaderProblem, IPV6_HEADER_LEN};
use crate::packet::ipv4_options;
use etherparse::checksum::Sum16BitWords;
use smoltcp::phy;
use smoltcp::time::Instant;
use smoltcp::wire::IpAddress;

/// What the stack answers a packet with, itself, instead of handing it to smoltcp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    /// ICMP (type 3 code 3) or ICMPv6 (type 1 code 4) port unreachable.
    PortUnreachable,
    /// ICMPv6 Parameter Problem (type 4).
    ParameterProblem(HeaderProblem),
    /// An echo reply with the request's Record Route option, our address recorded.
    EchoWithRecordRoute,
    /// Nothing: the packet ends here (its ICMP error was rate-limited).
    Nothing,
}

/// An ICMP error quotes as much of the offending packet as keeps it within the minimum
/// MTU: 576 bytes for IPv4 (RFC 1812 §4.3.2.3), 1280 for IPv6 (RFC 4443 §2.4(c)).
const MIN_MTU_V4: usize = 576;
const MIN_MTU_V6: usize = 1280;
const ICMP_HEADER_LEN: usize = 8;
const IPV4_HEADER_LEN: usize = 20;
const HOP_LIMIT: u8 = 64;

impl Inner {
    /// Sends what `route` says the stack answers itself, through `tx`. Gives `tx` back
    /// when the packet is for smoltcp after all.
    pub(super) fn answer<T: phy::TxToken>(
        &mut self,
        now: Instant,
        packet: &[u8],
        route: &Route,
        tx: T,
        mtu: usize,
    ) -> Option<T> {
        let Some(answer) = route.answer else {
            return Some(tx);
        };
        let Some(info) = route.info.as_ref() else {
            return Some(tx);
        };
        let src = match self.is_local(info.dst) {
            true => info.dst,
            false => self.source_for(info.src).ok()?,
        };
        let mut out = std::mem::take(&mut self.ip_scratch);
        out.clear();
        let built = match answer {
            Answer::PortUnreachable => error(
                &mut out,
                (src, info.src),
                port_unreachable(src),
                packet,
                mtu,
            ),
            Answer::ParameterProblem(problem) => {
                let rest = problem.pointer.to_be_bytes();
                error(
                    &mut out,
                    (src, info.src),
                    (4, problem.code(), rest),
                    packet,
                    mtu,
                )
            }
            Answer::EchoWithRecordRoute => echo_with_record_route(&mut out, src, packet),
            Answer::Nothing => None,
        };
        if built.is_some() {
            if answer != Answer::EchoWithRecordRoute {
                self.meter.stats.icmp_errors_sent += 1;
            }
            let tap = TapTx::counting(tx, &mut self.meter, now);
            phy::TxToken::consume(tap, out.len(), |buf| buf.copy_from_slice(&out));
        }
        self.ip_scratch = out;
        None
    }

    /// A copy of the IPv6 `packet` whose extension headers `route` found processed: the
    /// fixed header, then the upper-layer header at once. `None` when there were none.
    /// Hand the buffer back with [`Inner::return_scratch`].
    pub(super) fn strip_extensions(&mut self, packet: &[u8], route: &Route) -> Option<Vec<u8>> {
        let (protocol, start) = route.upper?;
        let (fixed, upper) = (packet.get(..IPV6_HEADER_LEN)?, packet.get(start..)?);
        let mut out = std::mem::take(&mut self.ip_scratch);
        out.clear();
        out.extend_from_slice(fixed);
        out[4..6].copy_from_slice(&u16::try_from(upper.len()).ok()?.to_be_bytes());
        out[6] = protocol;
        out.extend_from_slice(upper);
        Some(out)
    }

    /// Takes back the buffer [`Inner::strip_extensions`] lent.
    pub(super) fn return_scratch(&mut self, buffer: Option<Vec<u8>>) {
        if let Some(buffer) = buffer {
            self.ip_scratch = buffer;
        }
    }

    /// Whether the ICMP error `route` calls for may go out now. When not, the route is
    /// turned into a silent end, traced with the rate limit and counted.
    pub(super) fn limit_icmp_error(&mut self, mut route: Route) -> Route {
        let is_error = matches!(
            route.answer,
            Some(Answer::PortUnreachable | Answer::ParameterProblem(_))
        );
        let Some(to) = route.info.as_ref().map(|i| i.src).filter(|_| is_error) else {
            return route;
        };
        if self.icmp_limit.allow(self.now, to) {
            return route;
        }
        let error = match route.answer {
            Some(Answer::ParameterProblem(problem)) => IcmpError::ParameterProblem(problem),
            _ => IcmpError::PortUnreachable,
        };
        self.meter.stats.icmp_rate_limited += 1;
        route.verdict = Verdict::IcmpRateLimited(error);
        route.answer = Some(Answer::Nothing);
        route
    }
}

/// Type, code and the 4 bytes after the checksum of a port unreachable for `src`'s family.
fn port_unreachable(src: IpAddress) -> (u8, u8, [u8; 4]) {
    match src {
        IpAddress::Ipv4(_) => (3, 3, [0; 4]),
        IpAddress::Ipv6(_) => (1, 4, [0; 4]),
    }
}

/// An ICMP error from `src` to `dst` quoting `offending`, written to `out`.
fn error(
    out: &mut Vec<u8>,
    (src, dst): (IpAddress, IpAddress),
    (icmp_type, code, rest): (u8, u8, [u8; 4]),
    offending: &[u8],
    mtu: usize,
) -> Option<()> {
    let (header_len, min_mtu) = match src {
        IpAddress::Ipv4(_) => (IPV4_HEADER_LEN, MIN_MTU_V4),
        IpAddress::Ipv6(_) => (IPV6_HEADER_LEN, MIN_MTU_V6),
    };
    let room = min_mtu.min(mtu).checked_sub(header_len + ICMP_HEADER_LEN)?;
    let quote = offending.get(..offending.len().min(room))?;
    let icmp_len = ICMP_HEADER_LEN + quote.len();
    ip_header(out, (src, dst), icmp_len, &[])?;
    let at = out.len();
    out.extend_from_slice(&[icmp_type, code, 0, 0]);
    out.extend_from_slice(&rest);
    out.extend_from_slice(quote);
    fill_icmp_checksum(out, at, (src, dst));
    Some(())
}

/// An IPv4 or IPv6 header from `src` to `dst` for an ICMP message of `payload_len`
/// bytes, with IPv4 `options` (a multiple of 4 bytes long).
fn ip_header(
    out: &mut Vec<u8>,
    (src, dst): (IpAddress, IpAddress),
    payload_len: usize,
    options: &[u8],
) -> Option<()> {
    match (src, dst) {
        (IpAddress::Ipv4(s), IpAddress::Ipv4(d)) => {
            let header_len = IPV4_HEADER_LEN + options.len();
            let total = u16::try_from(header_len + payload_len).ok()?;
            let ihl = u8::try_from(header_len / 4).ok().filter(|w| *w <= 15)?;
            let start = out.len();
            out.extend_from_slice(&[0x40 | ihl, 0]);
            out.extend_from_slice(&total.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0x40, 0, HOP_LIMIT, 1, 0, 0]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
            out.extend_from_slice(options);
            let sum = Sum16BitWords::new()
                .add_slice(&out[start..])
                .ones_complement();
            out[start + 10..start + 12].copy_from_slice(&sum.to_ne_bytes());
        }
        (IpAddress::Ipv6(s), IpAddress::Ipv6(d)) => {
            let len = u16::try_from(payload_len).ok()?;
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&[58, HOP_LIMIT]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        _ => return None,
    }
    Some(())
}

/// Fills the checksum of the ICMP message at `out[at..]` (with the IPv6 pseudo-header).
fn fill_icmp_checksum(out: &mut [u8], at: usize, (src, dst): (IpAddress, IpAddress)) {
    let message = &out[at..];
    let mut sum = Sum16BitWords::new();
    if let (IpAddress::Ipv6(s), IpAddress::Ipv6(d)) = (src, dst) {
        sum = sum
            .add_16bytes(s.octets())
            .add_16bytes(d.octets())
            .add_4bytes((message.len() as u32).to_be_bytes())
            .add_4bytes([0, 0, 0, 58]);
    }
    let sum = sum.add_slice(message).ones_complement();
    out[at + 2..at + 4].copy_from_slice(&sum.to_ne_bytes());
}

/// The echo reply to an IPv4 echo `request` with a Record Route option: the option
/// reflected with `src` recorded, the other options left out (RFC 1122 §3.2.2.6).
fn echo_with_record_route(out: &mut Vec<u8>, src: IpAddress, request: &[u8]) -> Option<()> {
    let IpAddress::Ipv4(ours) = src else {
        return None;
    };
    let (at, len) = ipv4_options::record_route(request)?;
    let header_len = usize::from(request.first()? & 0x0f) * 4;
    let echo = request.get(header_len..)?;
    let peer: [u8; 4] = request.get(12..16)?.try_into().ok()?;
    let mut options = [0u8; 40];
    let option = options.get_mut(..len)?;
    option.copy_from_slice(request.get(at..at + len)?);
    ipv4_options::record_address(option, ours.octets());
    let options = options.get(..len.div_ceil(4) * 4)?;
    let dst = IpAddress::Ipv4(peer.into());
    ip_header(out, (src, dst), echo.len(), options)?;
    let at = out.len();
    out.extend_from_slice(echo);
    out.get_mut(at..at + 4)?.copy_from_slice(&[0, 0, 0, 0]); // echo reply, checksum to fill
    fill_icmp_checksum(out, at, (src, dst));
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{Icmpv4Type, Icmpv6Type, SlicedPacket, TransportSlice};
    use smoltcp::wire::{Ipv4Address, Ipv6Address};

    const US4: IpAddress = IpAddress::Ipv4(Ipv4Address::new(192, 168, 69, 2));
    const PEER4: IpAddress = IpAddress::Ipv4(Ipv4Address::new(192, 168, 69, 1));

    #[test]
    fn port_unreachable_v4_verifies_and_quotes_at_most_548_bytes() {
        let offending = vec![0x45; 1400];
        let mut out = Vec::new();
        error(
            &mut out,
            (US4, PEER4),
            port_unreachable(US4),
            &offending,
            1500,
        )
        .unwrap();
        assert_eq!(out.len(), 576);
        let header = etherparse::Ipv4HeaderSlice::from_slice(&out).unwrap();
        assert_eq!(
            Sum16BitWords::new()
                .add_slice(header.slice())
                .ones_complement(),
            0
        );
        assert_eq!(
            Sum16BitWords::new().add_slice(&out[20..]).ones_complement(),
            0
        );
        assert_eq!(&out[20..24], &[3, 3, out[22], out[23]]);
        assert_eq!(&out[28..], &offending[..548]);
    }

    #[test]
    fn parameter_problem_v6_parses_with_its_pointer() {
        let us = IpAddress::Ipv6(Ipv6Address::new(0xfd69, 0, 0, 0, 0, 0, 0, 2));
        let peer = IpAddress::Ipv6(Ipv6Address::new(0xfd69, 0, 0, 0, 0, 0, 0, 1));
        let mut out = Vec::new();
        error(
            &mut out,
            (us, peer),
            (4, 0, 42u32.to_be_bytes()),
            &[0x60; 100],
            1500,
        )
        .unwrap();
        let sliced = SlicedPacket::from_ip(&out).unwrap();
        let Some(TransportSlice::Icmpv6(icmp)) = sliced.transport else {
            panic!("not icmpv6");
        };
        assert!(matches!(
            icmp.icmp_type(),
            Icmpv6Type::ParameterProblem(h) if h.pointer == 42
        ));
        assert!(icmp.is_checksum_valid(
            [0xfd, 0x69, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            [0xfd, 0x69, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        ));
        assert_eq!(icmp.payload(), &[0x60; 100][..]);
    }

    #[test]
    fn echo_reply_reflects_record_route_with_our_address() {
        let mut request = vec![0x47, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
        request.extend_from_slice(&[192, 168, 69, 1, 192, 168, 69, 2]);
        request.extend_from_slice(&[7, 7, 4, 0, 0, 0, 0, 0]); // RR with one slot, EOL
        request.extend_from_slice(&[8, 0, 0, 0, 0, 9, 0, 1, b'h', b'i']);
        let mut out = Vec::new();
        echo_with_record_route(&mut out, US4, &request).unwrap();
        assert_eq!(&out[20..28], &[7, 7, 8, 192, 168, 69, 2, 0]);
        let sliced = SlicedPacket::from_ip(&out).unwrap();
        let Some(TransportSlice::Icmpv4(icmp)) = sliced.transport else {
            panic!("not icmp");
        };
        assert!(matches!(icmp.icmp_type(), Icmpv4Type::EchoReply(e) if e.id == 9 && e.seq == 1));
        assert_eq!(icmp.payload(), b"hi");
        assert_eq!(
            Sum16BitWords::new().add_slice(&out[28..]).ones_complement(),
            0
        );
    }
}
