#!/usr/bin/python3
"""Misbehaving and measuring peers for tests/hostile_tun.rs (Python standard library only).
Run inside the test's network namespace. Every command prints one result line on stdout.

Usage:
  peers.py udp-echo HOST PORT COUNT SIZE
      COUNT datagrams of SIZE random bytes, one at a time; each must come back
      byte-identical (a lost one is resent, at most 3 times). Prints
      "echoed N resent R wrong W lost L".
  peers.py udp-flood HOST PORT SECONDS SIZE
      send SIZE-byte datagrams as fast as the socket takes them for SECONDS, reading
      echoes meanwhile and for 1 s after. Prints "sent S received R wrong W".
  peers.py stall HOST PORT
      TCP: connect, send until the connection takes nothing for 2 s, never read.
      Prints "stalled after N bytes", then holds the connection until stdin closes.
"""

import os
import select
import socket
import sys
import time


def family_of(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def udp_echo(host, port, count, size):
    sock = socket.socket(family_of(host), socket.SOCK_DGRAM)
    sock.connect((host, int(port)))
    sock.settimeout(1.0)
    echoed = resent = wrong = lost = 0
    for _ in range(int(count)):
        payload = os.urandom(int(size))
        for attempt in range(4):
            if attempt:
                resent += 1
            sock.send(payload)
            try:
                answer = sock.recv(65536)
            except socket.timeout:
                continue
            if answer == payload:
                echoed += 1
            else:
                wrong += 1
            break
        else:
            lost += 1
    print(f"echoed {echoed} resent {resent} wrong {wrong} lost {lost}", flush=True)


def udp_flood(host, port, seconds, size):
    sock = socket.socket(family_of(host), socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.connect((host, int(port)))
    sock.setblocking(False)
    payload = bytes(range(256)) * (int(size) // 256) + bytes(int(size) % 256)
    sent = received = wrong = 0
    deadline = time.monotonic() + float(seconds)

    def drain():
        nonlocal received, wrong
        while True:
            try:
                answer = sock.recv(65536)
            except BlockingIOError:
                return
            if answer == payload:
                received += 1
            else:
                wrong += 1

    while time.monotonic() < deadline:
        try:
            sock.send(payload)
            sent += 1
        except BlockingIOError:
            select.select([sock], [sock], [], 0.01)
        except ConnectionRefusedError:
            pass
        if sent % 32 == 0:
            drain()
    linger = time.monotonic() + 1.0
    while time.monotonic() < linger:
        select.select([sock], [], [], 0.05)
        drain()
    print(f"sent {sent} received {received} wrong {wrong}", flush=True)


def stall(host, port):
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.setblocking(False)
    chunk = b"s" * 65536
    sent = 0
    while True:
        _, writable, _ = select.select([], [sock], [], 2.0)
        if not writable:
            break
        try:
            sent += sock.send(chunk)
        except BlockingIOError:
            pass
    print(f"stalled after {sent} bytes", flush=True)
    sys.stdin.read()
    sock.close()


def main(argv):
    commands = {"udp-echo": (4, udp_echo), "udp-flood": (4, udp_flood), "stall": (2, stall)}
    if len(argv) < 2 or argv[1] not in commands or len(argv) - 2 != commands[argv[1]][0]:
        sys.exit(__doc__)
    commands[argv[1]][1](*argv[2:])


if __name__ == "__main__":
    main(sys.argv)
