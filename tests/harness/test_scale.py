"""The harness past one process's limits: preflight refusals that name the limit and the fix,
failures sorted by cause, connections spread over source addresses, workers and server
processes (small counts: the 100k ladder is a benchmark, not a test)."""

from __future__ import annotations

import asyncio
import errno
import json
import resource
import subprocess
import sys
import time

import pytest

from sobranie_bench import scaledoc
from sobranie_bench.clients.base import ClientError
from sobranie_bench.harness.runner import HarnessError, Plan, preflight, run_plan
from sobranie_bench.harness.scenarios import PartContext
from sobranie_bench.harness.scenarios.connections import (
    CLOSE_SECONDS,
    HostLimits,
    cause,
    combine,
    part,
    ramp_seconds,
    source_addresses,
)
from sobranie_bench.harness.scenarios.connections import preflight as check
from tests.conftest import UNIT

HERE = HostLimits(nofile=20000, ports=28232, port_range="32768-60999", somaxconn=4096)


def point(**kw):
    return {"connections": 100000, "connect_rate": 1500, "hold": 1.0, **kw}


def test_preflight_names_the_limit_and_the_fix():
    url = "http://127.0.0.1:1"
    why = check(point(), workers=1, processes=6, url=url, limits=HERE)
    assert "per worker" in why and "20,000" in why and "--set workers=6" in why
    why = check(point(workers=6), workers=1, processes=1, url=url, limits=HERE)
    assert "per server process" in why and "--set processes=6" in why
    why = check(point(workers=6, processes=6), workers=1, processes=1, url=url, limits=HERE)
    assert "ephemeral ports" in why and "32768-60999" in why and "sources=4" in why
    assert check(point(workers=6, processes=6, sources=8), workers=1, processes=1, url=url,
                 limits=HERE) is None
    why = check(point(workers=6, processes=6, sources=8, connect_rate=30000), workers=1,
                processes=1, url=url, limits=HERE)
    assert "somaxconn" in why
    why = check(point(workers=6, sources=8), workers=1, processes=None,
                url="http://10.1.2.3:80", limits=HERE)
    assert "loopback" in why, "a --target's processes are its own; source addresses are not"
    assert check({"connections": 300, "connect_rate": 300}, workers=1, processes=1, url=url,
                 limits=HERE) is None


def test_a_plan_beyond_the_limits_refuses_before_it_starts(tmp_path):
    plan = Plan(profile="ci", transports=("ws",), scenarios=("connections",), out=tmp_path,
                overrides=(("connections", 10**6),))
    with pytest.raises(HarnessError, match=r"connections .*needs .* open files per worker"):
        preflight(plan)
    with pytest.raises(HarnessError, match="per worker"):
        asyncio.run(run_plan(plan))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.json")), \
        "nothing ran"


def test_the_cli_refuses_in_one_line_with_the_fix(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "sobranie_bench.cli", "run", "--scenarios", "connections",
         "--transports", "ws", "--out", str(tmp_path), "--set", "connections=1000000"],
        capture_output=True, text=True, timeout=12 * UNIT, check=False)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "hard nofile limit" in done.stderr, done.stderr


@pytest.mark.parametrize(("exc", "expected"), [
    (ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed"), "refused"),
    (ClientError("cannot reach http://x: [Errno 111] Connect call failed ('127.0.0.1', 1)"),
     "refused"),
    (ConnectionResetError(errno.ECONNRESET, "reset by peer"), "reset"),
    (ClientError("connection lost during the upgrade: None"), "reset"),
    (TimeoutError(), "timeout"),
    (OSError(errno.EMFILE, "Too many open files"), "fd_limit"),
    (ClientError("cannot reach http://x: [Errno 24] Too many open files"), "fd_limit"),
    (OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address"), "ports"),
    (ClientError("WebSocket upgrade refused: HTTP 503 Service Unavailable: {...}"),
     "server_full"),
    (ValueError("what"), "other"),
])
def test_failures_are_sorted_by_cause(exc, expected):
    assert cause(exc) == expected


def test_source_addresses_only_on_loopback():
    assert source_addresses("http://127.0.0.1:9", 3) == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    assert source_addresses("http://127.0.0.1:9", 1) == [None]
    assert source_addresses("http://10.0.0.1:9", 3) == [None]


def _tiny_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))


LADDER = ("ws", "sse", "ws@elysia", "sse@elysia")


def test_a_ladder_over_processes_workers_and_sources_holds_every_connection(tmp_path):
    """400 idle connections per transport, Python's and Elysia's, over 2 harness workers and
    3 server processes (one port, our own Redis): all held, counted at the same instants in
    both workers, no failure; the run records every server process's samples, and scaledoc
    puts Python and Elysia side by side."""
    done = subprocess.run(
        [sys.executable, "-m", "sobranie_bench.cli", "run", "--scenarios", "connections",
         "--transports", ",".join(LADDER), "--no-tls", "--out", str(tmp_path), "--set",
         "connections=400", "--set", "connect_rate=400", "--processes", "3", "--workers", "2",
         "--set", "hold=1.0"],
        capture_output=True, text=True, timeout=48 * UNIT, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "never retrieved" not in done.stderr
    raws = [json.loads(p.read_text()) for p in tmp_path.rglob("*.json") if p.name != "run.json"]
    assert sorted(r["transport"] for r in raws) == sorted(LADDER)
    for raw in raws:
        assert "error" not in raw, raw["error"]
        c = raw["counters"]
        assert (c["connected"], c["held"], c["failures"]) == (400, 400, 0), c
        assert c["held_at_hold_start"] == c["peak_open"] == 400
        servers = [n for n in raw["resources"] if n.startswith("server")]
        assert len(servers) == 3 and raw["processes"] == 3, (raw["transport"], servers)
        assert raw["parts"] == 2
        t = raw["times"]
        assert t["ramp_end"] <= t["hold_start"] < t["hold_end"]
    (run_dir,) = (tmp_path / "runs").iterdir()
    table = scaledoc.render(run_dir, None)  # docs/scale.md's figures come from such a run
    for transport in LADDER:
        assert f"| {transport} | 400 | 3 | 2 | 1 | 400 | 400 | 400 | 0 (-) |" in table
    assert "| ws vs ws@elysia | 400 |" in table and "| sse vs sse@elysia | 400 |" in table


class BlackHole:
    """A TCP listener that accepts and never answers (a server whose accept queue is all it
    has left): every connect to it can only end by its timeout."""

    async def __aenter__(self) -> str:
        self.held: list[asyncio.StreamWriter] = []

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.held.append(writer)

        self.server = await asyncio.start_server(accept, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        for writer in self.held:
            writer.close()
        self.server.close()


@pytest.mark.parametrize("transport", ["ws", "sse"])
async def test_a_server_that_never_answers_ends_the_part_in_its_time_bound(transport):
    """Each connect has connect_timeout for all of it (an SSE stream's answer included: such
    streams hung a 100k ladder's workers forever), and the ramp has its bound: with one
    connect in flight, the first times out and the ones left when the bound passes fail as
    ``deadline``. The part ends and reports every connection."""
    params = {"connections": 4, "connect_rate": 1000, "max_inflight": 1, "hold": 0.1,
              "connect_timeout": 0.6 * UNIT, "min_rate": 4 / (0.4 * UNIT)}
    bound = ramp_seconds(params, UNIT)
    assert bound == pytest.approx(UNIT)  # 4 / min_rate + connect_timeout
    async with BlackHole() as url:
        ctx = PartContext(transport=transport, url=url, params=params, index=0, count=1,
                          seed=1, start_ns=time.monotonic_ns(), warmup=0.0, duration=0.0,
                          secret="s" * 32, timeout=UNIT)
        began = time.monotonic()
        out = await asyncio.wait_for(part(ctx), bound + CLOSE_SECONDS + 2 * UNIT)
        took = time.monotonic() - began
    c = out["counters"]
    assert (c["connected"], c["failures"]) == (0, 4), c
    assert c["failed_timeout"] == 1 and c["failed_deadline"] == 3, c
    assert took >= 0.6 * UNIT


def test_peak_open_is_counted_at_one_instant_over_all_parts():
    """Part A opened 2 (at 1 s and 2 s) and lost both by 2.6 s; part B opened 2 later: each
    part's own peak is 2, but never were more than 2 open at once (not 4)."""
    merged = {"series": {"connected_at": [1.0, 2.0, 3.0, 4.0], "lost_at": [2.5, 2.6]}}
    assert combine(merged) == {"peak_open": 2}


def test_scaledoc_sets_python_beside_elysia_and_the_levels_side_by_side():
    def row(transport, asked, kib, rate):
        return {"transport": transport, "asked": asked, "rss_per_conn_kib": kib,
                "connects_per_s": rate, "keepalive_cpu_pct_per_10k": None}

    rows = [row("ws", 10000, 14.0, 800), row("ws", 100000, 15.0, 700),
            row("ws@elysia", 10000, 6.0, 3200), row("ws@elysia", 100000, 6.0, 3000),
            row("sse", 10000, 14.0, 500)]
    table = "\n".join(scaledoc.comparison(rows))
    assert "| ws vs ws@elysia | 10,000 | 14.0 / 6.0 | 2.33x | 800 / 3,200 | 0.25x | - / - | - |" \
        in table
    assert "| ws vs ws@elysia | 100,000 |" in table and "sse vs" not in table
    levels = "\n".join(scaledoc.memory_by_level(rows))
    assert "| ws | 10,000 -> 100,000 | 14.0 -> 15.0 | +7% |" in levels
    assert "| ws@elysia | 10,000 -> 100,000 | 6.0 -> 6.0 | +0% |" in levels
    assert "| sse |" not in levels  # one level only: nothing to compare
