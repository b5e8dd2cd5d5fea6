//! The packets the fuzz test builds: addresses, templates of valid TCP/UDP/ICMP packets
//! over IPv4 and IPv6, and the mutations applied to them (flips, cuts, lying lengths,
//! fragments).

use etherparse::{
    IpFragOffset, IpHeaders, IpNumber, Ipv4Header, Ipv6Extensions, Ipv6FlowLabel,
    Ipv6FragmentHeader, Ipv6Header, PacketBuilder, PacketBuilderStep, TcpHeader,
};

pub const PEER4: [u8; 4] = [192, 168, 69, 1];
pub const US4: [u8; 4] = [192, 168, 69, 2];
pub const PEER6: [u8; 16] = [0xfd, 0x69, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const US6: [u8; 16] = [0xfd, 0x69, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
/// The health check's client port: fuzzed packets never use it.
pub const CHECK_PORT: u16 = 50000;
/// The peer's ISN in the scripted handshake before the fuzzed packets.
pub const PEER_ISN: u32 = 1000;

/// A destination port: a fixed one, or the port of the stack's own outgoing connection.
#[derive(Debug, Clone, Copy)]
pub enum Port {
    Fixed(u16),
    Client,
}

/// A sequence or ack number: near what the scripted connection expects, or anything.
#[derive(Debug, Clone, Copy)]
pub enum Number {
    Near(i32),
    Any(u32),
}

#[derive(Debug, Clone)]
pub enum Transport {
    Tcp {
        sport: u16,
        dport: Port,
        numbers: (Number, Number),
        flags: u8,
        window: u16,
        options: Vec<u8>,
    },
    Udp {
        sport: u16,
        dport: Port,
    },
    /// Any ICMP message; `quote` makes the payload our own TCP segment, cut to that length.
    Icmp {
        kind: (u8, u8),
        rest: [u8; 4],
        quote: Option<usize>,
    },
    Other(u8),
}

#[derive(Debug, Clone)]
pub struct Template {
    pub v6: bool,
    /// Last octet of a source address other than the peer's (ours, broadcast, ...).
    pub spoofed_source: Option<u8>,
    pub hop_limit: u8,
    /// A lone fragment: offset in 8-byte units and the more-fragments flag.
    pub fragment: Option<(u16, bool)>,
    pub transport: Transport,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone)]
pub enum Mutation {
    Flip {
        at: usize,
        mask: u8,
    },
    Truncate(usize),
    Append(Vec<u8>),
    /// Sets the IP length field; with `fix`, IPv4's header checksum is made right again.
    LieLength {
        value: u16,
        fix: bool,
    },
    /// Cuts the packet into two real fragments, maybe reordered or duplicated, maybe
    /// overlapping (the second starts 8 bytes early).
    Fragmentize {
        cut: usize,
        reverse: bool,
        twice: bool,
        overlap: bool,
    },
    /// Puts an IPv6 extension header right after the fixed header: Hop-by-Hop (0) or
    /// Destination Options (60) with one option of type `option`, a type 0 Routing header
    /// (43) with `segments_left`, or an atomic Fragment header (44).
    Extension {
        kind: u8,
        option: u8,
        segments_left: u8,
    },
}

#[derive(Debug, Clone)]
pub enum Input {
    Raw(Vec<u8>),
    Built(Template, Vec<Mutation>),
}

#[derive(Debug, Clone)]
pub struct Case {
    pub handshake: bool,
    pub connect: bool,
    /// Each input with the milliseconds the clock moves before it.
    pub steps: Vec<(Input, u16)>,
}

pub fn addresses(template: &Template) -> ([u8; 16], [u8; 16]) {
    let widen = |a: [u8; 4]| {
        let mut wide = [0; 16];
        wide[..4].copy_from_slice(&a);
        wide
    };
    let (mut src, dst) = match template.v6 {
        true => (PEER6, US6),
        false => (widen(PEER4), widen(US4)),
    };
    if let Some(last) = template.spoofed_source {
        let at = if template.v6 { 15 } else { 3 };
        src[at] = last;
    }
    (src, dst)
}

pub fn ip_headers(
    template: &Template,
    src: [u8; 16],
    dst: [u8; 16],
) -> PacketBuilderStep<IpHeaders> {
    let (offset, more) = template.fragment.unwrap_or((0, false));
    let offset = IpFragOffset::try_new(offset).unwrap();
    let identification = 0x4242;
    if template.v6 {
        let mut extensions = Ipv6Extensions::default();
        if template.fragment.is_some() {
            let frag = Ipv6FragmentHeader::new(IpNumber::TCP, offset, more, identification);
            extensions.fragment = Some(frag);
        }
        let header = Ipv6Header {
            traffic_class: 0,
            flow_label: Ipv6FlowLabel::ZERO,
            payload_length: 0,
            next_header: IpNumber::TCP,
            hop_limit: template.hop_limit,
            source: src,
            destination: dst,
        };
        return PacketBuilder::ip(IpHeaders::Ipv6(header, extensions));
    }
    let (s, d) = (&src[..4], &dst[..4]);
    let mut header = Ipv4Header::new(
        0,
        template.hop_limit,
        IpNumber::TCP,
        s.try_into().unwrap(),
        d.try_into().unwrap(),
    )
    .unwrap();
    header.identification = identification as u16;
    header.more_fragments = more;
    header.fragment_offset = offset;
    PacketBuilder::ip(IpHeaders::Ipv4(header, Default::default()))
}

/// An IP header with any protocol number and the payload, extension headers or not: etherparse's
/// builder panics on next header 0 without a hop-by-hop header (an etherparse 0.21 bug).
pub fn raw_ip(template: &Template, protocol: IpNumber, out: &mut Vec<u8>) -> std::io::Result<()> {
    let (src, dst) = addresses(template);
    let payload = &template.payload;
    if template.v6 {
        let header = Ipv6Header {
            traffic_class: 0,
            flow_label: Ipv6FlowLabel::ZERO,
            payload_length: payload.len() as u16,
            next_header: protocol,
            hop_limit: template.hop_limit,
            source: src,
            destination: dst,
        };
        header.write(out)?;
    } else {
        let (s, d) = (&src[..4], &dst[..4]);
        let (s, d) = (s.try_into().unwrap(), d.try_into().unwrap());
        let header = Ipv4Header::new(payload.len() as u16, template.hop_limit, protocol, s, d);
        header.unwrap().write(out)?;
    }
    out.extend_from_slice(payload);
    Ok(())
}

/// Flags from the bits of `flags`: FIN, SYN, RST, PSH, ACK, URG, ECE, CWR.
pub fn with_flags(
    tcp: PacketBuilderStep<TcpHeader>,
    flags: u8,
    ack: u32,
) -> PacketBuilderStep<TcpHeader> {
    let setters: [&dyn Fn(PacketBuilderStep<TcpHeader>) -> PacketBuilderStep<TcpHeader>; 8] = [
        &|t| t.fin(),
        &|t| t.syn(),
        &|t| t.rst(),
        &|t| t.psh(),
        &|t| t.ack(ack),
        &|t| t.urg(1),
        &|t| t.ece(),
        &|t| t.cwr(),
    ];
    (0..8)
        .zip(setters)
        .filter(|(bit, _)| flags & (1 << bit) != 0)
        .fold(tcp, |tcp, (_, set)| set(tcp))
}

/// A well-formed IPv4 segment from the peer; `flags` in letters ("S", "P", "F", "R").
pub fn segment(
    sport: u16,
    dport: u16,
    seq: u32,
    ack: Option<u32>,
    flags: &str,
    data: &[u8],
) -> Vec<u8> {
    let mut tcp = PacketBuilder::ipv4(PEER4, US4, 64).tcp(sport, dport, seq, 64240);
    for flag in flags.chars() {
        tcp = match flag {
            'S' => tcp.syn(),
            'F' => tcp.fin(),
            'R' => tcp.rst(),
            'P' => tcp.psh(),
            _ => tcp,
        };
    }
    if let Some(ack) = ack {
        tcp = tcp.ack(ack);
    }
    let mut packet = Vec::new();
    tcp.write(&mut packet, data).unwrap();
    packet
}

/// What an ICMP error quotes: the stack's SYN to the peer's port 80, cut to `len` bytes.
pub fn quoted_segment(v6: bool, client_port: u16, len: usize) -> Vec<u8> {
    let ip = match v6 {
        true => PacketBuilder::ipv6(US6, PEER6, 64),
        false => PacketBuilder::ipv4(US4, PEER4, 64),
    };
    let mut packet = Vec::new();
    ip.tcp(client_port, 80, 1, 1000)
        .syn()
        .write(&mut packet, &[])
        .unwrap();
    packet.truncate(len);
    packet
}

/// Applies one mutation; a packet may become several (fragments).
pub fn mutate(packets: Vec<Vec<u8>>, mutation: &Mutation) -> Vec<Vec<u8>> {
    packets
        .into_iter()
        .flat_map(|mut packet| {
            match mutation {
                Mutation::Flip { at, mask } => {
                    let len = packet.len().max(1);
                    if let Some(byte) = packet.get_mut(at % len) {
                        *byte ^= mask;
                    }
                }
                Mutation::Truncate(len) => packet.truncate(*len),
                Mutation::Append(bytes) => packet.extend_from_slice(bytes),
                Mutation::LieLength { value, fix } => lie_length(&mut packet, *value, *fix),
                Mutation::Extension {
                    kind,
                    option,
                    segments_left,
                } => insert_extension(&mut packet, *kind, *option, *segments_left),
                Mutation::Fragmentize {
                    cut,
                    reverse,
                    twice,
                    overlap,
                } => {
                    let mut pieces =
                        fragmentize_overlapping(&packet, *cut, *overlap).unwrap_or(vec![packet]);
                    if *reverse {
                        pieces.reverse();
                    }
                    if *twice && let Some(first) = pieces.first().cloned() {
                        pieces.push(first);
                    }
                    return pieces;
                }
            }
            vec![packet]
        })
        .collect()
}

/// See [`Mutation::Extension`]; leaves anything but IPv6 alone.
pub fn insert_extension(packet: &mut Vec<u8>, kind: u8, option: u8, segments_left: u8) {
    if packet.len() < 40 || packet[0] >> 4 != 6 {
        return;
    }
    let next = packet[6];
    let header: Vec<u8> = match kind {
        43 => [&[next, 2, 0, segments_left, 0, 0, 0, 0][..], &[0x20; 16]].concat(),
        44 => vec![next, 0, 0, 0, 0, 0, 0x42, 0x42],
        _ => vec![next, 0, option, 4, 1, 2, 3, 4],
    };
    packet[6] = kind;
    let len = u16::from_be_bytes([packet[4], packet[5]]).wrapping_add(header.len() as u16);
    packet[4..6].copy_from_slice(&len.to_be_bytes());
    packet.splice(40..40, header);
}

pub fn lie_length(packet: &mut [u8], value: u16, fix: bool) {
    let v6 = packet.first().is_some_and(|b| b >> 4 == 6);
    let at = if v6 { 4 } else { 2 };
    if let Some(field) = packet.get_mut(at..at + 2) {
        field.copy_from_slice(&value.to_be_bytes());
    }
    if fix
        && !v6
        && let Ok((header, _)) = Ipv4Header::from_slice(packet)
    {
        let checksum = header.calc_header_checksum().to_be_bytes();
        if let Some(field) = packet.get_mut(10..12) {
            field.copy_from_slice(&checksum);
        }
    }
}

/// Two fragments of `packet`'s IP payload, cut at `cut` rounded down to 8 bytes.
pub fn fragmentize(packet: &[u8], cut: usize) -> Option<Vec<Vec<u8>>> {
    fragmentize_overlapping(packet, cut, false)
}

/// [`fragmentize`], the second fragment starting 8 bytes early if `overlap` (and it can).
pub fn fragmentize_overlapping(packet: &[u8], cut: usize, overlap: bool) -> Option<Vec<Vec<u8>>> {
    let mut pieces = Vec::new();
    if let Ok((header, rest)) = Ipv4Header::from_slice(packet) {
        let cut = (cut % rest.len().max(1)) / 8 * 8;
        let second = if overlap { cut.saturating_sub(8) } else { cut };
        for (offset, more, data) in [(0, true, &rest[..cut]), (second, false, &rest[second..])] {
            let mut fragment = header.clone();
            fragment.more_fragments = more;
            fragment.fragment_offset = IpFragOffset::try_new((offset / 8) as u16).ok()?;
            fragment.set_payload_len(data.len()).ok()?;
            let mut out = Vec::new();
            fragment.write(&mut out).ok()?;
            out.extend_from_slice(data);
            pieces.push(out);
        }
        return Some(pieces);
    }
    let (header, rest) = Ipv6Header::from_slice(packet).ok()?;
    let cut = (cut % rest.len().max(1)) / 8 * 8;
    let second = if overlap { cut.saturating_sub(8) } else { cut };
    for (offset, more, data) in [(0, true, &rest[..cut]), (second, false, &rest[second..])] {
        let offset = IpFragOffset::try_new((offset / 8) as u16).ok()?;
        let fragment = Ipv6FragmentHeader::new(header.next_header, offset, more, 7);
        let mut ip = header.clone();
        ip.next_header = IpNumber::IPV6_FRAGMENTATION_HEADER;
        ip.set_payload_length(8 + data.len()).ok()?;
        let mut out = Vec::new();
        ip.write(&mut out).ok()?;
        fragment.write(&mut out).ok()?;
        out.extend_from_slice(data);
        pieces.push(out);
    }
    Some(pieces)
}
