"""The contract's WebSocket echo as a Locust user, for :mod:`sobranie_bench.loadgen`.

Each user holds one connection (its own token, so the per-user rate limit is never the
bottleneck), sends ``echo`` with a 48-byte pad, waits for the reply, parses it and reports the
round trip to Locust's statistics; ``constant_throughput`` paces each user at its share of the
offered rate. websocket-client's blocking socket is made cooperative by Locust's gevent.
Configured by environment: ``SOBRANIE_LOADGEN_TOKENS`` (a file, one token a line),
``SOBRANIE_LOADGEN_USER_RATE`` (echoes per second per user), ``SOBRANIE_LOADGEN_PAD``,
``SOBRANIE_LOADGEN_CA`` (a CA certificate for https://; empty for plaintext).
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path

import websocket
from locust import User, constant_throughput, task

TOKENS = itertools.cycle(Path(os.environ["SOBRANIE_LOADGEN_TOKENS"]).read_text().split())
PAD = os.environ["SOBRANIE_LOADGEN_PAD"]
CA = os.environ.get("SOBRANIE_LOADGEN_CA", "")


class EchoUser(User):
    wait_time = constant_throughput(float(os.environ["SOBRANIE_LOADGEN_USER_RATE"]))

    def on_start(self) -> None:
        assert self.host is not None
        url = self.host.replace("http", "ws", 1) + "/ws?token=" + next(TOKENS)
        self.ws = websocket.create_connection(url, sslopt={"ca_certs": CA} if CA else None)
        self.ws.recv()  # hello

    @task
    def echo(self) -> None:
        start = time.perf_counter()
        self.ws.send(json.dumps({"op": "echo", "data": {"t": time.time_ns(), "pad": PAD}}))
        reply = self.ws.recv()
        ok = json.loads(reply).get("type") == "echo"
        self.environment.events.request.fire(
            request_type="WS", name="echo", response_time=(time.perf_counter() - start) * 1000,
            response_length=len(reply), context={},
            exception=None if ok else ValueError(f"not an echo: {reply[:80]!r}"))

    def on_stop(self) -> None:
        self.ws.close()
