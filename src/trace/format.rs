//! Rendering one packet as a line: addresses and ports, TCP flags and relative sequence
//! numbers, ICMP types, or why the bytes could not be parsed.

use super::seq::{Segment, SeqTracker};
use crate::packet::{PacketInfo, TcpFlags, Transport};
use etherparse::{SlicedPacket, TransportSlice};
use smoltcp::wire::IpAddress;

pub(super) fn describe(info: &PacketInfo, packet: &[u8], seqs: Option<&mut SeqTracker>) -> String {
    let (src, dst) = (info.src, info.dst);
    let ip = match src {
        IpAddress::Ipv4(_) => "IP",
        IpAddress::Ipv6(_) => "IP6",
    };
    let mut out = match info.transport {
        Transport::Tcp {
            src_port, dst_port, ..
        } => format!(
            "{ip} TCP {} > {}: {}",
            endpoint((src, src_port)),
            endpoint((dst, dst_port)),
            tcp_body(info, seqs)
        ),
        Transport::Udp {
            src_port,
            dst_port,
            payload_len,
        } => format!(
            "{ip} UDP {} > {}: length {payload_len}",
            endpoint((src, src_port)),
            endpoint((dst, dst_port))
        ),
        Transport::Icmp { .. } => format!(
            "{ip} {} {src} > {dst}: {}",
            protocol_name(icmp_number(src)),
            icmp_body(info, packet)
        ),
        Transport::Fragment => format!(
            "{ip} {} {src} > {dst}: fragment, length {}",
            protocol_name(info.fragment.map_or(0, |f| f.0.protocol)),
            info.len
        ),
        Transport::Other(protocol) => {
            format!(
                "{ip} {} {src} > {dst}: length {}",
                protocol_name(protocol),
                info.len
            )
        }
    };
    if let Some((key, offset)) = info.fragment {
        out.push_str(&format!(", frag id {} offset {offset}", key.id));
    }
    if !info.checksum_ok {
        out.push_str(", bad checksum");
    }
    out
}

/// `[P.], seq 1:6, ack 1, win 64240, length 5`.
fn tcp_body(info: &PacketInfo, seqs: Option<&mut SeqTracker>) -> String {
    let Transport::Tcp {
        src_port,
        dst_port,
        flags,
        seq,
        ack,
        window,
        payload_len,
    } = info.transport
    else {
        return String::new();
    };
    let segment = Segment { flags, seq, ack };
    let (seq, ack) = match seqs {
        Some(seqs) => {
            let (src, dst) = ((info.src, src_port), (info.dst, dst_port));
            seqs.relative(src, dst, &segment, info.checksum_ok)
        }
        None => (seq, flags.ack.then_some(ack)),
    };
    let seq = match payload_len {
        0 => format!("{seq}"),
        len => format!("{seq}:{}", seq.wrapping_add(len as u32)),
    };
    let ack = ack.map(|a| format!(", ack {a}")).unwrap_or_default();
    let flags = flag_string(flags);
    format!("{flags}, seq {seq}{ack}, win {window}, length {payload_len}")
}

fn icmp_number(src: IpAddress) -> u8 {
    match src {
        IpAddress::Ipv4(_) => 1,
        IpAddress::Ipv6(_) => 58,
    }
}

fn protocol_name(protocol: u8) -> String {
    match protocol {
        1 => "ICMP".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        58 => "ICMP6".into(),
        other => format!("proto {other}"),
    }
}

/// `192.168.69.2:7`, `[fd69::2]:7`.
fn endpoint((addr, port): (IpAddress, u16)) -> String {
    crate::flow::endpoint(smoltcp::wire::IpEndpoint::new(addr, port))
}

/// tcpdump's flag letters, in its order: `[S]`, `[S.]`, `[P.]`, `[FP.]`, `[R.]`, `[none]`.
pub(super) fn flag_string(flags: TcpFlags) -> String {
    let letters: String = [
        (flags.fin, 'F'),
        (flags.syn, 'S'),
        (flags.rst, 'R'),
        (flags.psh, 'P'),
        (flags.ack, '.'),
    ]
    .iter()
    .filter_map(|&(on, letter)| on.then_some(letter))
    .collect();
    if letters.is_empty() {
        "[none]".into()
    } else {
        format!("[{letters}]")
    }
}

/// `echo request id 1 seq 2, length 64`, or `type 3 code 3 about UDP a:p > b:q, length 36`.
fn icmp_body(info: &PacketInfo, packet: &[u8]) -> String {
    let Transport::Icmp {
        icmp_type,
        code,
        quoted,
    } = info.transport
    else {
        return String::new();
    };
    // Bytes 4..8 of the ICMP header and the message length, by etherparse's checked slices.
    let (rest, len) = match SlicedPacket::from_ip(packet).map(|p| p.transport) {
        Ok(Some(TransportSlice::Icmpv4(icmp))) => (icmp.bytes5to8(), icmp.slice().len()),
        Ok(Some(TransportSlice::Icmpv6(icmp))) => (icmp.bytes5to8(), icmp.slice().len()),
        _ => return format!("type {icmp_type} code {code}"),
    };
    let [id_hi, id_lo, seq_hi, seq_lo] = rest;
    let (id, seq) = (
        u16::from_be_bytes([id_hi, id_lo]),
        u16::from_be_bytes([seq_hi, seq_lo]),
    );
    let mut out = match (info.src, icmp_type) {
        (IpAddress::Ipv4(_), 8) | (IpAddress::Ipv6(_), 128) => {
            format!("echo request id {id} seq {seq}")
        }
        (IpAddress::Ipv4(_), 0) | (IpAddress::Ipv6(_), 129) => {
            format!("echo reply id {id} seq {seq}")
        }
        _ => format!("type {icmp_type} code {code}"),
    };
    if let Some(q) = quoted {
        out.push_str(&format!(
            " about {} {} > {}",
            protocol_name(q.protocol),
            endpoint((q.src, q.src_port)),
            endpoint((q.dst, q.dst_port))
        ));
    }
    format!("{out}, length {len}")
}
