#!/usr/bin/python3
"""Writes the seed inputs of the ingress fuzz target (fuzz/fuzz_targets/ingress.rs) into
fuzz/seeds/ingress/: one file per IP-rule probe of tests/hostile/craft.py (IPv6 extension
headers, atomic and overlapping fragments, TTL 0, broadcast echo, Record Route) and a burst
to a closed port. Each file is the target's input format: per packet a 2-byte big-endian
length, then the packet. Run from anywhere; needs python3-scapy. Idempotent.

Give the folder to libFuzzer as a second corpus:
  cargo fuzz run ingress --fuzz-dir fuzz fuzz/corpus/ingress fuzz/seeds/ingress
"""

import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "hostile"))

import craft  # noqa: E402  (the probes live with the hostile suite)
from scapy.all import UDP, IPv6, Raw, raw  # noqa: E402


def seed(packets):
    return b"".join(struct.pack("!H", len(p)) + p for p in packets)


def main():
    out = os.path.join(HERE, "ingress")
    os.makedirs(out, exist_ok=True)
    seeds = {name: build() for name, build in craft.PROBES.items()}
    seeds["closed-port-burst"] = [
        raw(IPv6(src=craft.SRC6, dst=craft.DST6) / UDP(sport=42000 + i, dport=9) / Raw(b"closed"))
        for i in range(12)
    ]
    for name, packets in seeds.items():
        with open(os.path.join(out, f"ip-{name}"), "wb") as f:
            f.write(seed(packets))
    print(f"{len(seeds)} seeds in {out}")


if __name__ == "__main__":
    main()
