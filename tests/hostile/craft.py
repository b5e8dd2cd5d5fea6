#!/usr/bin/python3
"""Hostile packets for tests/hostile_tun.rs, written straight into a TUN device.

The packets go out through an AF_PACKET socket bound to the host side of the TUN, so
the kernel's IP layer never sees (or fixes) them: the stack reads exactly these bytes.
Run inside the test's network namespace; every address is on the TUN's own subnets.

Usage:
  craft.py names                     print the catalog's packet names, one per line
  craft.py serve IFACE               read packet names on stdin; send each one and
                                     answer "sent NAME BYTES" (or "error ...") on stdout
  craft.py segment IFACE SRC SPORT DST DPORT FLAGS SEQ ACK
                                     send one TCP segment (FLAGS like "R", "S", "RA")
  craft.py fragments IFACE COUNT [DPORT]
                                     send COUNT first fragments of UDP datagrams that
                                     never complete, from 192.168.69.100-250, ids 1..COUNT
  craft.py probes                    print the names of the IP-rule probes (PROBES)
  craft.py closed IFACE COUNT        send COUNT UDP datagrams to closed port 9 over IPv6
                                     as fast as possible; answer "sent COUNT in SECONDS"

`serve` sends catalog packets and probes alike; a probe may be several packets.
"""

import socket
import struct
import sys

import time

from scapy.all import (
    ICMP,
    IP,
    TCP,
    UDP,
    HBHOptUnknown,
    ICMPv6EchoRequest,
    IPOption_RR,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    PadN,
    Raw,
    raw,
)

SRC4, DST4 = "192.168.69.1", "192.168.69.2"
SRC6, DST6 = "fd69::1", "fd69::2"
ECHO = 7


def syn4(sport, **ip):
    return IP(src=ip.pop("src", SRC4), dst=ip.pop("dst", DST4), **ip) / TCP(
        sport=sport, dport=ECHO, flags="S", seq=1000
    )


def syn6(sport, **ip):
    return IPv6(src=ip.pop("src", SRC6), dst=ip.pop("dst", DST6), **ip) / TCP(
        sport=sport, dport=ECHO, flags="S", seq=1000
    )


def udp4(sport, **udp):
    return IP(src=SRC4, dst=DST4) / UDP(sport=sport, dport=ECHO, **udp) / Raw(b"x" * 32)


def with_bad_checksum(packet, layer):
    """`packet` with `layer`'s checksum set to anything but the right value."""
    field = "cksum" if layer is ICMPv6EchoRequest else "chksum"
    correct = getattr(packet.__class__(raw(packet))[layer], field)
    setattr(packet[layer], field, (correct ^ 0x5A5A) or 1)
    return raw(packet)


def truncated_v4(packet, total):
    """The first `total` bytes of `packet`, with the IP length and checksum made to fit."""
    packet = packet.copy()
    packet[IP].len = total
    packet[IP].chksum = None
    return raw(packet)[:total]


def tcp_with_options(sport, options):
    """A SYN whose option bytes are exactly `options` (padded to 32-bit words)."""
    options += b"\x00" * (-len(options) % 4)
    tcp = TCP(sport=sport, dport=ECHO, flags="S", seq=1000, dataofs=5 + len(options) // 4)
    return raw(IP(src=SRC4, dst=DST4) / tcp / Raw(options))


def tcp_data_offset(sport, words):
    return raw(IP(src=SRC4, dst=DST4) / TCP(sport=sport, dport=ECHO, flags="S", dataofs=words))


CATALOG = {
    # Checksums.
    "ip-header-checksum": lambda: raw(IP(src=SRC4, dst=DST4, chksum=0xDEAD) / TCP(sport=41001, dport=ECHO, flags="S")),
    "tcp-checksum": lambda: with_bad_checksum(syn4(41002), TCP),
    "udp-checksum": lambda: with_bad_checksum(udp4(41003), UDP),
    "icmp-checksum": lambda: with_bad_checksum(IP(src=SRC4, dst=DST4) / ICMP(id=7, seq=1) / Raw(b"p" * 56), ICMP),
    "tcp6-checksum": lambda: with_bad_checksum(syn6(41005), TCP),
    "udp6-checksum": lambda: with_bad_checksum(IPv6(src=SRC6, dst=DST6) / UDP(sport=41006, dport=ECHO) / Raw(b"x" * 32), UDP),
    "udp6-zero-checksum": lambda: raw(IPv6(src=SRC6, dst=DST6) / UDP(sport=41007, dport=ECHO, chksum=0) / Raw(b"x" * 32)),
    "icmp6-checksum": lambda: with_bad_checksum(IPv6(src=SRC6, dst=DST6) / ICMPv6EchoRequest(id=7, seq=1, data=b"p" * 56), ICMPv6EchoRequest),
    # Lengths that lie, headers that do not fit.
    "ip-total-length-long": lambda: raw(syn4(41010, len=200)),
    "ip-total-length-short": lambda: raw(syn4(41011, len=16)),
    "ip-total-length-cuts-tcp": lambda: raw(syn4(41012, len=30)),
    "ihl-3": lambda: raw(syn4(41013, ihl=3)),
    "ihl-15": lambda: raw(syn4(41014, ihl=15)),
    "ip-version-5": lambda: raw(syn4(41015, version=5)),
    "one-byte": lambda: b"\x45",
    "truncated-ip-header": lambda: raw(syn4(41017))[:12],
    "truncated-tcp-header": lambda: truncated_v4(syn4(41018), 30),
    "truncated-udp-header": lambda: truncated_v4(udp4(41019), 24),
    "truncated-icmp-header": lambda: truncated_v4(IP(src=SRC4, dst=DST4) / ICMP(), 22),
    "tcp-data-offset-4": lambda: tcp_data_offset(41021, 4),
    "tcp-data-offset-15": lambda: tcp_data_offset(41022, 15),
    "udp-length-long": lambda: raw(udp4(41023, len=500)),
    "udp-length-below-8": lambda: raw(udp4(41024, len=4)),
    "ip6-payload-length-long": lambda: raw(syn6(41025, plen=500)),
    "ip6-truncated-header": lambda: raw(syn6(41026))[:30],
    "tcp-option-length-0": lambda: tcp_with_options(41027, b"\x02\x00\x05\xb4"),
    "tcp-option-past-header": lambda: tcp_with_options(41028, b"\x02\x28\x05\xb4"),
    "tcp-option-window-scale-short": lambda: tcp_with_options(41029, b"\x03\x02\x07\x00"),
    # Sources no peer can have.
    "src-equals-dst": lambda: raw(syn4(41040, src=DST4)),
    "src-limited-broadcast": lambda: raw(syn4(41041, src="255.255.255.255")),
    "src-subnet-broadcast": lambda: raw(syn4(41042, src="192.168.69.255")),
    "src-multicast": lambda: raw(syn4(41043, src="224.0.0.1")),
    "src-unspecified": lambda: raw(syn4(41044, src="0.0.0.0")),
    "src-loopback": lambda: raw(syn4(41045, src="127.0.0.1")),
    "src6-multicast": lambda: raw(syn6(41046, src="ff02::1")),
    "src6-unspecified": lambda: raw(syn6(41047, src="::")),
    "src6-equals-dst": lambda: raw(syn6(41048, src=DST6)),
    # Not ours, not spoken.
    "dst-other-host": lambda: raw(syn4(41050, dst="192.168.69.3")),
    "ip-protocol-253": lambda: raw(IP(src=SRC4, dst=DST4, proto=253) / Raw(b"z" * 20)),
}


def udp6_behind(sport, *headers, dst=DST6):
    """A datagram to the echo port from `sport`, behind IPv6 extension `headers`."""
    packet = IPv6(src=SRC6, dst=dst)
    for header in headers:
        packet = packet / header
    return raw(packet / UDP(sport=sport, dport=ECHO) / Raw(b"probe"))


def option(kind):
    """A Destination Options header with one option of type `kind` and 4 data bytes."""
    return IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=kind, optdata=b"\x01\x02\x03\x04")])


def fragments6(ident, payload, pieces):
    """IPv6 fragments of an echo request whose ICMPv6 bytes are `payload`: each piece is
    (offset, bytes, more)."""
    return [
        raw(IPv6(src=SRC6, dst=DST6) / IPv6ExtHdrFragment(nh=58, offset=offset // 8, m=more, id=ident) / Raw(data))
        for offset, data, more in pieces
    ]


def overlapping6():
    """Bytes 16..24 of the echo request twice, the second time different (RFC 5722)."""
    # scapy fills the checksum only with the IPv6 header around it.
    body = raw(IPv6(src=SRC6, dst=DST6) / ICMPv6EchoRequest(id=0x1120, seq=1, data=b"\xaa" * 40))[40:]
    return fragments6(0x1120, body, [(0, body[:24], 1), (16, b"\xbb" * 24, 1), (40, body[40:], 0)])


def ack_to_syn4():
    """RFC 1858 section 4: a whole ACK in the first fragment, its flags rewritten into a SYN's
    by a second fragment at offset 8."""
    def segment(flags):
        return raw(IP(src=SRC4, dst=DST4) / TCP(sport=41121, dport=ECHO, flags=flags, seq=1000, ack=1) / Raw(b"data"))

    ack, syn = segment("A"), segment("S")
    first = IP(src=SRC4, dst=DST4, id=0x1121, flags="MF", frag=0, proto=6) / Raw(ack[20:])
    second = IP(src=SRC4, dst=DST4, id=0x1121, frag=1, proto=6) / Raw(syn[28:])
    return [raw(first), raw(second)]


# IP rules a host keeps (issue 14): each probe uses its own port or echo id, so its answer
# can be told apart in one capture.
PROBES = {
    "echo-ttl-0": lambda: [raw(IP(src=SRC4, dst=DST4, ttl=0) / ICMP(id=0x1101, seq=1) / Raw(b"p" * 8))],
    "echo6-hop-limit-0": lambda: [raw(IPv6(src=SRC6, dst=DST6, hlim=0) / ICMPv6EchoRequest(id=0x1102, seq=1))],
    "dest-options-padding": lambda: [udp6_behind(41103, IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\0\0")]))],
    "dest-options-skip": lambda: [udp6_behind(41104, option(0x1E))],
    "hop-by-hop-and-dest-options": lambda: [udp6_behind(41105, IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt())],
    "routing-type-0-segments-left-0": lambda: [udp6_behind(41106, IPv6ExtHdrRouting(type=0, segleft=0, addresses=["2001:db8::9"]))],
    "atomic-fragment": lambda: [raw(IPv6(src=SRC6, dst=DST6) / IPv6ExtHdrFragment(offset=0, m=0, id=0x1107) / ICMPv6EchoRequest(id=0x1107, seq=1))],
    "dest-options-discard": lambda: [udp6_behind(41108, option(0x5E))],
    "dest-options-report": lambda: [udp6_behind(41109, option(0x9E))],
    "routing-type-0-segments-left-1": lambda: [udp6_behind(41110, IPv6ExtHdrRouting(type=0, segleft=1, addresses=["2001:db8::9"]))],
    "echo-subnet-broadcast": lambda: [raw(IP(src=SRC4, dst="192.168.69.255") / ICMP(id=0x1111, seq=1))],
    "echo-limited-broadcast": lambda: [raw(IP(src=SRC4, dst="255.255.255.255") / ICMP(id=0x1112, seq=1))],
    "echo-record-route": lambda: [raw(IP(src=SRC4, dst=DST4, options=IPOption_RR(routers=["0.0.0.0"] * 9)) / ICMP(id=0x1113, seq=1))],
    "overlapping-fragments6": overlapping6,
    "overlapping-fragments4-ack-to-syn": ack_to_syn4,
}


def closed(iface, count):
    """`count` datagrams to a closed port, back to back: the ICMP error rate limit's test."""
    link = open_link(iface)
    packets = [raw(IPv6(src=SRC6, dst=DST6) / UDP(sport=42000 + i, dport=9) / Raw(b"closed")) for i in range(int(count))]
    started = time.monotonic()
    for packet in packets:
        link.send(packet)
    print(f"sent {count} in {time.monotonic() - started:.3f}", flush=True)


def open_link(iface):
    link = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    link.bind((iface, 0))
    return link


def serve(iface):
    link = open_link(iface)
    for line in sys.stdin:
        name = line.strip()
        if not name:
            continue
        if name in CATALOG:
            packets = [CATALOG[name]()]
        elif name in PROBES:
            packets = PROBES[name]()
        else:
            print(f"error unknown packet {name}", flush=True)
            continue
        for packet in packets:
            link.send(packet)
        print(f"sent {name} {sum(len(p) for p in packets)}", flush=True)


def segment(iface, src, sport, dst, dport, flags, seq, ack):
    ip = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
    seq, ack = int(seq) % (1 << 32), int(ack) % (1 << 32)
    tcp = TCP(sport=int(sport), dport=int(dport), flags=flags, seq=seq, ack=ack, window=65535)
    packet = raw(ip / tcp)
    open_link(iface).send(packet)
    print(f"sent {flags} seq {seq} ack {ack}", flush=True)


def ipv4_checksum(header):
    total = sum(struct.unpack("!10H", header))
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


def fragments(iface, count, dport=ECHO):
    """First fragments (MF set, offset 0) of 3000-byte UDP datagrams; the rest never comes."""
    link = open_link(iface)
    payload = struct.pack("!HHHH", 40000, int(dport), 8 + 3000, 0) + b"f" * 992
    dst = socket.inet_aton(DST4)
    for i in range(int(count)):
        src = socket.inet_aton(f"192.168.69.{100 + i % 151}")
        ident = 1 + i % 0xFFFF
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0x2000, 64, 17, 0, src, dst)
        header = header[:10] + struct.pack("!H", ipv4_checksum(header)) + header[12:]
        link.send(header + payload)
    print(f"sent {count} fragments", flush=True)


def main(argv):
    commands = {
        "names": (0, lambda: print("\n".join(CATALOG))),
        "serve": (1, serve),
        "segment": (8, segment),
        "fragments": (2, fragments),
        "probes": (0, lambda: print("\n".join(PROBES))),
        "closed": (2, closed),
    }
    if len(argv) < 2 or argv[1] not in commands:
        sys.exit(__doc__)
    arity, command = commands[argv[1]]
    args = argv[2:]
    if len(args) not in (arity, arity + (argv[1] == "fragments")):
        sys.exit(__doc__)
    command(*args)


if __name__ == "__main__":
    main(sys.argv)
