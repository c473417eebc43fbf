"""The lab's own UDP probe (not ``ping``): round-trip time, loss per direction and rate per
direction, measured end to end between the two namespaces before any load.

``python -m sobranie_bench.netlab.probe serve PORT`` answers in the server namespace;
``python -m sobranie_bench.netlab.probe measure HOST PORT [COUNT]`` prints one JSON line.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import struct
import sys
import time
from typing import Any

PING_INTERVAL_S = 0.002
BURST = 200
BURST_PAYLOAD = 1000
IP_UDP_HEADERS = 28


def serve(port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    pings = 0
    up: list[tuple[float, int]] = []
    while True:
        data, addr = sock.recvfrom(65536)
        kind = data[:1]
        if kind == b"P":
            pings += 1
            sock.sendto(data, addr)
        elif kind == b"U":
            up.append((time.monotonic(), struct.unpack("!I", data[1:5])[0]))
        elif kind == b"S":  # stats: pings seen, the upward burst's packets and span
            first, last = (up[0], up[-1]) if up else ((0.0, 0), (0.0, 0))
            sock.sendto(b"S" + json.dumps({"pings": pings, "up": last[1] - first[1],
                                           "span": last[0] - first[0]}).encode(), addr)
        elif kind == b"B":  # send a burst down, as fast as the socket takes it
            n, size = struct.unpack("!II", data[1:9])
            for i in range(n):
                sock.sendto(b"D" + struct.pack("!I", i) + bytes(size - 5), addr)


def _ask(sock: socket.socket, addr: tuple[str, int], msg: bytes, tries: int = 30) -> bytes:
    """A request repeated until answered (the link loses packets)."""
    for _ in range(tries):
        sock.sendto(msg, addr)
        sock.settimeout(0.5)
        try:
            while True:
                data = sock.recv(65536)
                if data[:1] == msg[:1]:
                    return data
        except TimeoutError:
            continue
    raise TimeoutError(f"no answer to {msg[:1]!r} from {addr}")


def rate_mbit(gaps: int, span: float) -> float:
    """Rate of back-to-back probe packets, ``gaps`` sequence numbers apart from the first to
    the last that arrived, over ``span`` seconds (packets lost between them count: they took
    their time on the bottleneck before the loss)."""
    return gaps * (BURST_PAYLOAD + IP_UDP_HEADERS) * 8 / span / 1e6 if span > 0 else 0.0


def measure(host: str, port: int, count: int = 1000) -> dict[str, Any]:
    addr = (host, port)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(addr)
    _ask(sock, addr, b"S")  # the path works (and ARP-free TUN needs no warm-up)
    sock.setblocking(False)
    rtts: list[float] = []
    start = time.monotonic()
    sent = 0

    def collect() -> None:
        while True:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                return
            if data[:1] == b"P":
                (t,) = struct.unpack("!d", data[5:13])
                rtts.append(time.monotonic() - t)

    while sent < count:
        due = start + sent * PING_INTERVAL_S
        now = time.monotonic()
        if now >= due:
            sock.send(b"P" + struct.pack("!Id", sent, time.monotonic()) + bytes(51))
            sent += 1
        else:
            time.sleep(min(due - now, 0.001))
        collect()
    settle = time.monotonic() + 1.0 + (max(rtts) if rtts else 1.0) * 2
    while time.monotonic() < settle:
        time.sleep(0.01)
        collect()
    sock.setblocking(True)
    stats = json.loads(_ask(sock, addr, b"S")[1:])
    # downward rate: a burst from the server, timed on arrival
    sock.send(b"B" + struct.pack("!II", BURST, BURST_PAYLOAD))
    arrivals: list[tuple[float, int]] = []
    sock.settimeout(1.0)
    try:
        while len(arrivals) < BURST:
            data = sock.recv(65536)
            if data[:1] == b"D":
                arrivals.append((time.monotonic(), struct.unpack("!I", data[1:5])[0]))
    except TimeoutError:
        pass
    # upward rate: a burst to the server, timed there
    for i in range(BURST):
        sock.send(b"U" + struct.pack("!I", i) + bytes(BURST_PAYLOAD - 5))
    time.sleep(1.0)
    up = json.loads(_ask(sock, addr, b"S")[1:])
    up_loss = 1 - stats["pings"] / count
    down_loss = 1 - len(rtts) / stats["pings"] if stats["pings"] else 1.0
    return {"rtt_ms_p50": statistics.median(rtts) * 1e3 if rtts else None,
            "rtt_ms_min": min(rtts) * 1e3 if rtts else None,
            "rtt_ms_max": max(rtts) * 1e3 if rtts else None,
            "loss_up": up_loss, "loss_down": down_loss, "pings": count,
            "down_mbit": rate_mbit(arrivals[-1][1] - arrivals[0][1],
                                   arrivals[-1][0] - arrivals[0][0]) if arrivals else 0.0,
            "up_mbit": rate_mbit(up["up"], up["span"])}


def realtime(priority: int = 40) -> None:
    """Real-time priority when allowed: the probe measures the link, not how long a busy
    machine keeps a Python process waiting for a core."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (OSError, AttributeError):
        pass


if __name__ == "__main__":
    realtime()
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        print(json.dumps(measure(sys.argv[2], int(sys.argv[3]),
                                 *(int(a) for a in sys.argv[4:5]))))
