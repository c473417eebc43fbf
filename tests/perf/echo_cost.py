"""Server CPU per echo and memory per idle connection of the reference servers.

Not a test (pytest does not collect it: no ``test_`` prefix); a benchmark with a main::

    python tests/perf/echo_cost.py echo --server ws --rate 2000
    python tests/perf/echo_cost.py echo --server ws --saturate
    python tests/perf/echo_cost.py fanout --server ws --rate 200 --subscribers 50
    python tests/perf/echo_cost.py idle --server sse --levels 0,500,1000,2000

The server is ``sobranie-bench serve KIND --port 0 --json``, started as its own process (so its
CPU and RSS are its own). This process is the client, and it is kept as light as a Python client
can be: raw asyncio protocols (uvloop when installed), a WebSocket handshake by hand carrying the
JWT in ``?token=``, one pre-masked echo frame sent again and again, replies counted by their frame
headers without decoding them. The client's own CPU is reported next to the server's, so a run
where the client was the bottleneck shows.

- ``echo``: N connections (default 50) send the contract's ``echo`` op with a 48-byte ``data``
  either open-loop at a fixed total rate (``--rate``, sends never wait for replies) or, with
  ``--saturate``, closed-loop with a few echoes in flight per connection (maximum throughput).
  Server CPU per echo = (user + system CPU of the server process over the window) / echoes
  answered in the window, after a warm-up.
- ``fanout``: one publisher at a fixed rate, N WebSocket subscribers (default 50) on one
  channel: server CPU per delivered message and per publish.
- ``idle``: open idle connections in steps (WebSocket: upgraded and subscribed to one channel;
  SSE: the stream open on one channel, ``hello`` read), read the server's RSS at each step, and
  fit a line: the slope is the memory per idle connection.

Everything goes to 127.0.0.1, every loop is bounded in time, and the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass

import psutil

SECRET = "perf-secret-of-at-least-thirty-two-bytes!"
PAYLOAD = "a" * 48
"""The echo's ``data``: a 48-byte string."""
KEY = base64.b64encode(os.urandom(16)).decode()
START_TIMEOUT = 30.0


def _token(user: str) -> str:
    from sobranie_contract import tokens

    return tokens.make_token(user, SECRET, 3600)


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --- the server process ----------------------------------------------------------------------


class Server:
    """``sobranie-bench serve KIND --port 0 --json`` as a child process (``bare-aiohttp``: the
    reference echo server below, this same file)."""

    def __init__(self, kind: str, extra: list[str] | None = None,
                 profile: str | None = None) -> None:
        if kind == "bare-aiohttp":
            cmd = [os.path.abspath(__file__), "bare-server"]
        else:  # ws@elysia, sse@elysia: the transport on the Bun + Elysia server
            cmd = ["-m", "sobranie_bench.cli", "serve", kind.partition("@")[2] or kind,
                   "--port", "0", "--json",
                   "--jwt-secret", SECRET, *(extra or [])]
        if profile:  # pyinstrument (the dev extra) writes its text report when the server stops
            cmd = ["-m", "pyinstrument", "-r", "text", "--show-all", "-o", profile, *cmd]
        cmd = [sys.executable, *cmd]
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True,
                                     env=env)  # inherits the raised RLIMIT_NOFILE
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"server {kind} did not start (exit {self.proc.wait(5)})")
        info = json.loads(line)
        self.url: str = info["url"]
        self.host, port = self.url.removeprefix("http://").rsplit(":", 1)
        self.port = int(port)
        self.ps = psutil.Process(int(info.get("pid", self.proc.pid)))  # Bun: serve's child

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


def _client_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# --- a minimal WebSocket client (RFC 6455 by hand) ----------------------------------------------


def masked_text_frame(text: str, mask: bytes = b"\x5a\x17\xc3\x3e") -> bytes:
    data = text.encode()
    n = len(data)
    if n < 126:
        header = bytes([0x81, 0x80 | n])
    elif n < 65536:
        header = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        header = bytes([0x81, 0x80 | 127]) + n.to_bytes(8, "big")
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


ECHO_FRAME = masked_text_frame(json.dumps({"op": "echo", "data": PAYLOAD},
                                          separators=(",", ":")))
SUBSCRIBE_FRAME = masked_text_frame('{"op":"subscribe","channel":"feed:idle"}')


class WsConn(asyncio.Protocol):
    """Counts text frames; the first is ``hello``, the rest are replies."""

    def __init__(self, host: str, path: str, deflate: bool,
                 on_reply: Callable[[WsConn], None] | None = None) -> None:
        self.request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n"
                        "Sec-WebSocket-Version: 13\r\n"
                        + ("Sec-WebSocket-Extensions: permessage-deflate; "
                           "client_max_window_bits\r\n" if deflate else "")
                        + "\r\n").encode()
        self.on_reply = on_reply
        self.buf = bytearray()
        self.upgraded = False
        self.deflate_accepted = False
        self.replies = 0
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).decode("latin-1")
            del buf[:end + 4]
            if not head.startswith("HTTP/1.1 101"):
                self._fail(RuntimeError(head.splitlines()[0]))
                return
            self.upgraded = True
            self.deflate_accepted = "permessage-deflate" in head.lower()
        pos, n = 0, len(buf)
        while n - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length, head_len = b1 & 0x7F, 2
            if length == 126:
                if n - pos < 4:
                    break
                length, head_len = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif length == 127:
                if n - pos < 10:
                    break
                length, head_len = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if n - pos < head_len + length:
                break
            pos += head_len + length
            opcode = b0 & 0x0F
            if opcode == 1:
                if not self.ready.done():
                    self.ready.set_result(None)
                else:
                    self.replies += 1
                    if self.on_reply is not None:
                        self.on_reply(self)
            elif opcode == 8:
                self._fail(RuntimeError(f"server closed: {bytes(buf[pos - length:pos])!r}"))
        del buf[:pos]

    def _fail(self, exc: Exception) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc or ConnectionError("closed before hello"))

    def send(self, frame: bytes) -> None:
        assert self.transport is not None
        self.transport.write(frame)


class SseConn(asyncio.Protocol):
    """An SSE stream held open; ready once the ``hello`` event arrived."""

    def __init__(self, host: str, path: str) -> None:
        self.request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"
        self.buf = bytearray()
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request.encode())  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.ready.done():
            return
        self.buf += data
        if b"event: hello" in self.buf:
            if not self.buf.startswith(b"HTTP/1.1 200"):
                self.ready.set_exception(RuntimeError(bytes(self.buf[:80]).decode()))
            else:
                self.ready.set_result(None)
            self.buf.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc or ConnectionError("closed before hello"))


async def _open(server: Server, kind: str, n: int, *, deflate: bool = False,
                subscribe: bool = False, batch: int = 100,
                on_reply: Callable[[WsConn], None] | None = None) -> list[asyncio.Protocol]:
    loop = asyncio.get_running_loop()
    host = f"{server.host}:{server.port}"
    conns: list[asyncio.Protocol] = []
    for start in range(0, n, batch):
        made = []
        for i in range(start, start + min(batch, n - start)):
            # a user per connection: the servers limit the connections one user may hold
            tok = _token(f"perf-{len(_OPENED)}-{i}")
            if kind == "sse":
                proto: asyncio.Protocol = SseConn(host, f"/sse?channels=feed:idle&token={tok}")
            else:
                proto = WsConn(host, f"/ws?token={tok}", deflate, on_reply)
            made.append(proto)
            await loop.create_connection(lambda p=proto: p, server.host, server.port)
        await asyncio.wait_for(asyncio.gather(*(p.ready for p in made)),  # type: ignore
                               START_TIMEOUT)
        if subscribe:
            for p in made:
                p.send(SUBSCRIBE_FRAME)  # type: ignore[attr-defined]
        conns += made
    _OPENED.append(n)
    return conns


_OPENED: list[int] = []
"""Sizes of the batches opened so far (so every batch's users are new ones)."""


def _close(conns: list[asyncio.Protocol]) -> None:
    for p in conns:
        t = p.transport  # type: ignore[attr-defined]
        if t is not None:
            t.close()


# --- echo cost -------------------------------------------------------------------------------


@dataclass
class EchoResult:
    server: str
    mode: str
    """open-loop at a fixed rate, or closed-loop saturation."""
    conns: int
    offered_per_s: float | None
    echoes: int
    seconds: float
    echoes_per_s: float
    server_cpu_us_per_echo: float
    server_cpu_util: float
    """Server CPU seconds per wall second over the window (1.0 = one core)."""
    client_cpu_util: float
    deflate_offered: bool
    deflate_accepted: bool
    client_bound: bool


async def echo_cost(server: Server, kind: str, conns: int, rate: float | None, seconds: float,
                    warmup: float, window: int, deflate: bool) -> EchoResult:
    loop = asyncio.get_running_loop()
    saturate = rate is None

    def again(p: WsConn) -> None:
        p.send(ECHO_FRAME)

    ws = [p for p in await _open(server, kind, conns, deflate=deflate,
                                 on_reply=again if saturate else None)]
    ws_conns: list[WsConn] = ws  # type: ignore[assignment]
    deadline = loop.time() + warmup + seconds
    done = loop.create_future()

    if saturate:
        for p in ws_conns:
            for _ in range(window):
                p.send(ECHO_FRAME)
    else:
        assert rate is not None
        t0, sent, tick = loop.time(), 0, 0.005

        def pace() -> None:
            nonlocal sent
            now = loop.time()
            if now >= deadline:
                return
            due = int((now - t0) * rate) - sent
            for i in range(due):
                ws_conns[(sent + i) % conns].send(ECHO_FRAME)
            sent += due
            loop.call_at(now + tick, pace)

        pace()

    await asyncio.sleep(warmup)
    c0, s0, r0, w0 = _client_cpu(), server.cpu(), sum(p.replies for p in ws_conns), loop.time()
    await asyncio.sleep(seconds)
    c1, s1, r1, w1 = _client_cpu(), server.cpu(), sum(p.replies for p in ws_conns), loop.time()
    if saturate:
        for p in ws_conns:
            p.on_reply = None
    done.cancel()
    _close(ws)  # type: ignore[arg-type]
    echoes, wall = r1 - r0, w1 - w0
    client_util, server_util = (c1 - c0) / wall, (s1 - s0) / wall
    return EchoResult(
        server=kind, mode="closed-loop saturation" if saturate else "open-loop",
        conns=conns, offered_per_s=rate, echoes=echoes, seconds=round(wall, 3),
        echoes_per_s=round(echoes / wall, 1),
        server_cpu_us_per_echo=round((s1 - s0) / max(echoes, 1) * 1e6, 2),
        server_cpu_util=round(server_util, 3), client_cpu_util=round(client_util, 3),
        deflate_offered=deflate, deflate_accepted=any(p.deflate_accepted for p in ws_conns),
        client_bound=client_util > 0.8 and server_util < 0.8)


# --- fan-out cost ---------------------------------------------------------------------------


@dataclass
class FanoutResult:
    server: str
    subscribers: int
    publishes_per_s: float
    deliveries: int
    seconds: float
    deliveries_per_s: float
    server_cpu_us_per_delivery: float
    server_cpu_us_per_publish: float
    server_cpu_util: float
    client_cpu_util: float
    client_bound: bool


def publish_frame(seq: int) -> bytes:
    return masked_text_frame(json.dumps({"op": "publish", "channel": "fan:1",
                                         "data": {"seq": seq, "pad": PAYLOAD}},
                                        separators=(",", ":")))


async def fanout_cost(server: Server, kind: str, subscribers: int, rate: float,
                      seconds: float, warmup: float, deflate: bool) -> FanoutResult:
    """One publisher at ``rate`` publishes/s to a channel with ``subscribers`` WebSocket
    subscribers; server CPU per delivered message."""
    loop = asyncio.get_running_loop()
    subs: list[WsConn] = await _open(server, kind, subscribers,  # type: ignore[assignment]
                                     deflate=deflate)
    for p in subs:
        p.send(masked_text_frame('{"op":"subscribe","channel":"fan:1"}'))
    (pub,) = await _open(server, kind, 1)
    publisher: WsConn = pub  # type: ignore[assignment]
    frame = publish_frame(0)  # the same bytes each time: servers never read data
    deadline = loop.time() + warmup + seconds
    t0, sent, tick = loop.time(), 0, 0.005

    def pace() -> None:
        nonlocal sent
        now = loop.time()
        if now >= deadline:
            return
        due = int((now - t0) * rate) - sent
        for _ in range(due):
            publisher.send(frame)
        sent += due
        loop.call_at(now + tick, pace)

    pace()
    await asyncio.sleep(warmup)
    c0, s0, r0, w0 = _client_cpu(), server.cpu(), sum(p.replies for p in subs), loop.time()
    p0 = publisher.replies
    await asyncio.sleep(seconds)
    c1, s1, r1, w1 = _client_cpu(), server.cpu(), sum(p.replies for p in subs), loop.time()
    p1 = publisher.replies
    _close([*subs, publisher])
    wall, delivered = w1 - w0, r1 - r0
    client_util, server_util = (c1 - c0) / wall, (s1 - s0) / wall
    return FanoutResult(
        server=kind, subscribers=subscribers, publishes_per_s=round((p1 - p0) / wall, 1),
        deliveries=delivered, seconds=round(wall, 3),
        deliveries_per_s=round(delivered / wall, 1),
        server_cpu_us_per_delivery=round((s1 - s0) / max(delivered, 1) * 1e6, 2),
        server_cpu_us_per_publish=round((s1 - s0) / max(p1 - p0, 1) * 1e6, 2),
        server_cpu_util=round(server_util, 3), client_cpu_util=round(client_util, 3),
        client_bound=client_util > 0.8 and server_util < 0.8)


# --- idle memory ------------------------------------------------------------------------------


@dataclass
class IdleResult:
    server: str
    levels: list[int]
    rss_bytes: list[int]
    kib_per_conn: float
    """Slope of the least-squares line through (connections, RSS)."""


async def _settled_rss(server: Server, settle: float) -> int:
    await asyncio.sleep(settle)
    samples = []
    for _ in range(5):
        samples.append(server.rss())
        await asyncio.sleep(0.1)
    return min(samples)


async def idle_memory(server: Server, kind: str, levels: list[int], settle: float,
                      deflate: bool) -> IdleResult:
    transport = kind.partition("@")[0] if kind.startswith("sse") else "ws"
    warm = await _open(server, transport, 50, deflate=deflate, subscribe=transport != "sse")
    await asyncio.sleep(settle)
    _close(warm)
    held: list[asyncio.Protocol] = []
    rss = []
    for level in sorted(levels):
        held += await _open(server, transport, level - len(held), deflate=deflate,
                            subscribe=transport != "sse")
        rss.append(await _settled_rss(server, settle))
    _close(held)
    n = len(levels)
    mx, my = sum(levels) / n, sum(rss) / n
    slope = (sum((x - mx) * (y - my) for x, y in zip(levels, rss))
             / sum((x - mx) ** 2 for x in levels))
    return IdleResult(kind, sorted(levels), rss, round(slope / 1024, 2))


# --- the reference: a bare aiohttp + uvloop JSON echo -----------------------------------------


def bare_server() -> None:
    """JWT checked on the upgrade, ``hello`` first, then json.loads -> json.dumps echo; no hub,
    no limits, no metrics: the floor that the full contract is compared with."""
    import jwt
    import uvloop
    from aiohttp import WSMsgType, web

    async def handle(request: web.Request) -> web.WebSocketResponse:
        try:
            user = jwt.decode(request.query.get("token", ""), SECRET, algorithms=["HS256"])["sub"]
        except jwt.PyJWTError:
            raise web.HTTPUnauthorized() from None
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        await ws.send_str(json.dumps({"type": "hello", "user": user}))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    obj = json.loads(msg.data)
                    await ws.send_str(json.dumps({"type": "echo", "ref": obj.get("ref"),
                                                  "data": obj.get("data")}))
        except ConnectionError:
            pass
        return ws

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/ws", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(json.dumps({"url": f"http://127.0.0.1:{runner.addresses[0][1]}"}), flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    uvloop.install()
    asyncio.run(main())


# --- main ----------------------------------------------------------------------------------


def environment() -> dict[str, str]:
    import aiohttp
    import websockets

    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                       "")
    except OSError:
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    return {"python": platform.python_version(), "aiohttp": aiohttp.__version__,
            "websockets": websockets.__version__, "cpu": cpu, "cores": str(os.cpu_count()),
            "commit": commit}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    e = sub.add_parser("echo", help="server CPU per echo")
    e.add_argument("--server", default="ws",
                   choices=["ws", "ws-websockets", "ws@elysia", "bare-aiohttp"])
    e.add_argument("--conns", type=int, default=50)
    e.add_argument("--rate", type=float, default=2000.0, help="echoes/s offered (open loop)")
    e.add_argument("--saturate", action="store_true", help="closed loop, max throughput")
    e.add_argument("--window", type=int, default=4, help="echoes in flight per connection "
                                                         "(--saturate)")
    e.add_argument("--seconds", type=float, default=10.0)
    e.add_argument("--warmup", type=float, default=3.0)
    e.add_argument("--trials", type=int, default=1, help="fresh server per trial")
    f = sub.add_parser("fanout", help="server CPU per delivered message (one publisher, "
                                      "N subscribers)")
    f.add_argument("--server", default="ws", choices=["ws", "ws-websockets"])
    f.add_argument("--subscribers", type=int, default=50)
    f.add_argument("--rate", type=float, default=200.0, help="publishes/s (open loop)")
    f.add_argument("--seconds", type=float, default=10.0)
    f.add_argument("--warmup", type=float, default=3.0)
    f.add_argument("--trials", type=int, default=1)
    i = sub.add_parser("idle", help="memory per idle connection")
    i.add_argument("--server", default="ws", choices=["ws", "ws-websockets", "sse", "ws@elysia",
                                                      "sse@elysia", "bare-aiohttp"])
    i.add_argument("--levels", default="0,500,1000,2000")
    i.add_argument("--settle", type=float, default=1.0)
    i.add_argument("--trials", type=int, default=1)
    for p in (e, f, i):
        p.add_argument("--deflate", action="store_true",
                       help="offer permessage-deflate in the handshake, as browsers do")
        p.add_argument("--serve-arg", action="append", default=[],
                       help="extra argument for `sobranie-bench serve` (repeat)")
        p.add_argument("--profile", metavar="FILE",
                       help="run the server under pyinstrument, text report to FILE "
                            "(its figures are then not representative)")
    sub.add_parser("bare-server", help="(internal) the reference bare aiohttp echo server")
    args = parser.parse_args(argv)
    if args.what == "bare-server":
        bare_server()
        return 0

    _raise_nofile()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    results: list[dict[str, object]] = []
    for _ in range(args.trials):
        server = Server(args.server, args.serve_arg, args.profile)
        try:
            if args.what == "echo":
                res: EchoResult | FanoutResult | IdleResult = asyncio.run(echo_cost(
                    server, args.server, args.conns, None if args.saturate else args.rate,
                    args.seconds, args.warmup, args.window, args.deflate))
            elif args.what == "fanout":
                res = asyncio.run(fanout_cost(server, args.server, args.subscribers, args.rate,
                                              args.seconds, args.warmup, args.deflate))
            else:
                levels = [int(x) for x in args.levels.split(",")]
                res = asyncio.run(idle_memory(server, args.server, levels, args.settle,
                                              args.deflate))
        finally:
            code = server.stop()
        results.append({**asdict(res), "server_exit": code})
        print(json.dumps(results[-1]), flush=True)
    print(json.dumps({"environment": environment()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
